//! The web dashboard: server-rendered pages (askama templates in `controller/templates`,
//! compiled into the binary) with a little JavaScript (`controller/assets`) where it helps.
//!
//! Who is asking comes from the `trove_session` cookie, which holds an ordinary API token
//! (label `web`), so logging out of the browser revokes it like `trove logout` does. The
//! cookie is HttpOnly and SameSite=Lax. Every state-changing request from a page carries a
//! CSRF token derived from the session (see [`csrf_token`]) in a form field or the
//! `X-CSRF-Token` header, and is refused without it.
//!
//! Pages live in submodules by area; each has a `routes()` merged here:
//! - `pages.rs`: sign up, log in, profile, search, the file page, sharing (upload) and my dashboard;
//! - `fleet.rs`: the fleet page and its live feed;
//! - `admin.rs`: users and enrolling appliances.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::Caller;
use crate::app::App;

mod admin;
mod assets;
mod fleet;
mod pages;

pub use pages::UPLOAD_RESERVE_BYTES;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "trove_session";
/// The form field and the header that carry the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/static/{name}", get(assets::asset))
        .merge(pages::routes())
        .merge(fleet::routes())
        .merge(admin::routes())
        .layer(axum::middleware::from_fn(guard))
}

/// The session token in a request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// One cookie's value from the `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session, kept by the browser as long as its token is good for.
/// No `Secure`: Trove runs on plain HTTP on a LAN.
pub fn session_set_cookie(token: &str, lifetime_s: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={lifetime_s}"
    ))
    .expect("tokens are URL-safe")
}

/// `Set-Cookie` that forgets the session.
pub fn session_clear_cookie() -> HeaderValue {
    HeaderValue::from_static("trove_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The CSRF token for a session: a keyed hash of the session token's hash under a key
/// derived from the controller's signing key, so it survives restarts, differs per
/// session, and cannot be computed by anyone who does not hold the session.
pub fn csrf_token(app: &App, token_hash: &[u8; 32]) -> String {
    let key = blake3::derive_key("trove web csrf v1", &app.key.secret());
    let mac = blake3::keyed_hash(&key, token_hash);
    trove_common::hex::encode(&mac.as_bytes()[..16])
}

/// Whether `given` is this session's CSRF token.
pub fn csrf_ok(app: &App, token_hash: &[u8; 32], given: Option<&str>) -> bool {
    given.is_some_and(|given| same_secret(given, &csrf_token(app, token_hash)))
}

/// Whether two tokens are equal, in time that does not depend on where they differ (so a
/// guesser learns nothing from how long a refusal takes). An empty token matches nothing.
pub fn same_secret(given: &str, want: &str) -> bool {
    !want.is_empty()
        && given.len() == want.len()
        && given.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// A logged-in person on a page. Pages that need one take `Session`; without a valid
/// session cookie the browser is sent to the login page and back.
pub struct Session {
    pub caller: Caller,
    /// To put in forms (`csrf` field) and in the page for scripts (`X-CSRF-Token`).
    pub csrf: String,
}

impl Session {
    /// What the layout shows about the visitor.
    pub fn chrome(&self, title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            user: Some(self.caller.name.clone()),
            is_admin: self.caller.is_admin,
            csrf: self.csrf.clone(),
        }
    }

    /// Refuses a state-changing request whose CSRF token is missing or wrong.
    pub fn check_csrf(&self, app: &App, given: Option<&str>) -> Result<(), WebError> {
        if csrf_ok(app, &self.caller.token_hash, given) {
            Ok(())
        } else {
            tracing::warn!(user = %self.caller.name, "request without a valid CSRF token refused");
            Err(WebError::Csrf)
        }
    }

    /// [`Session::check_csrf`] with the token from the `X-CSRF-Token` header (scripts).
    pub fn check_csrf_header(&self, app: &App, headers: &HeaderMap) -> Result<(), WebError> {
        self.check_csrf(app, headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()))
    }
}

async fn session_of(parts: &Parts, app: &Arc<App>) -> Result<Option<Session>, WebError> {
    let Some(token) = session_cookie(&parts.headers) else {
        return Ok(None);
    };
    let Some(owner) = crate::api::owner_of_token(app, token)
        .await
        .map_err(WebError::Internal)?
    else {
        return Ok(None);
    };
    let csrf = csrf_token(app, &owner.token_hash);
    Ok(Some(Session {
        caller: owner.into(),
        csrf,
    }))
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        match session_of(parts, app).await? {
            Some(s) => Ok(s),
            None => Err(WebError::LoginFirst(
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
            )),
        }
    }
}

