//! Files and shares.

use anyhow::Context;
use sqlx::Row;
use trove_common::{ChunkId, FileId, Manifest};

use super::fleet::{ensure_chunk_ids, forget_unused_chunks};
use super::{Db, ROWS_PER_STATEMENT, clamp_i64};

pub struct FileRow {
    pub manifest: Manifest,
    pub name: String,
}

impl Db {
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
}
