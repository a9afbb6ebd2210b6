//! Accounts: sign-up, login and logout, profiles, API tokens, and an admin's say over users.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes), on
//! the blocking pool so a login never stalls the runtime. Failed logins are rate limited per
//! account name and per client address, in memory: after [`FAILURES_MAX`] failures within
//! [`FAILURE_WINDOW`], further attempts (even right ones) get 429 until the window has passed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use trove_common::api::{
    LoginRequest, LoginResponse, NewToken, ProfileUpdate, SignupRequest, TokenRequest, TokenView, UserView,
};
use trove_common::hex;

use crate::api::{ApiError, Caller};
use crate::app::{App, now_s};

pub const FAILURES_MAX: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
const NAME_BYTES_MAX: usize = 32;
const PASSWORD_BYTES_MIN: usize = 8;
const PASSWORD_BYTES_MAX: usize = 1024;
const DISPLAY_NAME_BYTES_MAX: usize = 64;
const BIO_BYTES_MAX: usize = 1024;
const LABEL_BYTES_MAX: usize = 64;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/signup", post(signup))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(crate::search::me).patch(update_me))
        .route("/api/v1/tokens", get(tokens).post(new_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/users", get(users))
        .route("/api/v1/users/{name}", get(user))
        .route("/api/v1/users/{name}/disable", post(disable))
        .route("/api/v1/users/{name}/enable", post(enable))
}

/// Failed logins by account name and by client address.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    fn keys(name: &str, ip: IpAddr) -> [String; 2] {
        [format!("name:{}", name.to_lowercase()), format!("ip:{ip}")]
    }

    /// `Err(seconds to wait)` while either key is over the limit.
    fn check(&self, name: &str, ip: IpAddr) -> Result<(), u64> {
        let mut f = self.failures.lock().expect("limiter lock");
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for key in Self::keys(name, ip) {
            if let Some(times) = f.get_mut(&key) {
                times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
                if times.len() >= FAILURES_MAX {
                    wait = wait.max(FAILURE_WINDOW - now.duration_since(times[times.len() - FAILURES_MAX]));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.as_secs().max(1))
        }
    }

    fn failed(&self, name: &str, ip: IpAddr) {
        let mut f = self.failures.lock().expect("limiter lock");
        let now = Instant::now();
        // Forget stale entries now and then, so a flood of names cannot grow the map forever.
        if f.len() > 10_000 {
            f.retain(|_, times| times.last().is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW));
        }
        for key in Self::keys(name, ip) {
            f.entry(key).or_default().push(now);
        }
    }

    fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .expect("limiter lock")
            .remove(&format!("name:{}", name.to_lowercase()));
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "a user name has 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if (PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "a password has {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} bytes"
        )))
    }
}

fn check_len(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() <= max {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("{what} is at most {max} bytes")))
    }
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(ApiError::from)
}

async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    Ok(tokio::task::spawn_blocking(move || match PasswordHash::new(&hash) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => {
            // No hash to check against (no such user): spend the same time anyway, so the
            // answer's timing does not tell which names exist.
            let salt = SaltString::from_b64("dHJvdmUtbm8tc3VjaC11c2Vy").expect("valid salt");
            let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
            false
        }
    })
    .await
    .map_err(anyhow::Error::from)?)
}

/// The label of the API token behind a browser session (`trove tokens` lists it). Tokens
/// with this label last [`App::session_lifetime_s`] from their creation: a browser keeps
/// its cookie for as long and a stolen one is worthless after that. Other tokens (the
/// CLI's) last until revoked.
pub const SESSION_LABEL: &str = "web";
/// The default lifetime of a browser session: 30 days.
pub const SESSION_LIFETIME_S: i64 = 30 * 24 * 3600;

/// True if a token labelled `label`, created at `created_at`, is a browser session that has
/// run out at `now`.
pub fn session_expired(label: &str, created_at: i64, now: i64, lifetime_s: i64) -> bool {
    label == SESSION_LABEL && now.saturating_sub(created_at) >= lifetime_s
}

pub fn new_token_string() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!("trove_{}", hex::encode(&b)))
}

async fn issue_token(app: &App, user_id: i64, label: &str) -> Result<(String, String), ApiError> {
    let token = new_token_string()?;
    let id = app.db.add_token(user_id, &token, label, now_s()).await?;
    Ok((token, id))
}

/// `name`'s profile as `viewer` sees it; no such user is `NotFound`.
pub async fn profile(app: &App, name: &str, viewer: i64) -> Result<UserView, ApiError> {
    app.db
        .user_view(name, viewer)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {name:?}")))
}

async fn signup(State(app): State<Arc<App>>, Json(req): Json<SignupRequest>) -> Result<Json<LoginResponse>, ApiError> {
    Ok(Json(sign_up(&app, req, "signup").await?))
}

/// Signs someone up and logs them in with a new token labelled `label`. The API's sign-up
/// and the dashboard's.
pub async fn sign_up(app: &App, req: SignupRequest, label: &str) -> Result<LoginResponse, ApiError> {
    check_name(&req.name)?;
    check_password(&req.password)?;
    let display = req
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(&req.name)
        .to_owned();
    check_len("a display name", &display, DISPLAY_NAME_BYTES_MAX)?;
    let hash = hash_password(req.password).await?;
    let Some(user_id) = app.db.create_user(&req.name, &display, &hash, now_s()).await? else {
        return Err(ApiError::Conflict(format!("the name {:?} is taken", req.name)));
    };
    tracing::info!(user = %req.name, "signed up");
    let (token, _) = issue_token(app, user_id, label).await?;
    Ok(LoginResponse {
        token,
        user: profile(app, &req.name, user_id).await?,
    })
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    Ok(Json(log_in(&app, peer.ip(), req).await?))
}

