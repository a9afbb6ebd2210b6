//! Files and shares: what people share and say of it, who may see it, availability, and
//! history.
//!
//! Visibility is one rule, applied in SQL everywhere a file or share is read: a share is
//! visible to its sharer, and to everyone when it is not private; a file is visible when one
//! of its shares is.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::Row;
use trove_common::api::{MyEvent, MyShare, ShareView};
use trove_common::{ChunkId, FileId, Manifest};

use super::fleet::{ensure_chunk_ids, forget_unused_chunks};
use super::{Backend, Db, ROWS_PER_STATEMENT, clamp_i64};

pub struct FileRow {
    pub manifest: Manifest,
    pub name: String,
}

/// What a share says, already checked and normalised by the API.
pub struct ShareMeta {
    pub name: String,
    pub title: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub description: String,
    pub private: bool,
    /// Title, description and tags as search words (see `text::search_text`).
    pub search_text: String,
}

/// The SQL condition "share `s` is visible to the user bound at `$n`".
fn visible(param: &str) -> String {
    format!("(s.private = 0 OR s.user_id = {param})")
}

/// A file as search and recommendations show it, before ranking.
#[derive(Clone, Debug)]
pub struct FileFacts {
    pub file_id: FileId,
    pub size: u64,
    pub availability: u32,
    /// Visible shares, the viewer's first, then oldest first.
    pub shares: Vec<ShareView>,
}

/// What a search asks for (words already made safe by `text`).
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    pub words: Vec<String>,
    pub kind: Option<String>,
    pub tags: Vec<String>,
    pub owner: Option<String>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    pub since: Option<i64>,
    pub offset: u64,
    pub limit: u64,
}

/// Shares a search ranks: the most relevant matches (for a listing without words, the best
/// ranked ones, exactly). Ranking by availability is exact among them; beyond them a query is
/// too broad to page through anyway, and bounding them keeps a common word from sorting half
/// the catalogue.
pub const SEARCH_CANDIDATES: u32 = 2000;

/// Text matches SQLite ranks per query: the newest this many shares (by share ID) that match
/// every word. A query matching fewer is ranked over all its matches; one matching more (a
/// common word) only over its newest, before visibility and filters apply. bm25 costs about
/// a microsecond a match (it reads each document's length), so ranking all 58,000 matches of
/// the commonest word of the 1M-file benchmark took 60 ms. FTS5 yields matches newest first
/// without sorting, so a query costs its window plus bm25's count of each word's matches
/// (its IDF: a plain walk of the word's list, about 0.07 µs a match).
pub const FTS_WINDOW: u32 = SEARCH_CANDIDATES;

/// The order of search results (over `r` and `page` in [`Db::search`]): files nobody can
/// download now last, then by score, newest, ID.
const RANK_ORDER: &str = "CASE WHEN b > 0 THEN 0 ELSE 1 END, score DESC, newest DESC, id";

/// One ranked result: the file, its relevance in (0, 1], and its score.
pub struct Ranked {
    pub file_id: FileId,
    pub relevance: f64,
    pub score: f64,
    /// `files.availability` as the ranking saw it: read in the ranking's statement (for the
    /// page's rows only, after the limit), so a hit's availability always agrees with its
    /// score and place, whatever the availability loop wrote since.
    pub availability: u32,
}

/// Live holders of a file's scarcest chunk; for a file of no chunks, the online node count.
const AVAILABILITY_OF_FILES: &str = "COALESCE(\
    (SELECT MIN((SELECT COUNT(*) FROM holdings h JOIN nodes n ON n.num = h.node \
                 WHERE h.chunk = fc.chunk AND n.state = 'online')) \
     FROM file_chunks fc WHERE fc.file_id = files.id), \
    (SELECT COUNT(*) FROM nodes WHERE state = 'online'))";

