//! Users and API tokens.

use sqlx::Row;

use super::Db;

impl Db {
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
}

pub fn token_hash(token: &str) -> [u8; 32] {
    blake3::derive_key("trove/v1 api token", token.as_bytes())
}