/// A visitor who may or may not be logged in (the login and sign-up pages).
pub struct MaybeSession(pub Option<Session>);

impl FromRequestParts<Arc<App>> for MaybeSession {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        Ok(MaybeSession(session_of(parts, app).await?))
    }
}

/// What the layout (`templates/base.html`) needs: every page template has a `chrome` field.
pub struct Chrome {
    pub title: String,
    /// The logged-in user's name, if any.
    pub user: Option<String>,
    pub is_admin: bool,
    /// Empty when nobody is logged in.
    pub csrf: String,
}

impl Chrome {
    pub fn anonymous(title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            user: None,
            is_admin: false,
            csrf: String::new(),
        }
    }
}

/// Renders a template as a page.
pub fn render(t: &impl askama::Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => WebError::Internal(anyhow::anyhow!("template: {e}")).into_response(),
    }
}

/// Why a page cannot be shown. Shown as a small error page a person can read.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("log in first")]
    LoginFirst(String),
    #[error("this form has expired or did not come from Trove; go back, reload and try again")]
    Csrf,
    #[error("only an admin may see this")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    /// Also what a private file looks like to anyone but its sharer.
    #[error("no such page")]
    NotFound,
    #[error("internal error")]
    Internal(anyhow::Error),
}

impl From<crate::api::ApiError> for WebError {
    fn from(e: crate::api::ApiError) -> WebError {
        use crate::api::ApiError as A;
        match e {
            A::NoToken | A::BadToken => WebError::LoginFirst("/".into()),
            A::Forbidden => WebError::Forbidden,
            A::NotFound(_) => WebError::NotFound,
            A::Internal(e) => WebError::Internal(e),
            other => WebError::BadRequest(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for WebError {
    fn from(e: anyhow::Error) -> WebError {
        WebError::Internal(e)
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::LoginFirst(next) => {
                let to = format!(
                    "/login?next={}",
                    form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                return Redirect::to(&to).into_response();
            }
            WebError::Csrf | WebError::Forbidden => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "page failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let page = ErrorPage {
            chrome: Chrome::anonymous(status.canonical_reason().unwrap_or("Error")),
            status: status.as_u16(),
            message: self.to_string(),
        };
        let html = askama::Template::render(&page).unwrap_or_else(|_| self.to_string());
        (status, Html(html)).into_response()
    }
}

/// Refuses cross-origin POSTs and adds the security headers to every answer. A page says
/// `Cache-Control: no-store` unless it chose otherwise (the stylesheet and script do):
/// browsers on a LAN are shared, and without it the Back button after a logout shows the
/// last person's pages (their shares, history, an admin's join token) from the cache.
async fn guard(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(req.headers()) {
        tracing::warn!(path = %req.uri().path(), "POST from another origin refused");
        return WebError::Csrf.into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(pages::CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// True unless an `Origin` header is present and names another host than `Host` (browsers
/// send `Origin` on every cross-site POST; `null` counts as foreign).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_name_this_host() {
        let h = |origin: Option<&str>| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static("trove.lan:8080"));
            if let Some(o) = origin {
                m.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            same_origin(&m)
        };
        assert!(h(None));
        assert!(h(Some("http://trove.lan:8080")));
        assert!(!h(Some("http://trove.lan")));
        assert!(!h(Some("http://evil.example")));
        assert!(!h(Some("null")));
    }

    #[test]
    fn secrets_match_only_themselves() {
        assert!(same_secret("abc123", "abc123"));
        assert!(!same_secret("abc124", "abc123"));
        assert!(!same_secret("abc12", "abc123"));
        assert!(!same_secret("", ""), "an empty token matches nothing");
    }
}
