//! All SQL lives here: the only module of Trove that knows SQL.
//!
//! One [`sqlx::AnyPool`] serves SQLite (a file in the data directory, the default) and
//! PostgreSQL (`--database-url postgres://...`) with one set of queries: `$n` placeholders
//! (anonymous `?` on SQLite's hot paths, see [`Backend::params`]), `ON CONFLICT DO NOTHING`
//! and `RETURNING` work on both. Only the schema differs per backend (`migrations/<backend>/`);
//! values that `Any` cannot carry portably are stored as BIGINT (Unix seconds, flags) or
//! BLOB/BYTEA (hashes, keys, manifests).
//!
//! - `fleet.rs`: nodes, chunk IDs, holdings, and what repair reads;
//! - `files.rs`: files and shares;
//! - `people.rs`: users and API tokens.

mod files;
mod fleet;
mod people;

pub use files::{FileFacts, FileRow, Ranked, SearchQuery, ShareMeta};
pub use fleet::{ChunkState, HaveDelta, NodeRow};
pub use people::TokenOwner;

use anyhow::Context;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// (version, name, SQL) per backend, applied in order, each once.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "fleet", include_str!("../../migrations/sqlite/0001_fleet.sql")),
    (2, "people", include_str!("../../migrations/sqlite/0002_people.sql")),
    (
        3,
        "search_rank",
        include_str!("../../migrations/sqlite/0003_search_rank.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "fleet", include_str!("../../migrations/postgres/0001_fleet.sql")),
    (2, "people", include_str!("../../migrations/postgres/0002_people.sql")),
    (
        3,
        "search_rank",
        include_str!("../../migrations/postgres/0003_search_rank.sql"),
    ),
];

/// Rows (or keys) per multi-row statement: a whole `have` batch at once, with room for two
/// values per row under SQLite's limit of 32766 bound variables.
const ROWS_PER_STATEMENT: usize = trove_common::control::HAVE_BATCH_MAX;
const _: () = assert!(2 * ROWS_PER_STATEMENT + 1 < 32_000);

/// SQLite's memory map per connection: its compile-time ceiling (just under 2 GiB) where
/// address space is plenty, a modest one on 32-bit controllers.
#[cfg(target_pointer_width = "64")]
const MMAP_BYTES: u64 = 0x7fff_0000;
#[cfg(not(target_pointer_width = "64"))]
const MMAP_BYTES: u64 = 256 << 20;

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
                    // Reads through the map skip a pread and a copy per page missing from
                    // the cache (12% of search time at 1M files with a 256 MiB map over a
                    // 700 MB database). The map is address space, not memory.
                    sqlx::query(&format!("PRAGMA mmap_size = {MMAP_BYTES}"))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    // Fresh tables have no statistics, so their row estimates are wild and JIT
                    // compilation kicks in: 225 ms to compile a 25 ms repair read.
                    sqlx::query("SET jit = off").execute(&mut *conn).await?;
                    Ok(())
                })
            });
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
            for stmt in statements(&sql) {
                sqlx::query(&stmt)
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

#[derive(Clone, Copy)]
pub enum Counted {
    Files,
    Holdings,
    Chunks,
}

fn clamp_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Splits a migration into statements at `;`, except inside a SQLite trigger's `BEGIN ... END`
/// and inside a PostgreSQL function's `$$ ... $$` body.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for piece in sql.split(';') {
        current.push_str(piece);
        let upper = current.to_ascii_uppercase();
        let in_trigger =
            upper.contains("CREATE TRIGGER") && upper.contains("BEGIN") && !upper.trim_end().ends_with("END");
        let in_body = current.matches("$$").count() % 2 == 1;
        if in_trigger || in_body {
            current.push(';');
            continue;
        }
        let stmt = current.trim();
        if !stmt.is_empty() {
            out.push(stmt.to_owned());
        }
        current.clear();
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_bodies_stay_whole() {
        let sql = "CREATE TABLE a (x INT);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN\n  INSERT INTO b VALUES (1);\n  \
                   INSERT INTO b VALUES (2);\nEND;\nCREATE INDEX i ON a(x);";
        let got = statements(sql);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[1].starts_with("CREATE TRIGGER") && got[1].ends_with("END"));
        assert_eq!(got[1].matches(';').count(), 2);
    }

    #[test]
    fn function_bodies_stay_whole_and_postgres_triggers_end_at_their_semicolon() {
        let sql = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  UPDATE a SET x = 1;\n  \
                   RETURN NULL;\nEND\n$$;\nCREATE TRIGGER t AFTER UPDATE ON a FOR EACH ROW EXECUTE FUNCTION f();\n\
                   CREATE INDEX i ON a(x);";
        let got = statements(sql);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("CREATE FUNCTION") && got[0].ends_with("$$"));
        assert_eq!(got[0].matches(';').count(), 2);
        assert!(got[1].starts_with("CREATE TRIGGER") && got[1].ends_with("f()"));
    }

    #[test]
    fn every_migration_splits_into_whole_statements() {
        for (_, name, sql) in SQLITE_MIGRATIONS.iter().chain(POSTGRES_MIGRATIONS) {
            for stmt in statements(&strip_comments(sql)) {
                assert_eq!(stmt.matches("$$").count() % 2, 0, "{name}: {stmt}");
                let upper = stmt.to_ascii_uppercase();
                if upper.starts_with("CREATE TRIGGER") && upper.contains("BEGIN") {
                    assert!(upper.ends_with("END"), "{name}: {stmt}");
                }
            }
        }
    }
}
