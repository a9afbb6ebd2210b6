//! All SQL lives here: the only module of Trove that knows SQL.
//!
//! One [`sqlx::AnyPool`] serves SQLite (a file in the data directory, the default) and
//! PostgreSQL (`--database-url postgres://...`) with one set of queries: `$n` placeholders,
//! `ON CONFLICT DO NOTHING` and `RETURNING` work on both. Only the schema differs per backend
//! (`migrations/<backend>/`); values that `Any` cannot carry portably are stored as BIGINT
//! (Unix seconds, flags) or BLOB/BYTEA (hashes, keys, manifests).

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use trove_common::{ChunkId, FileId, Manifest, NodeId, hex};

/// (version, name, SQL) per backend, applied in order, each once.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(1, "fleet", include_str!("../migrations/sqlite/0001_fleet.sql"))];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "fleet", include_str!("../migrations/postgres/0001_fleet.sql"))];

/// Rows (or keys) per multi-row statement: a whole `have` batch at once, with room for two
/// values per row under SQLite's limit of 32766 bound variables.
const ROWS_PER_STATEMENT: usize = trove_common::control::HAVE_BATCH_MAX;
const _: () = assert!(2 * ROWS_PER_STATEMENT + 1 < 32_000);

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    pub backend: Backend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A node as the fleet logic sees it.
#[derive(Clone, Debug)]
pub struct NodeRow {
    pub id: NodeId,
    pub num: i64,
    pub name: Option<String>,
    pub state: String,
    pub state_since: i64,
    pub boot_id: Option<i64>,
    pub have_seq: i64,
    pub needs_inventory: bool,
    pub data_addr: Option<String>,
    pub capacity_bytes: i64,
    pub used_bytes: i64,
    pub disk_free_bytes: i64,
    pub version: Option<String>,
    pub board: Option<String>,
}

/// A chunk as repair sees it.
#[derive(Clone, Debug)]
pub struct ChunkState {
    pub id: i64,
    pub chunk: ChunkId,
    pub holders: Vec<NodeId>,
    /// Some file names it.
    pub referenced: bool,
}

/// Reads what [`Db::chunk_states_sql`] folded; holders no longer enrolled are left out.
fn unfold_chunk_states(folded: &str, node_ids: &HashMap<i64, NodeId>) -> anyhow::Result<Vec<ChunkState>> {
    let parse = |item: &str| -> Option<ChunkState> {
        let mut f = item.split(':');
        let id = f.next()?.parse().ok()?;
        let chunk = ChunkId::from_key_bytes(&hex::decode_vec(f.next()?).ok()?)?;
        let holders = f
            .next()?
            .split(',')
            .filter_map(|n| node_ids.get(&n.parse().ok()?).copied())
            .collect();
        let referenced = f.next()? == "1";
        Some(ChunkState {
            id,
            chunk,
            holders,
            referenced,
        })
    };
    // Every item is written by us; one that does not parse means the schema and this code
    // disagree, which must not pass silently.
    folded
        .split(';')
        .filter(|i| !i.is_empty())
        .map(|i| parse(i).with_context(|| format!("unreadable chunk state {i:?}")))
        .collect()
}

