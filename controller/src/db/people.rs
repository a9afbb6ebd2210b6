//! Users and API tokens.
//!
//! A token is stored only as its keyed BLAKE3 hash; its public handle (the `id` people list
//! and revoke) is the first 6 bytes of that hash in hex, so listing never shows a token.

use sqlx::Row;
use sqlx::any::AnyRow;
use trove_common::api::UserView;
use trove_common::hex;

use super::Db;

/// Who made an API request.
#[derive(Clone, Debug)]
pub struct TokenOwner {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
    pub token_hash: [u8; 32],
    /// The token's label and when it was made (browser sessions expire: see
    /// `accounts::SESSION_LABEL`).
    pub label: String,
    pub created_at: i64,
}

/// A user as login sees it.
pub struct Credentials {
    pub user_id: i64,
    pub password_hash: Option<String>,
    pub disabled: bool,
}

pub struct TokenRow {
    pub id: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub hash: [u8; 32],
}

/// Hex digits of a token's public handle.
pub const TOKEN_ID_HEX: usize = 12;

pub fn token_id(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..TOKEN_ID_HEX / 2])
}

const USER_COLUMNS: &str = "u.name, u.display_name, u.bio, u.is_admin, u.disabled, u.created_at";

fn user_view(r: &AnyRow, shares: i64) -> UserView {
    UserView {
        name: r.get(0),
        display_name: r.get(1),
        bio: r.get(2),
        is_admin: r.get::<i64, _>(3) != 0,
        disabled: r.get::<i64, _>(4) != 0,
        created_at: r.get(5),
        shares: shares.max(0) as u64,
    }
}

impl Db {
    /// Creates the first admin and its token if there is no user yet; true if it did.
    pub async fn bootstrap_admin(&self, token: &str, now: i64) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            return Ok(false);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, display_name, is_admin, created_at) VALUES ('admin', 'Admin', 1, $1) RETURNING id",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO api_tokens (hash, user_id, created_at, label) VALUES ($1, $2, $3, 'bootstrap')")
            .bind(token_hash(token).to_vec())
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The live user a token belongs to (not revoked, user not disabled). Notes the use, at
    /// most once a minute, so the token list can say when a token was last used.
    pub async fn user_of_token(&self, token: &str, now: i64) -> anyhow::Result<Option<TokenOwner>> {
        let hash = token_hash(token);
        let row = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, t.last_used_at, t.label, t.created_at FROM api_tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.hash = $1 AND t.revoked = 0 AND u.disabled = 0",
        )
        .bind(hash.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        if r.get::<Option<i64>, _>(3).is_none_or(|t| now - t >= 60) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE hash = $1")
                .bind(hash.to_vec())
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(TokenOwner {
            user_id: r.get(0),
            name: r.get(1),
            is_admin: r.get::<i64, _>(2) != 0,
            token_hash: hash,
            label: r.get(4),
            created_at: r.get(5),
        }))
    }

    /// Creates a user; `None` if the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        display_name: &str,
        password_hash: &str,
        now: i64,
    ) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO users (name, display_name, password_hash, is_admin, created_at) VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(display_name)
        .bind(password_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn credentials(&self, name: &str) -> anyhow::Result<Option<Credentials>> {
        let row = sqlx::query("SELECT id, password_hash, disabled FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Credentials {
            user_id: r.get(0),
            password_hash: r.get(1),
            disabled: r.get::<i64, _>(2) != 0,
        }))
    }

    pub async fn password_hash(&self, user_id: i64) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn add_token(&self, user_id: i64, token: &str, label: &str, now: i64) -> anyhow::Result<String> {
        let hash = token_hash(token);
        sqlx::query("INSERT INTO api_tokens (hash, user_id, created_at, label) VALUES ($1, $2, $3, $4)")
            .bind(hash.to_vec())
            .bind(user_id)
            .bind(now)
            .bind(label)
            .execute(&self.pool)
            .await?;
        Ok(token_id(&hash))
    }

    pub async fn tokens(&self, user_id: i64) -> anyhow::Result<Vec<TokenRow>> {
        let rows = sqlx::query(
            "SELECT hash, label, created_at, last_used_at FROM api_tokens WHERE user_id = $1 AND revoked = 0 \
             ORDER BY created_at, hash",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let hash: [u8; 32] = r.get::<Vec<u8>, _>(0).try_into().ok()?;
                Some(TokenRow {
                    id: token_id(&hash),
                    label: r.get(1),
                    created_at: r.get(2),
                    last_used_at: r.get(3),
                    hash,
                })
            })
            .collect())
    }

    /// Revokes one of the user's tokens by its public handle; false if there is none.
    pub async fn revoke_token(&self, user_id: i64, id: &str) -> anyhow::Result<bool> {
        let Some(t) = self.tokens(user_id).await?.into_iter().find(|t| t.id == id) else {
            return Ok(false);
        };
        self.revoke_token_hash(&t.hash).await?;
        Ok(true)
    }

    pub async fn revoke_token_hash(&self, hash: &[u8; 32]) -> anyhow::Result<()> {
        sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE hash = $1")
            .bind(hash.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A user's profile. `viewer` sees their own private shares counted.
    pub async fn user_view(&self, name: &str, viewer: i64) -> anyhow::Result<Option<UserView>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, (SELECT COUNT(*) FROM shares s WHERE s.user_id = u.id AND (s.private = 0 OR s.user_id = $2)) \
             FROM users u WHERE u.name = $1"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(viewer)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| user_view(&r, r.get(6))))
    }

    pub async fn users(&self) -> anyhow::Result<Vec<UserView>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, (SELECT COUNT(*) FROM shares s WHERE s.user_id = u.id) FROM users u ORDER BY u.name"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| user_view(r, r.get(6))).collect())
    }

    pub async fn set_profile(&self, user_id: i64, display_name: Option<&str>, bio: Option<&str>) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE users SET display_name = COALESCE($2, display_name), bio = COALESCE($3, bio) WHERE id = $1",
        )
        .bind(user_id)
        .bind(display_name)
        .bind(bio)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_password_hash(&self, user_id: i64, hash: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Disables or enables a user; a disabled user's tokens stop working at once. False if
    /// there is no such user.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> anyhow::Result<bool> {
        Ok(sqlx::query("UPDATE users SET disabled = $2 WHERE name = $1")
            .bind(name)
            .bind(disabled as i64)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }
}

pub fn token_hash(token: &str) -> [u8; 32] {
    blake3::derive_key("trove/v1 api token", token.as_bytes())
}
