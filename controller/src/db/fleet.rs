//! Nodes, chunk IDs, holdings, and what repair reads of them.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use sqlx::Row;
use sqlx::any::AnyRow;
use trove_common::{ChunkId, NodeId, hex};

use super::{Backend, Db, ROWS_PER_STATEMENT, clamp_i64};

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

/// One `Have` message, checked, for [`Db::apply_haves`].
pub struct HaveDelta<'a> {
    pub node: &'a NodeId,
    /// `nodes.num` of `node`.
    pub num: i64,
    pub seq: i64,
    /// The sequence broke (or a new boot): the node's inventory must be pulled.
    pub gap: bool,
    pub added: &'a [ChunkId],
    pub removed: &'a [ChunkId],
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

impl Db {
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

    /// Every enrolled node with its enrollment secret (for an external broker's password file).
    pub async fn node_secrets(&self) -> anyhow::Result<std::collections::BTreeMap<NodeId, [u8; 32]>> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT id, secret FROM nodes")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(id, secret)| {
                let node: NodeId = id
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad node ID {id:?} in the database"))?;
                let secret: [u8; 32] = secret
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("node {id}: the secret is not 32 bytes"))?;
                Ok((node, secret))
            })
            .collect()
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

    /// Applies `Have` deltas, in the order given, and records each node's last sequence number
    /// (and any gap), all in one transaction: a busy announce path commits once per group of
    /// messages instead of once per message.
    pub async fn apply_haves(&self, deltas: &[HaveDelta<'_>]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let mut last: Vec<(NodeId, i64, bool)> = Vec::new();
        for d in deltas {
            add_holdings(&mut tx, self.backend, d.num, d.added).await?;
            if !d.removed.is_empty() {
                let ids: Vec<i64> = chunk_ids(&mut tx, self.backend, d.removed)
                    .await?
                    .into_iter()
                    .flatten()
                    .collect();
                delete_holdings(&mut tx, self.backend, d.num, &ids).await?;
                forget_unused_chunks(&mut tx, self.backend, &ids).await?;
            }
            match last.iter_mut().find(|(id, _, _)| id == d.node) {
                Some(l) => *l = (l.0, d.seq, l.2 || d.gap),
                None => last.push((*d.node, d.seq, d.gap)),
            }
        }
        for (id, seq, gap) in last {
            sqlx::query(
                "UPDATE nodes SET have_seq = $2, needs_inventory = CASE WHEN $3 = 1 THEN 1 ELSE needs_inventory END \
                 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(seq)
            .bind(gap as i64)
            .execute(&mut *tx)
            .await?;
        }
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

/// The first 8 bytes of a chunk's hash, as stored in `chunks.h`.
fn hash_prefix(c: &ChunkId) -> i64 {
    let h = c.hash().0;
    i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// `FROM (VALUES (..),..) AS v JOIN chunks c ON c.h = v.column1`: the chunks whose hash
/// prefixes are bound next, `n` of them (see [`hash_prefix`]). Rows may include chunks that
/// only share a prefix: callers select `c.key` and keep exact matches.
pub(super) fn chunks_by_prefix(backend: Backend, n: usize) -> String {
    format!(
        "FROM (VALUES {}) AS v {}",
        backend.rows(n, 1),
        join_chunks(backend, "c.h = v.column1")
    )
}

/// Joins `chunks c` to the VALUES `v` on `on`, as one index probe per VALUES row. PostgreSQL
/// plans a hash join over a sequential scan of all of `chunks` (no statistics on a fresh table,
/// and little better with them): per batch that grows with the fleet. A LATERAL subquery that
/// `OFFSET 0` keeps from being flattened leaves it no choice but the index (about 10× faster
/// at 66,000 chunks and flat from there).
fn join_chunks(backend: Backend, on: &str) -> String {
    match backend {
        Backend::Sqlite => format!("JOIN chunks c ON {on}"),
        Backend::Postgres => format!("CROSS JOIN LATERAL (SELECT * FROM chunks c WHERE {on} OFFSET 0) AS c"),
    }
}

/// The distinct hash prefixes of `chunks`, sorted (a repeat would repeat rows; order walks
/// the index in order).
pub(super) fn prefixes(chunks: &[ChunkId]) -> Vec<i64> {
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
pub(super) async fn ensure_chunk_ids(
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

/// Records that `node` holds `chunks`: the hot path of announce ingest. Usually every chunk is
/// known (a file names it) and new to this node, and then this is one statement that sends
/// back no row: rows cross from SQLite's worker thread one message each, so returning an ID
/// per chunk used to cost more than the lookups themselves. Only when fewer rows went in than
/// were given does a count tell unknown chunks (which get IDs, then the insert is repeated)
/// from holdings already on record.
async fn add_holdings(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    node: i64,
    chunks: &[ChunkId],
) -> anyhow::Result<()> {
    for batch in chunks.chunks(ROWS_PER_STATEMENT) {
        let pairs = |first| {
            // Left alone, SQLite probes the UNIQUE index on the 45-byte key; `chunks_h` is a
            // third smaller and faster per batch, the key then compared on the row (which file
            // order keeps in cache). INDEXED BY alone let SQLite 3.46 scan `chunks` against
            // the VALUES instead; CROSS JOIN keeps the VALUES outside.
            let join = match backend {
                Backend::Sqlite => {
                    "CROSS JOIN chunks c INDEXED BY chunks_h ON c.h = v.column1 AND c.key = v.column2".into()
                }
                Backend::Postgres => join_chunks(backend, "c.h = v.column1 AND c.key = v.column2"),
            };
            format!("(VALUES {}) AS v {join}", backend.rows_from(first, batch.len(), 2))
        };
        // SQLite needs the WHERE to tell an upsert from a join constraint after a SELECT.
        let insert = format!(
            "INSERT INTO holdings (chunk, node) SELECT c.id, CAST({} AS BIGINT) FROM {} WHERE true \
             ON CONFLICT DO NOTHING",
            backend.params(1, 1),
            pairs(2)
        );
        let inserted = bind_prefix_key_pairs(sqlx::query(&insert).bind(node), batch)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if inserted >= batch.len() as u64 {
            continue;
        }
        let count = format!("SELECT COUNT(*) FROM {}", pairs(1));
        let known: i64 = bind_prefix_key_pairs(sqlx::query(&count), batch)
            .fetch_one(&mut *conn)
            .await?
            .get(0);
        if known < batch.len() as i64 {
            // Chunks no file names (yet): they get IDs too, so the holding is on record.
            ensure_chunk_ids(conn, backend, batch).await?;
            bind_prefix_key_pairs(sqlx::query(&insert).bind(node), batch)
                .execute(&mut *conn)
                .await?;
        }
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
pub(super) async fn forget_unused_chunks(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    ids: &[i64],
) -> anyhow::Result<()> {
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