pub struct FileRow {
    pub manifest: Manifest,
    pub name: String,
}

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL {url:?}: use sqlite://PATH or postgres://...");
        };
        let mut opts = AnyPoolOptions::new();
        if backend == Backend::Sqlite {
            // One writer at a time anyway; WAL lets readers go on meanwhile.
            opts = opts.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    // Holdings are keyed by random hashes: inserts touch pages all over the
                    // B-trees, so a cache far larger than SQLite's 2 MB default pays for itself.
                    sqlx::query("PRAGMA cache_size = -65536").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA mmap_size = 268435456").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(8);
        }
        let pool = opts
            .connect(url)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        for &(version, name, sql) in migrations {
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&self.pool)
                .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            // Comments go first: they may contain semicolons.
            let sql = strip_comments(sql);
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(stmt)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("migration {version} {name}: {stmt}"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
                .bind(version)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, name, "applied migration");
        }
        Ok(())
    }

    // ---- meta ----

    pub async fn meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- users and tokens ----

    /// Creates the first admin and its token if there is no user yet; returns the token.
    pub async fn bootstrap_admin(&self, token: &str, now: i64) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            return Ok(false);
        }
        let id: i64 =
            sqlx::query_scalar("INSERT INTO users (name, is_admin, created_at) VALUES ('admin', 1, $1) RETURNING id")
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("INSERT INTO api_tokens (hash, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash(token).to_vec())
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The user a token belongs to: (user id, is admin).
    pub async fn user_of_token(&self, token: &str) -> anyhow::Result<Option<(i64, bool)>> {
        let row = sqlx::query(
            "SELECT u.id, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = $1 AND t.revoked = 0",
        )
        .bind(token_hash(token).to_vec())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1) != 0)))
    }

    // ---- nodes ----

    pub async fn enroll_node(
        &self,
        id: &NodeId,
        secret: &[u8; 32],
        name: Option<&str>,
        now: i64,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, num, secret, name, state, state_since, created_at) \
             VALUES ($1, (SELECT COALESCE(MAX(num), 0) + 1 FROM nodes), $2, $3, 'enrolled', $4, $4)",
        )
        .bind(id.to_string())
        .bind(secret.to_vec())
        .bind(name.map(str::to_owned))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn node_secret(&self, id: &NodeId) -> anyhow::Result<Option<[u8; 32]>> {
        let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT secret FROM nodes WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.and_then(|v| v.try_into().ok()))
    }

    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT id, num, name, state, state_since, boot_id, have_seq, needs_inventory, data_addr, capacity_bytes, \
             used_bytes, disk_free_bytes, version, board FROM nodes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(node_row).collect()
    }

    pub async fn node(&self, id: &NodeId) -> anyhow::Result<Option<NodeRow>> {
        let row = sqlx::query(
            "SELECT id, num, name, state, state_since, boot_id, have_seq, needs_inventory, data_addr, capacity_bytes, \
             used_bytes, disk_free_bytes, version, board FROM nodes WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(node_row).transpose()
    }

    /// Records a state change; a new boot also means the holdings must be re-read.
    pub async fn set_node_state(&self, id: &NodeId, online: bool, boot_id: i64, now: i64) -> anyhow::Result<()> {
        let state = if online { "online" } else { "offline" };
        sqlx::query(
            "UPDATE nodes SET \
               needs_inventory = CASE WHEN boot_id IS NULL OR boot_id <> $3 THEN 1 ELSE needs_inventory END, \
               state_since = CASE WHEN state <> $2 THEN $4 ELSE state_since END, \
               state = $2, boot_id = $3 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(state)
        .bind(boot_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// After any break in our MQTT connection, deltas may have been lost: re-read everyone.
    pub async fn mark_all_needs_inventory(&self) -> anyhow::Result<()> {
        sqlx::query("UPDATE nodes SET needs_inventory = 1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// At controller start nobody is known to be online until it says so again.
    pub async fn mark_all_offline(&self, now: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE nodes SET state = 'offline', state_since = $1 WHERE state = 'online'")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn set_node_info(
        &self,
        id: &NodeId,
        data_addr: &str,
        capacity: u64,
        used: u64,
        free: u64,
        version: &str,
        board: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE nodes SET data_addr = $2, capacity_bytes = $3, used_bytes = $4, disk_free_bytes = $5, version = $6, \
             board = $7 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(data_addr)
        .bind(clamp_i64(capacity))
        .bind(clamp_i64(used))
        .bind(clamp_i64(free))
        .bind(version)
        .bind(board)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Applies a `Have` delta and records its sequence number, in one transaction.
    pub async fn apply_have(
        &self,
        node: &NodeRow,
        seq: i64,
        gap: bool,
        added: &[ChunkId],
        removed: &[ChunkId],
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        add_holdings(&mut tx, self.backend, node.num, added).await?;
        if !removed.is_empty() {
            let ids: Vec<i64> = chunk_ids(&mut tx, self.backend, removed)
                .await?
                .into_iter()
                .flatten()
                .collect();
            delete_holdings(&mut tx, self.backend, node.num, &ids).await?;
            forget_unused_chunks(&mut tx, self.backend, &ids).await?;
        }
        sqlx::query("UPDATE nodes SET have_seq = $2, needs_inventory = CASE WHEN $3 = 1 THEN 1 ELSE needs_inventory END WHERE id = $1")
            .bind(node.id.to_string())
            .bind(seq)
            .bind(gap as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces everything known about a node's holdings with a full inventory.
    pub async fn replace_holdings(&self, id: &NodeId, chunks: &[ChunkId]) -> anyhow::Result<()> {
        let node = id.to_string();
        let mut tx = self.pool.begin().await?;
        let num: i64 = sqlx::query_scalar("SELECT num FROM nodes WHERE id = $1")
            .bind(node.clone())
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM holdings WHERE node = $1")
            .bind(num)
            .execute(&mut *tx)
            .await?;
        add_holdings(&mut tx, self.backend, num, chunks).await?;
        sqlx::query("UPDATE nodes SET needs_inventory = 0 WHERE id = $1")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many chunks each node holds.
    pub async fn chunks_per_node(&self) -> anyhow::Result<HashMap<NodeId, i64>> {
        let rows = sqlx::query("SELECT n.id, COUNT(*) FROM holdings h JOIN nodes n ON n.num = h.node GROUP BY n.id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get::<String, _>(0).parse().ok()?, r.get::<i64, _>(1))))
            .collect())
    }

    /// Holders of just these chunks.
    pub async fn holdings_of_chunks(&self, chunks: &[ChunkId]) -> anyhow::Result<HashMap<ChunkId, Vec<NodeId>>> {
        let mut out: HashMap<ChunkId, Vec<NodeId>> = HashMap::new();
        for batch in chunks.chunks(ROWS_PER_STATEMENT) {
            let prefixes = prefixes(batch);
            let sql = format!(
                "SELECT c.key, n.id {} JOIN holdings h ON h.chunk = c.id JOIN nodes n ON n.num = h.node",
                chunks_by_prefix(self.backend, prefixes.len())
            );
            let mut q = sqlx::query(&sql);
            for p in prefixes {
                q = q.bind(p);
            }
            add_holding_rows(&q.fetch_all(&self.pool).await?, &mut out);
        }
        if out.len() > chunks.len() {
            // Others that share a hash prefix came along.
            let wanted: HashSet<&ChunkId> = chunks.iter().collect();
            out.retain(|c, _| wanted.contains(c));
        }
        Ok(out)
    }

    /// What a repair pass must know of these chunks (those the controller has heard of).
    pub async fn chunk_states(&self, chunks: &[ChunkId]) -> anyhow::Result<Vec<ChunkState>> {
        let node_ids = self.node_ids_by_num().await?;
        let mut out = Vec::with_capacity(chunks.len());
        for batch in chunks.chunks(ROWS_PER_STATEMENT) {
            let prefixes = prefixes(batch);
            let sql = self.chunk_states_sql(&chunks_by_prefix(self.backend, prefixes.len()));
            let mut q = sqlx::query_scalar::<_, Option<String>>(&sql);
            for p in prefixes {
                q = q.bind(p);
            }
            let wanted: HashSet<&ChunkId> = batch.iter().collect();
            let folded = q.fetch_one(&self.pool).await?.unwrap_or_default();
            // Others that share a hash prefix come along: keep what was asked for.
            out.extend(
                unfold_chunk_states(&folded, &node_ids)?
                    .into_iter()
                    .filter(|s| wanted.contains(&s.chunk)),
            );
        }
        Ok(out)
    }

    /// The states of up to `limit` chunks in ID order, from the first ID above `after`: a full
    /// repair pass reads the fleet a page at a time.
    pub async fn chunk_states_page(&self, after: i64, limit: usize) -> anyhow::Result<Vec<ChunkState>> {
        let node_ids = self.node_ids_by_num().await?;
        let page = format!(
            "FROM (SELECT id, key FROM chunks WHERE id > {} ORDER BY id LIMIT {}) AS c",
            self.backend.params(1, 1),
            self.backend.params(2, 1)
        );
        let folded = sqlx::query_scalar::<_, Option<String>>(&self.chunk_states_sql(&page))
            .bind(after)
            .bind(limit as i64)
            .fetch_one(&self.pool)
            .await?
            .unwrap_or_default();
        let mut states = unfold_chunk_states(&folded, &node_ids)?;
        states.sort_unstable_by_key(|s| s.id);
        Ok(states)
    }

    /// One row, one string, for all the chunks of `from` (which names them `c`):
    /// `id:hexkey:holder nums:referenced` joined by `;`. Rows are what costs (each crosses from
    /// SQLite's worker thread to ours on its own): a row per chunk made this three times
    /// slower, and the most expensive statement of a busy ingest.
    fn chunk_states_sql(&self, from: &str) -> String {
        let hex_key = match self.backend {
            Backend::Sqlite => "hex(c.key)",
            Backend::Postgres => "encode(c.key, 'hex')",
        };
        format!(
            "SELECT string_agg(CAST(c.id AS TEXT) || ':' || {hex_key} || ':' || \
               COALESCE((SELECT string_agg(CAST(h.node AS TEXT), ',') FROM holdings h WHERE h.chunk = c.id), '') || ':' || \
               CASE WHEN EXISTS (SELECT 1 FROM file_chunks fc WHERE fc.chunk = c.id) THEN '1' ELSE '0' END, ';') {from}"
        )
    }

    async fn node_ids_by_num(&self) -> anyhow::Result<HashMap<i64, NodeId>> {
        Ok(sqlx::query("SELECT num, id FROM nodes")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .filter_map(|r| Some((r.get::<i64, _>(0), r.get::<String, _>(1).parse().ok()?)))
            .collect())
    }

    // ---- files ----

    /// Registers a file (if new) and a share of it; true if the file was new.
    pub async fn add_share(&self, manifest: &Manifest, user_id: i64, name: &str, now: i64) -> anyhow::Result<bool> {
        let id = manifest.file_id().0.0.to_vec();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO files (id, size, chunk_bytes, manifest, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(id.clone())
        .bind(clamp_i64(manifest.size()))
        .bind(i64::from(manifest.chunk_bytes()))
        .bind(manifest.encode())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            // In file order: that order becomes the chunks' IDs, and appliances announce a
            // file's chunks in about that order.
            let chunks: Vec<ChunkId> = manifest.chunks().collect();
            let ids = ensure_chunk_ids(&mut tx, self.backend, &chunks).await?;
            for (first, batch) in (0..).step_by(ROWS_PER_STATEMENT).zip(ids.chunks(ROWS_PER_STATEMENT)) {
                let sql = format!(
                    "INSERT INTO file_chunks (file_id, idx, chunk) VALUES {}",
                    self.backend.rows(batch.len(), 3)
                );
                let mut q = sqlx::query(&sql);
                for (i, chunk) in batch.iter().enumerate() {
                    q = q.bind(id.clone()).bind((first + i) as i64).bind(*chunk);
                }
                q.execute(&mut *tx).await?;
            }
        }
        sqlx::query("INSERT INTO shares (file_id, user_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(user_id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    pub async fn file(&self, id: &FileId) -> anyhow::Result<Option<FileRow>> {
        let row = sqlx::query(
            "SELECT f.manifest, (SELECT s.name FROM shares s WHERE s.file_id = f.id ORDER BY s.id LIMIT 1) \
             FROM files f WHERE f.id = $1",
        )
        .bind(id.0.0.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let manifest = Manifest::decode(&row.get::<Vec<u8>, _>(0), *id).context("stored manifest is damaged")?;
        let name: Option<String> = row.get(1);
        Ok(Some(FileRow {
            manifest,
            name: name.unwrap_or_default(),
        }))
    }

    /// Removes shares of a file (the user's, or everyone's for `all`), and the file itself once
    /// nobody shares it; its chunks then become orphans that repair frees. Returns (shares
    /// removed, file removed).
    pub async fn unshare(&self, id: &FileId, user_id: i64, all: bool) -> anyhow::Result<(u64, bool)> {
        let key = id.0.0.to_vec();
        let mut tx = self.pool.begin().await?;
        let removed = if all {
            sqlx::query("DELETE FROM shares WHERE file_id = $1")
                .bind(key.clone())
                .execute(&mut *tx)
                .await?
        } else {
            sqlx::query("DELETE FROM shares WHERE file_id = $1 AND user_id = $2")
                .bind(key.clone())
                .bind(user_id)
                .execute(&mut *tx)
                .await?
        }
        .rows_affected();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shares WHERE file_id = $1")
            .bind(key.clone())
            .fetch_one(&mut *tx)
            .await?;
        let mut file_removed = false;
        if left == 0 {
            let chunks: Vec<i64> = sqlx::query_scalar("DELETE FROM file_chunks WHERE file_id = $1 RETURNING chunk")
                .bind(key.clone())
                .fetch_all(&mut *tx)
                .await?;
            forget_unused_chunks(&mut tx, self.backend, &chunks).await?;
            file_removed = sqlx::query("DELETE FROM files WHERE id = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        }
        tx.commit().await?;
        Ok((removed, file_removed))
    }

    pub async fn count(&self, table: Counted) -> anyhow::Result<i64> {
        let sql = match table {
            Counted::Files => "SELECT COUNT(*) FROM files",
            Counted::Holdings => "SELECT COUNT(*) FROM holdings",
            Counted::Chunks => "SELECT COUNT(DISTINCT chunk) FROM file_chunks",
        };
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Collects `(chunk key, node id)` rows; rows that do not parse (cannot happen for rows this
/// module wrote) are skipped.
fn add_holding_rows(rows: &[AnyRow], out: &mut HashMap<ChunkId, Vec<NodeId>>) {
    for r in rows {
        let (Some(c), Ok(n)) = (
            ChunkId::from_key_bytes(&r.get::<Vec<u8>, _>(0)),
            r.get::<String, _>(1).parse(),
        ) else {
            continue;
        };
        out.entry(c).or_default().push(n);
    }
}

impl Backend {
    /// `n` comma-separated placeholders, numbered from `first` (PostgreSQL: `$first, ...`).
    /// SQLite gets anonymous `?`, bound in order: sqlx asks SQLite the name of every parameter,
    /// and SQLite finds a named one by a linear scan, so with `$n` a 2048-row statement costs
    /// O(n²) in binding alone (it was a fifth of ingest time).
    fn params(self, first: usize, n: usize) -> String {
        let one = |i| match self {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${i}"),
        };
        (first..first + n).map(one).collect::<Vec<_>>().join(",")
    }

    /// `(..),(..)` for `rows` rows of `width` placeholders each, numbered from 1.
    fn rows(self, rows: usize, width: usize) -> String {
        self.rows_from(1, rows, width)
    }

    /// `(..),(..)` for `rows` rows of `width` placeholders each, numbered from `first`.
    fn rows_from(self, first: usize, rows: usize, width: usize) -> String {
        (0..rows)
            .map(|r| format!("({})", self.params(first + r * width, width)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The first 8 bytes of a chunk's hash, as stored in `chunks.h`.
fn hash_prefix(c: &ChunkId) -> i64 {
    let h = c.hash().0;
    i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// `FROM (VALUES (..),..) AS v JOIN chunks c ON c.h = v.column1`: the chunks whose hash
/// prefixes are bound next, `n` of them (see [`hash_prefix`]). Rows may include chunks that
/// only share a prefix: callers select `c.key` and keep exact matches.
fn chunks_by_prefix(backend: Backend, n: usize) -> String {
    format!(
        "FROM (VALUES {}) AS v JOIN chunks c ON c.h = v.column1",
        backend.rows(n, 1)
    )
}

/// The distinct hash prefixes of `chunks`, sorted (a repeat would repeat rows; order walks
/// the index in order).
fn prefixes(chunks: &[ChunkId]) -> Vec<i64> {
    let mut p: Vec<i64> = chunks.iter().map(hash_prefix).collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// The IDs of these chunks, in order; `None` for chunks never heard of.
async fn chunk_ids(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    chunks: &[ChunkId],
) -> anyhow::Result<Vec<Option<i64>>> {
    let mut known: HashMap<Vec<u8>, i64> = HashMap::with_capacity(chunks.len());
    for batch in chunks.chunks(ROWS_PER_STATEMENT) {
        let prefixes = prefixes(batch);
        let sql = format!("SELECT c.key, c.id {}", chunks_by_prefix(backend, prefixes.len()));
        let mut q = sqlx::query(&sql);
        for p in prefixes {
            q = q.bind(p);
        }
        for r in q.fetch_all(&mut *conn).await? {
            known.insert(r.get(0), r.get(1));
        }
    }
    Ok(chunks.iter().map(|c| known.get(&c.key_bytes()[..]).copied()).collect())
}

/// The IDs of these chunks, in order, giving new ones the next IDs in the order given.
async fn ensure_chunk_ids(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    chunks: &[ChunkId],
) -> anyhow::Result<Vec<i64>> {
    let mut ids = chunk_ids(conn, backend, chunks).await?;
    let new: Vec<&ChunkId> = chunks
        .iter()
        .zip(&ids)
        .filter(|(_, id)| id.is_none())
        .map(|(c, _)| c)
        .collect();
    if new.is_empty() {
        return Ok(ids.into_iter().flatten().collect());
    }
    for batch in new.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO chunks (h, key) VALUES {} ON CONFLICT DO NOTHING",
            backend.rows(batch.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for c in batch {
            q = q.bind(hash_prefix(c)).bind(c.key_bytes().to_vec());
        }
        q.execute(&mut *conn).await?;
    }
    let again = chunk_ids(conn, backend, &new.iter().map(|c| **c).collect::<Vec<_>>()).await?;
    let mut again = again.into_iter();
    for id in ids.iter_mut().filter(|id| id.is_none()) {
        *id = again.next().flatten();
    }
    ids.into_iter()
        .map(|id| id.context("a chunk just inserted has no ID"))
        .collect()
}

/// Records that `node` holds `chunks`: the hot path of announce ingest. When every chunk is
/// known (the usual case: a file names it), this is two statements that send back one row
/// between them; rows cross from SQLite's worker thread one message each, so returning an ID
/// per chunk used to cost more than the lookups themselves.
async fn add_holdings(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    node: i64,
    chunks: &[ChunkId],
) -> anyhow::Result<()> {
    for batch in chunks.chunks(ROWS_PER_STATEMENT) {
        let pairs = |first| {
            format!(
                "(VALUES {}) AS v JOIN chunks c ON c.h = v.column1 AND c.key = v.column2",
                backend.rows_from(first, batch.len(), 2)
            )
        };
        let count = format!("SELECT COUNT(*) FROM {}", pairs(1));
        let known: i64 = bind_prefix_key_pairs(sqlx::query(&count), batch)
            .fetch_one(&mut *conn)
            .await?
            .get(0);
        if known < batch.len() as i64 {
            // Chunks no file names (yet): they get IDs too, so the holding is on record.
            ensure_chunk_ids(conn, backend, batch).await?;
        }
        // SQLite needs the WHERE to tell an upsert from a join constraint after a SELECT.
        let insert = format!(
            "INSERT INTO holdings (chunk, node) SELECT c.id, CAST({} AS BIGINT) FROM {} WHERE true \
             ON CONFLICT DO NOTHING",
            backend.params(1, 1),
            pairs(2)
        );
        bind_prefix_key_pairs(sqlx::query(&insert).bind(node), batch)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds (hash prefix, key) for each chunk.
fn bind_prefix_key_pairs<'q>(mut q: AnyQuery<'q>, chunks: &[ChunkId]) -> AnyQuery<'q> {
    for c in chunks {
        q = q.bind(hash_prefix(c)).bind(c.key_bytes().to_vec());
    }
    q
}

async fn delete_holdings(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    node: i64,
    ids: &[i64],
) -> anyhow::Result<()> {
    for batch in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM holdings WHERE node = {} AND chunk IN ({})",
            backend.params(1, 1),
            backend.params(2, batch.len())
        );
        let mut q = sqlx::query(&sql).bind(node);
        for id in batch {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Drops the ID rows of these chunks where no file names them and no node holds them.
async fn forget_unused_chunks(conn: &mut sqlx::AnyConnection, backend: Backend, ids: &[i64]) -> anyhow::Result<()> {
    for batch in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM chunks WHERE id IN ({}) \
             AND NOT EXISTS (SELECT 1 FROM file_chunks fc WHERE fc.chunk = chunks.id) \
             AND NOT EXISTS (SELECT 1 FROM holdings h WHERE h.chunk = chunks.id)",
            backend.params(1, batch.len())
        );
        let mut q = sqlx::query(&sql);
        for id in batch {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
pub enum Counted {
    Files,
    Holdings,
    Chunks,
}

fn node_row(r: &AnyRow) -> anyhow::Result<NodeRow> {
    let id: String = r.get(0);
    Ok(NodeRow {
        id: id.parse().with_context(|| format!("bad node id {id:?} in database"))?,
        num: r.get(1),
        name: r.get(2),
        state: r.get(3),
        state_since: r.get(4),
        boot_id: r.get(5),
        have_seq: r.get(6),
        needs_inventory: r.get::<i64, _>(7) != 0,
        data_addr: r.get(8),
        capacity_bytes: r.get(9),
        used_bytes: r.get(10),
        disk_free_bytes: r.get(11),
        version: r.get(12),
        board: r.get(13),
    })
}

pub fn token_hash(token: &str) -> [u8; 32] {
    blake3::derive_key("trove/v1 api token", token.as_bytes())
}

fn clamp_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn strip_comments(stmt: &str) -> String {
    stmt.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
