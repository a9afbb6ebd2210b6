//! Sign up, log in, log out, edit my profile, see someone's.
//!
//! The sign-up and login forms come before any session, so their CSRF token is a
//! double-submit one: a random value in the `trove_pre` cookie (HttpOnly, SameSite=Lax) and
//! the same in the form. A foreign site can make a browser post the form but cannot read or
//! set the cookie, so it cannot log the browser into an account of its choosing.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use trove_common::api::{LoginRequest, ProfileUpdate, SignupRequest, UserView};

use super::find::{HitRow, hit_rows};
use super::{Fields, form_error, local_path, render_status};
use crate::accounts;
use crate::api::ApiError;
use crate::app::App;
use crate::web::{Chrome, MaybeSession, Session, WebError, render, session_clear_cookie, session_set_cookie};

/// The pre-session CSRF cookie of the sign-up and login forms.
const PRE_COOKIE: &str = "trove_pre";
/// Random bytes in a pre-session token (shown as hex).
const PRE_TOKEN_BYTES: usize = 16;
/// Shares listed on a profile page.
const PROFILE_SHARES_SHOWN: u32 = 50;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/signup", get(signup_page).post(signup))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/profile", get(profile_page).post(profile_save))
        .route("/u/{name}", get(user_page))
}

#[derive(askama::Template)]
#[template(path = "signup.html")]
struct SignupPage {
    chrome: Chrome,
    csrf: String,
    name: String,
    display_name: String,
    error: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    csrf: String,
    name: String,
    next: String,
    error: Option<String>,
}

/// This browser's pre-session token, and the cookie to set when it has none yet.
fn pre_token(headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), WebError> {
    if let Some(t) = super::super::cookie(headers, PRE_COOKIE)
        && t.len() == 2 * PRE_TOKEN_BYTES
        && t.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok((t.to_owned(), None));
    }
    let mut b = [0u8; PRE_TOKEN_BYTES];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let t = trove_common::hex::encode(&b);
    let cookie = HeaderValue::from_str(&format!(
        "{PRE_COOKIE}={t}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400"
    ))
    .expect("hex is a valid cookie value");
    Ok((t, Some(cookie)))
}

/// Refuses a sign-up or login whose form token is not this browser's pre-session cookie.
fn check_pre(headers: &HeaderMap, form: &Fields) -> Result<(), WebError> {
    let cookie = super::super::cookie(headers, PRE_COOKIE).unwrap_or("");
    let given = form.get(super::super::CSRF_FIELD).unwrap_or("");
    if super::super::same_secret(given, cookie) {
        Ok(())
    } else {
        tracing::warn!("sign-up or login without a valid pre-session CSRF token refused");
        Err(WebError::Csrf)
    }
}

fn with_cookie(mut res: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// Logged in: the session cookie, then on to `to`.
fn logged_in(app: &App, token: &str, to: &str) -> Response {
    let mut res = Redirect::to(to).into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, session_set_cookie(token, app.session_lifetime_s));
    res
}

async fn signup_page(MaybeSession(s): MaybeSession, headers: HeaderMap) -> Result<Response, WebError> {
    if s.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    let (csrf, cookie) = pre_token(&headers)?;
    let page = SignupPage {
        chrome: Chrome::anonymous("Sign up"),
        csrf,
        name: String::new(),
        display_name: String::new(),
        error: None,
    };
    Ok(with_cookie(render(&page), cookie))
}

async fn signup(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Result<Response, WebError> {
    let form = Fields::parse(&body);
    check_pre(&headers, &form)?;
    let req = SignupRequest {
        name: form.text("name").trim().to_owned(),
        password: form.text("password"),
        display_name: form.get("display_name").map(str::to_owned),
    };
    let (name, display_name) = (req.name.clone(), req.display_name.clone().unwrap_or_default());
    match accounts::sign_up(&app, req, accounts::SESSION_LABEL).await {
        Ok(r) => Ok(logged_in(&app, &r.token, "/")),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let page = SignupPage {
                chrome: Chrome::anonymous("Sign up"),
                csrf: form.text(super::super::CSRF_FIELD),
                name,
                display_name,
                error: Some(message),
            };
            Ok(render_status(status, &page))
        }
    }
}