/// An UPDATE that recomputes the availability of the files matching `condition` (on `files`)
/// and writes only the rows whose value changes: an unchanged row rewritten still dirties its
/// page, and each changed bucket rewrites the file's shares and tags through the triggers of
/// migration 0003, so writes follow what changed, not what was looked at.
fn set_availability_where(condition: &str) -> String {
    format!(
        "UPDATE files SET availability = n.a FROM \
           (SELECT id, {AVAILABILITY_OF_FILES} AS a FROM files WHERE {condition}) AS n \
         WHERE files.id = n.id AND files.availability <> n.a"
    )
}

impl Db {
    // ---- files ----

    /// Registers a file (if new) and a share of it; true if the file was new.
    pub async fn add_share(
        &self,
        manifest: &Manifest,
        user_id: i64,
        meta: &ShareMeta,
        now: i64,
    ) -> anyhow::Result<bool> {
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
        let share_id: i64 = sqlx::query_scalar(
            "INSERT INTO shares (file_id, user_id, name, created_at, title, kind, description, tags, private, search_text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(id)
        .bind(user_id)
        .bind(meta.name.as_str())
        .bind(now)
        .bind(meta.title.as_str())
        .bind(meta.kind.as_str())
        .bind(meta.description.as_str())
        .bind(meta.tags.join(" "))
        .bind(meta.private as i64)
        .bind(meta.search_text.as_str())
        .fetch_one(&mut *tx)
        .await?;
        for tag in &meta.tags {
            sqlx::query("INSERT INTO share_tags (tag, share_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(tag.as_str())
                .bind(share_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// A file the user may see (`None` for one that does not exist or is private to others:
    /// the two must look the same from outside).
    pub async fn visible_file(&self, id: &FileId, user_id: i64) -> anyhow::Result<Option<FileRow>> {
        let sql = format!(
            "SELECT f.manifest, (SELECT s.name FROM shares s WHERE s.file_id = f.id AND {} \
               ORDER BY CASE WHEN s.user_id = $2 THEN 0 ELSE 1 END, s.id LIMIT 1) \
             FROM files f WHERE f.id = $1 AND EXISTS (SELECT 1 FROM shares s WHERE s.file_id = f.id AND {})",
            visible("$2"),
            visible("$2")
        );
        let row = sqlx::query(&sql)
            .bind(id.0.0.to_vec())
            .bind(user_id)
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

    /// Facts about these files as `viewer` may see them; files with no visible share are left
    /// out. In the order given.
    pub async fn file_facts(&self, ids: &[FileId], viewer: i64) -> anyhow::Result<Vec<FileFacts>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut files: HashMap<FileId, FileFacts> = HashMap::new();
        for batch in ids.chunks(500) {
            let list = self.backend.params(2, batch.len());
            let sql = format!(
                "SELECT f.id, f.size, f.availability, s.title, s.kind, s.tags, s.description, s.private, s.created_at, \
                   u.name, s.user_id \
                 FROM files f JOIN shares s ON s.file_id = f.id JOIN users u ON u.id = s.user_id \
                 WHERE {} AND f.id IN ({list}) \
                 ORDER BY CASE WHEN s.user_id = {} THEN 0 ELSE 1 END, s.id",
                visible(&self.backend.params(1, 1)),
                self.backend.params(batch.len() + 2, 1)
            );
            let mut q = sqlx::query(&sql).bind(viewer);
            for id in batch {
                q = q.bind(id.0.0.to_vec());
            }
            q = q.bind(viewer);
            for r in q.fetch_all(&self.pool).await? {
                let Some(file_id) = file_id_at(&r, 0) else {
                    continue;
                };
                let facts = files.entry(file_id).or_insert_with(|| FileFacts {
                    file_id,
                    size: r.get::<i64, _>(1).max(0) as u64,
                    availability: r.get::<i64, _>(2).clamp(0, i64::from(u32::MAX)) as u32,
                    shares: Vec::new(),
                });
                let tags: String = r.get(5);
                facts.shares.push(ShareView {
                    owner: r.get(9),
                    title: r.get(3),
                    kind: r.get(4),
                    tags: tags.split_whitespace().map(str::to_owned).collect(),
                    description: r.get(6),
                    private: r.get::<i64, _>(7) != 0,
                    created_at: r.get(8),
                });
            }
        }
        Ok(ids.iter().filter_map(|id| files.remove(id)).collect())
    }

    /// Ranks the files matching `q` that `viewer` may see; returns the page asked for and the
    /// number of matches in all.
    ///
    /// Ranking (also in ARCHITECTURE.md): a file's relevance is the best text-match score of
    /// its visible shares (FTS5's bm25, PostgreSQL's ts_rank) divided by the best of all
    /// matches, so it lies in (0, 1] (1 for every file without a text query). Its score is
    /// `relevance × (0.5 + 0.5 × min(availability, 3) / 3)`: a file on three live appliances
    /// keeps its whole relevance, one on a single appliance two thirds of it. Files with
    /// availability 0 cannot be downloaded now: they sink below every available file. Ties go
    /// to the newest share, then the file ID. Only the [`SEARCH_CANDIDATES`] best matching
    /// shares are ranked, and `total` counts at most that many files.
    ///
    /// Ranking reads `shares.rank_bucket` (`min(availability, 3)`, copied by triggers in the
    /// statement that changes `files.availability`), never `files`, unless sizes are asked for.
    /// Without words, the candidates are exactly the best ones: every relevance is 1, so the
    /// ranking is (bucket, newest) and an index in that order yields them. With words on
    /// SQLite, bm25 is computed for the [`FTS_WINDOW`] newest matches only (see there).
    pub async fn search(&self, q: &SearchQuery, viewer: i64) -> anyhow::Result<(Vec<Ranked>, u64)> {
        // Placeholders are numbered by hand in both dialects: SQLite here uses `?NNN`, which
        // binds by number like PostgreSQL's `$NNN` (statements are small, so the name lookup
        // does not matter).
        let mut args: Vec<Arg> = Vec::new();
        let mut p = |a: Arg| {
            args.push(a);
            match self.backend {
                Backend::Sqlite => format!("?{}", args.len()),
                Backend::Postgres => format!("${}", args.len()),
            }
        };
        let viewer_p = p(Arg::Int(viewer));
        let mut ctes = String::new();
        let mut tags = q.tags.iter();
        // The candidate shares: (file_id, created_at, b = rank bucket, rel), and their order.
        let (matched, order) = if q.words.is_empty() {
            // A listing: walk a (bucket DESC, created_at DESC) index, through the first tag's
            // rows when there is a tag (the narrowest list at hand), else shares' own (the
            // kind or owner one when asked for: the planner picks it from the equality).
            match tags.next() {
                Some(tag) => (
                    format!(
                        "SELECT s.file_id, s.created_at, s.rank_bucket AS b, CAST(1.0 AS DOUBLE PRECISION) AS rel \
                         FROM share_tags t JOIN shares s ON s.id = t.share_id WHERE t.tag = {} AND {}",
                        p(Arg::Text(tag.clone())),
                        visible(&viewer_p)
                    ),
                    "t.rank_bucket DESC, t.created_at DESC, s.file_id",
                ),
                None => (
                    format!(
                        "SELECT s.file_id, s.created_at, s.rank_bucket AS b, CAST(1.0 AS DOUBLE PRECISION) AS rel \
                         FROM shares s WHERE {}",
                        visible(&viewer_p)
                    ),
                    "s.rank_bucket DESC, s.created_at DESC, s.file_id",
                ),
            }
        } else {
            match self.backend {
                Backend::Sqlite => {
                    let m = p(Arg::Text(crate::text::fts5_query(&q.words)));
                    // FTS5's bm25 only exists in a query that scans the index itself:
                    // materialise that scan before joining and grouping. Newest first is
                    // FTS5's own order (no bm25 to sort by), so the window costs its size.
                    ctes = format!(
                        "fts AS MATERIALIZED (SELECT rowid AS id, CAST(-bm25(share_search) AS DOUBLE PRECISION) AS rel \
                         FROM share_search WHERE share_search MATCH {m} ORDER BY rowid DESC LIMIT {FTS_WINDOW}), "
                    );
                    (
                        format!(
                            "SELECT s.file_id, s.created_at, s.rank_bucket AS b, fts.rel FROM fts JOIN shares s ON s.id = fts.id \
                             WHERE {}",
                            visible(&viewer_p)
                        ),
                        "rel DESC, s.id DESC",
                    )
                }
                Backend::Postgres => {
                    let m = p(Arg::Text(crate::text::tsquery(&q.words)));
                    (
                        format!(
                            "SELECT s.file_id, s.created_at, s.rank_bucket AS b, \
                               CAST(ts_rank(s.search_tsv, to_tsquery('simple', {m})) AS DOUBLE PRECISION) AS rel \
                             FROM shares s WHERE s.search_tsv @@ to_tsquery('simple', {m}) AND {}",
                            visible(&viewer_p)
                        ),
                        "rel DESC, s.id DESC",
                    )
                }
            }
        };
        let mut filters = String::new();
        if let Some(kind) = &q.kind {
            filters += &format!(" AND s.kind = {}", p(Arg::Text(kind.clone())));
        }
        // A probe of share_tags' key per candidate: as `s.id IN (SELECT ...)`, SQLite built the
        // tag's whole list first (137,000 rows for the commonest tag at 1M files).
        for tag in tags {
            filters += &format!(
                " AND EXISTS (SELECT 1 FROM share_tags st WHERE st.tag = {} AND st.share_id = s.id)",
                p(Arg::Text(tag.clone()))
            );
        }
        if let Some(owner) = &q.owner {
            filters += &format!(
                " AND s.user_id = (SELECT id FROM users WHERE name = {})",
                p(Arg::Text(owner.clone()))
            );
        }
        if let Some(since) = q.since {
            filters += &format!(" AND s.created_at >= {}", p(Arg::Int(since)));
        }
        // Sizes are the files': read them only when asked, before the cut, so the candidates
        // are the best of the files that fit.
        if let Some(min) = q.min_size {
            filters += &format!(
                " AND (SELECT f.size FROM files f WHERE f.id = s.file_id) >= {}",
                p(Arg::Int(clamp_i64(min)))
            );
        }
        if let Some(max) = q.max_size {
            filters += &format!(
                " AND (SELECT f.size FROM files f WHERE f.id = s.file_id) <= {}",
                p(Arg::Int(clamp_i64(max)))
            );
        }
        let limit = p(Arg::Int(clamp_i64(q.limit)));
        let offset = p(Arg::Int(clamp_i64(q.offset)));
        let sql = format!(
            "WITH {ctes}m AS ({matched}{filters} ORDER BY {order} LIMIT {SEARCH_CANDIDATES}), \
             g AS (SELECT file_id, MAX(rel) AS rel, MAX(created_at) AS newest, MAX(b) AS b FROM m GROUP BY file_id), \
             r AS (SELECT file_id AS id, b, newest, COALESCE(rel / NULLIF(MAX(rel) OVER (), 0), 1.0) AS relevance FROM g), \
             page AS (SELECT id, b, newest, relevance, \
               relevance * (0.5 + 0.5 * (CASE WHEN b >= 3 THEN 3 ELSE b END) / 3.0) AS score, \
               COUNT(*) OVER () AS total \
             FROM r ORDER BY {RANK_ORDER} LIMIT {limit} OFFSET {offset}) \
             SELECT id, relevance, score, total, (SELECT f.availability FROM files f WHERE f.id = page.id) \
             FROM page ORDER BY {RANK_ORDER}"
        );
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        let total = rows.first().map_or(0, |r| r.get::<i64, _>(3).max(0) as u64);
        let ranked = rows
            .iter()
            .filter_map(|r| {
                Some(Ranked {
                    file_id: file_id_at(r, 0)?,
                    relevance: r.get(1),
                    score: r.get(2),
                    availability: r.get::<i64, _>(4).clamp(0, i64::from(u32::MAX)) as u32,
                })
            })
            .collect();
        Ok((ranked, total))
    }

    /// The visible shares of a file, the viewer's first.
    pub async fn shares_of(&self, id: &FileId, viewer: i64) -> anyhow::Result<Vec<ShareView>> {
        Ok(self
            .file_facts(&[*id], viewer)
            .await?
            .pop()
            .map(|f| f.shares)
            .unwrap_or_default())
    }

    // ---- history ----

    pub async fn add_event(&self, user_id: i64, file: &FileId, kind: &str, now: i64) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO events (user_id, file_id, kind, at) VALUES ($1, $2, $3, $4)")
            .bind(user_id)
            .bind(file.0.0.to_vec())
            .bind(kind)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user's shares with how many other people downloaded each, newest first.
    pub async fn my_shares(&self, user_id: i64) -> anyhow::Result<Vec<MyShare>> {
        let rows = sqlx::query(
            "SELECT s.file_id, s.title, s.kind, f.size, s.private, s.created_at, \
               (SELECT COUNT(DISTINCT e.user_id) FROM events e WHERE e.file_id = s.file_id AND e.kind = 'download' \
                  AND e.user_id <> $1), \
               (SELECT COUNT(*) FROM events e WHERE e.file_id = s.file_id AND e.kind = 'view' AND e.user_id <> $1) \
             FROM shares s JOIN files f ON f.id = s.file_id WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(MyShare {
                    file_id: file_id_at(r, 0)?.to_string(),
                    title: r.get(1),
                    kind: r.get(2),
                    size: r.get::<i64, _>(3).max(0) as u64,
                    private: r.get::<i64, _>(4) != 0,
                    shared_at: r.get(5),
                    downloaders: r.get::<i64, _>(6).max(0) as u64,
                    views: r.get::<i64, _>(7).max(0) as u64,
                })
            })
            .collect())
    }

    /// The user's downloads and views, newest first, with the title they can see (or the
    /// file ID's start when the file is gone or hidden now).
    pub async fn my_history(&self, user_id: i64, limit: u32) -> anyhow::Result<Vec<MyEvent>> {
        let sql = format!(
            "SELECT e.file_id, e.kind, e.at, \
               (SELECT s.title FROM shares s WHERE s.file_id = e.file_id AND {} \
                ORDER BY CASE WHEN s.user_id = $1 THEN 0 ELSE 1 END, s.id LIMIT 1) \
             FROM events e WHERE e.user_id = $1 ORDER BY e.at DESC, e.id DESC LIMIT $2",
            visible("$1")
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = file_id_at(r, 0)?.to_string();
                let title: Option<String> = r.get(3);
                Some(MyEvent {
                    title: title.unwrap_or_else(|| format!("{}… (gone)", &id[..12])),
                    file_id: id,
                    kind: r.get(1),
                    at: r.get(2),
                })
            })
            .collect())
    }

    /// Bytes of the distinct files the user shares.
    pub async fn shared_bytes(&self, user_id: i64) -> anyhow::Result<u64> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(f.size) AS BIGINT) FROM files f WHERE f.id IN (SELECT s.file_id FROM shares s WHERE s.user_id = $1)",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Files the user downloaded, viewed or shares.
    pub async fn files_of_user(&self, user_id: i64) -> anyhow::Result<(Vec<FileId>, Vec<FileId>)> {
        let read = |rows: Vec<Vec<u8>>| -> Vec<FileId> {
            rows.into_iter()
                .filter_map(|b| Some(FileId(trove_common::Hash32(<[u8; 32]>::try_from(b).ok()?))))
                .collect()
        };
        let history: Vec<Vec<u8>> = sqlx::query_scalar("SELECT DISTINCT file_id FROM events WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        let shared: Vec<Vec<u8>> = sqlx::query_scalar("SELECT DISTINCT file_id FROM shares WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok((read(history), read(shared)))
    }

    /// For files in the user's history: (other file, file of mine, people who got both), over
    /// other people's downloads.
    pub async fn co_downloads(&self, user_id: i64) -> anyhow::Result<Vec<(FileId, FileId, u64)>> {
        let rows = sqlx::query(
            "SELECT e2.file_id, e1.file_id, COUNT(DISTINCT e2.user_id) FROM events e1 \
             JOIN events e2 ON e2.user_id = e1.user_id AND e2.file_id <> e1.file_id AND e2.kind = 'download' \
             WHERE e1.user_id <> $1 AND e1.file_id IN (SELECT file_id FROM events WHERE user_id = $1) \
             GROUP BY e2.file_id, e1.file_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((file_id_at(r, 0)?, file_id_at(r, 1)?, r.get::<i64, _>(2).max(0) as u64)))
            .collect())
    }

    /// The most downloaded files (by distinct people), most first.
    pub async fn popular(&self, limit: u32) -> anyhow::Result<Vec<(FileId, u64)>> {
        let rows = sqlx::query(
            "SELECT file_id, COUNT(DISTINCT user_id) AS n FROM events WHERE kind = 'download' \
             GROUP BY file_id ORDER BY n DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((file_id_at(r, 0)?, r.get::<i64, _>(1).max(0) as u64)))
            .collect())
    }

    /// The newest files the user may see (for a fleet with no download history at all).
    pub async fn newest_visible(&self, viewer: i64, limit: u32) -> anyhow::Result<Vec<FileId>> {
        let sql = format!(
            "SELECT s.file_id, MAX(s.created_at) AS t FROM shares s WHERE {} GROUP BY s.file_id ORDER BY t DESC LIMIT $2",
            visible("$1")
        );
        let rows = sqlx::query(&sql)
            .bind(viewer)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().filter_map(|r| file_id_at(r, 0)).collect())
    }

    // ---- availability ----

    /// Recomputes the availability of every file that has one of these chunks.
    pub async fn refresh_availability_of_chunks(&self, chunks: &[ChunkId]) -> anyhow::Result<()> {
        for batch in chunks.chunks(ROWS_PER_STATEMENT) {
            let prefixes = super::fleet::prefixes(batch);
            let sql = set_availability_where(&format!(
                "id IN (SELECT fc.file_id {} JOIN file_chunks fc ON fc.chunk = c.id)",
                super::fleet::chunks_by_prefix(self.backend, prefixes.len())
            ));
            let mut q = sqlx::query(&sql);
            for p in prefixes {
                q = q.bind(p);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Recomputes the availability of up to `limit` files after `after` (in ID order); returns
    /// the last file ID done, `None` at the end.
    pub async fn refresh_availability_page(&self, after: &[u8], limit: u32) -> anyhow::Result<Option<Vec<u8>>> {
        let ids: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id FROM files WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after.to_vec())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(None);
        };
        sqlx::query(&set_availability_where("id >= $1 AND id <= $2"))
            .bind(first.clone())
            .bind(last.clone())
            .execute(&self.pool)
            .await?;
        Ok(Some(last.clone()))
    }

    pub async fn refresh_availability_of_file(&self, id: &FileId) -> anyhow::Result<()> {
        sqlx::query(&set_availability_where("id = $1"))
            .bind(id.0.0.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(())
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
}

/// The file ID in column `i` (`None` if it is not 32 bytes, which this module never writes).
fn file_id_at(r: &sqlx::any::AnyRow, i: usize) -> Option<FileId> {
    Some(FileId(trove_common::Hash32(r.get::<Vec<u8>, _>(i).try_into().ok()?)))
}

enum Arg {
    Int(i64),
    Text(String),
}