/// Checks a name and password, rate limited per name and per address `ip` (see
/// [`LoginLimiter`]), and issues a token labelled `req.label` (default `login`). The API's
/// login and the dashboard's.
pub async fn log_in(app: &App, ip: IpAddr, req: LoginRequest) -> Result<LoginResponse, ApiError> {
    if let Err(wait) = app.logins.check(&req.name, ip) {
        tracing::warn!(user = %req.name, %ip, "login refused: too many failures");
        return Err(ApiError::TooManyAttempts(wait));
    }
    let label = req.label.as_deref().unwrap_or("login").trim().to_owned();
    check_len("a token label", &label, LABEL_BYTES_MAX)?;
    let creds = app.db.credentials(&req.name).await?;
    let hash = creds.as_ref().and_then(|c| c.password_hash.clone()).unwrap_or_default();
    let right = verify_password(req.password.clone(), hash).await?;
    let Some(creds) = creds.filter(|c| right && !c.disabled && c.password_hash.is_some()) else {
        app.logins.failed(&req.name, ip);
        tracing::info!(user = %req.name, %ip, "login failed");
        return Err(ApiError::WrongPassword);
    };
    app.logins.succeeded(&req.name);
    let (token, _) = issue_token(app, creds.user_id, &label).await?;
    tracing::info!(user = %req.name, "logged in");
    Ok(LoginResponse {
        token,
        user: profile(app, &req.name, creds.user_id).await?,
    })
}

async fn logout(State(app): State<Arc<App>>, caller: Caller) -> Result<StatusCode, ApiError> {
    app.db.revoke_token_hash(&caller.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_me(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(req): Json<ProfileUpdate>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(update_profile(&app, &caller, req).await?))
}

/// Changes the caller's display name, bio and password. The API's `PATCH /me` and the
/// dashboard's profile form.
pub async fn update_profile(app: &App, caller: &Caller, req: ProfileUpdate) -> Result<UserView, ApiError> {
    let display = req.display_name.as_deref().map(str::trim);
    let bio = req.bio.as_deref().map(str::trim);
    if let Some(d) = display {
        check_len("a display name", d, DISPLAY_NAME_BYTES_MAX)?;
    }
    if let Some(b) = bio {
        check_len("a bio", b, BIO_BYTES_MAX)?;
    }
    if let Some(password) = req.password {
        check_password(&password)?;
        // The bootstrap admin has no password yet: its token is the proof.
        if let Some(current) = app.db.password_hash(caller.user_id).await? {
            let given = req.current_password.clone().unwrap_or_default();
            if !verify_password(given, current).await? {
                return Err(ApiError::WrongPassword);
            }
        }
        let hash = hash_password(password).await?;
        app.db.set_password_hash(caller.user_id, &hash).await?;
    }
    app.db.set_profile(caller.user_id, display, bio).await?;
    profile(app, &caller.name, caller.user_id).await
}

async fn tokens(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<Vec<TokenView>>, ApiError> {
    let now = now_s();
    Ok(Json(
        app.db
            .tokens(caller.user_id)
            .await?
            .into_iter()
            // A session that ran out is as good as revoked, checked or not since.
            .filter(|t| !session_expired(&t.label, t.created_at, now, app.session_lifetime_s))
            .map(|t| TokenView {
                current: t.hash == caller.token_hash,
                id: t.id,
                label: t.label,
                created_at: t.created_at,
                last_used_at: t.last_used_at,
            })
            .collect(),
    ))
}

async fn new_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Option<Json<TokenRequest>>,
) -> Result<Json<NewToken>, ApiError> {
    let label = body.and_then(|Json(b)| b.label).unwrap_or_else(|| "api".into());
    check_len("a token label", label.trim(), LABEL_BYTES_MAX)?;
    let (token, id) = issue_token(&app, caller.user_id, label.trim()).await?;
    Ok(Json(NewToken { id, token }))
}

async fn revoke_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.db.revoke_token(caller.user_id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("you have no token {id:?}")))
    }
}

async fn users(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(all_users(&app, &caller).await?))
}

/// Every account, for an admin. The API's `GET /users` and the admin page.
pub async fn all_users(app: &App, caller: &Caller) -> Result<Vec<UserView>, ApiError> {
    if !caller.is_admin {
        return Err(ApiError::Forbidden);
    }
    Ok(app.db.users().await?)
}

async fn user(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(profile(&app, &name, caller.user_id).await?))
}

/// An admin disables (or enables again) `name`'s account. The API's and the admin page's.
pub async fn set_disabled(app: &App, caller: &Caller, name: &str, disabled: bool) -> Result<UserView, ApiError> {
    if !caller.is_admin {
        return Err(ApiError::Forbidden);
    }
    if disabled && name == caller.name {
        return Err(ApiError::BadRequest("an admin cannot disable themselves".into()));
    }
    if !app.db.set_disabled(name, disabled).await? {
        return Err(ApiError::NotFound(format!("no user {name:?}")));
    }
    tracing::info!(user = %name, disabled, by = %caller.name, "user access changed");
    profile(app, name, caller.user_id).await
}

async fn disable(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(set_disabled(&app, &caller, &name, true).await?))
}

async fn enable(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(set_disabled(&app, &caller, &name, false).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_browser_sessions_run_out_and_exactly_at_their_lifetime() {
        let day = 86_400;
        assert!(!session_expired(SESSION_LABEL, 1000, 1000 + day - 1, day));
        assert!(session_expired(SESSION_LABEL, 1000, 1000 + day, day));
        assert!(!session_expired("login", 1000, 1000 + 400 * day, day));
        // A clock that went backwards leaves a session alone.
        assert!(!session_expired(SESSION_LABEL, 1000, 0, day));
    }
}