async fn login_page(
    MaybeSession(s): MaybeSession,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let q = Fields::parse(raw.unwrap_or_default().as_bytes());
    let next = local_path(q.get("next").unwrap_or("/"));
    if s.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    let (csrf, cookie) = pre_token(&headers)?;
    let page = LoginPage {
        chrome: Chrome::anonymous("Log in"),
        csrf,
        name: String::new(),
        next,
        error: None,
    };
    Ok(with_cookie(render(&page), cookie))
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = Fields::parse(&body);
    check_pre(&headers, &form)?;
    let next = local_path(form.get("next").unwrap_or("/"));
    let req = LoginRequest {
        name: form.text("name").trim().to_owned(),
        password: form.text("password"),
        label: Some(accounts::SESSION_LABEL.into()),
    };
    let name = req.name.clone();
    match accounts::log_in(&app, peer.ip(), req).await {
        Ok(r) => Ok(logged_in(&app, &r.token, &next)),
        Err(e) => {
            let wait = match e {
                ApiError::TooManyAttempts(s) => Some(s),
                _ => None,
            };
            let (status, message) = form_error(e)?;
            let page = LoginPage {
                chrome: Chrome::anonymous("Log in"),
                csrf: form.text(super::super::CSRF_FIELD),
                name,
                next,
                error: Some(message),
            };
            let mut res = render_status(status, &page);
            if let Some(secs) = wait {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Ok(res)
        }
    }
}

async fn logout(State(app): State<Arc<App>>, MaybeSession(s): MaybeSession, body: Bytes) -> Result<Response, WebError> {
    // A session already gone (revoked elsewhere, expired) has nothing to revoke: forgetting
    // the cookie is all there is to do, and needs no token.
    if let Some(s) = s {
        let form = Fields::parse(&body);
        s.check_csrf(&app, form.get(super::super::CSRF_FIELD))?;
        app.db.revoke_token_hash(&s.caller.token_hash).await?;
        tracing::info!(user = %s.caller.name, "logged out of the dashboard");
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().append(header::SET_COOKIE, session_clear_cookie());
    Ok(res)
}

#[derive(askama::Template)]
#[template(path = "profile.html")]
struct ProfilePage {
    chrome: Chrome,
    user: UserView,
    error: Option<String>,
}

async fn profile_page(State(app): State<Arc<App>>, s: Session) -> Result<Response, WebError> {
    let user = accounts::profile(&app, &s.caller.name, s.caller.user_id).await?;
    Ok(render(&ProfilePage {
        chrome: s.chrome("Your profile"),
        user,
        error: None,
    }))
}

async fn profile_save(State(app): State<Arc<App>>, s: Session, body: Bytes) -> Result<Response, WebError> {
    let form = Fields::parse(&body);
    s.check_csrf(&app, form.get(super::super::CSRF_FIELD))?;
    let req = ProfileUpdate {
        display_name: Some(form.text("display_name")),
        bio: Some(form.text("bio")),
        ..Default::default()
    };
    match accounts::update_profile(&app, &s.caller, req).await {
        Ok(_) => Ok(Redirect::to(&format!("/u/{}", s.caller.name)).into_response()),
        Err(e) => {
            let (status, message) = form_error(e)?;
            let mut user = accounts::profile(&app, &s.caller.name, s.caller.user_id).await?;
            user.display_name = form.text("display_name");
            user.bio = form.text("bio");
            let page = ProfilePage {
                chrome: s.chrome("Your profile"),
                user,
                error: Some(message),
            };
            Ok(render_status(status, &page))
        }
    }
}

#[derive(askama::Template)]
#[template(path = "user.html")]
struct UserPage {
    chrome: Chrome,
    user: UserView,
    is_me: bool,
    since: String,
    hits: Vec<HitRow>,
}

async fn user_page(State(app): State<Arc<App>>, s: Session, Path(name): Path<String>) -> Result<Response, WebError> {
    let user = accounts::profile(&app, &name, s.caller.user_id).await?;
    // Their shares as search shows them to me: the same visibility rules, newest first
    // among equals.
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("owner", &user.name)
        .append_pair("per_page", &PROFILE_SHARES_SHOWN.to_string())
        .finish();
    let found = crate::search::find(&app, &s.caller, Some(&query)).await?;
    Ok(render(&UserPage {
        chrome: s.chrome(user.display_name.clone()),
        is_me: user.name == s.caller.name,
        since: super::when_h(user.created_at),
        hits: hit_rows(&found.hits),
        user,
    }))
}
