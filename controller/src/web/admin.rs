//! The admin pages (admins only; anyone else gets the 403 page): every account with a
//! disable or enable button, and a form that enrolls a new appliance.
//!
//! They call what the API calls (`accounts::all_users`, `accounts::set_disabled`,
//! `api::enroll_for`), which also refuse anyone but an admin, so the page cannot grant
//! more than the API would. Every POST needs the session's CSRF token. A join token is shown
//! once, in the answer to the enroll form, and stored nowhere but in the controller's
//! database as the node's secret.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use trove_common::api::UserView;

use super::pages::{Fields, form_error, render_status};
use super::{CSRF_FIELD, Chrome, Session, WebError, render};
use crate::app::App;
use crate::provision::BOARDS;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/admin", get(admin))
        .route("/admin/users/{name}/disable", post(disable))
        .route("/admin/users/{name}/enable", post(enable))
        .route("/admin/enroll", post(enroll))
}

#[derive(askama::Template)]
#[template(path = "admin.html")]
struct AdminPage {
    chrome: Chrome,
    users: Vec<UserView>,
    boards: Vec<&'static str>,
    /// A refused action, shown above the forms.
    error: Option<String>,
    /// What the enroll form had, to show again after an error.
    enroll_name: String,
}

#[derive(askama::Template)]
#[template(path = "admin_enrolled.html")]
struct EnrolledPage {
    chrome: Chrome,
    node_id: String,
    name: String,
    token: String,
    /// The same from a shell: `trove-controller enroll ...`.
    command: String,
    /// Starting troved on a board by hand with the token.
    troved: String,
}

fn boards() -> Vec<&'static str> {
    BOARDS.iter().map(|b| b.name).collect()
}

/// Only admins get past this; everyone else sees the 403 page.
fn admin_only(s: &Session) -> Result<(), WebError> {
    if s.caller.is_admin {
        Ok(())
    } else {
        Err(WebError::Forbidden)
    }
}

async fn page(
    app: &App,
    s: &Session,
    status: StatusCode,
    error: Option<String>,
    enroll_name: String,
) -> Result<Response, WebError> {
    let users = crate::accounts::all_users(app, &s.caller).await?;
    Ok(render_status(
        status,
        &AdminPage {
            chrome: s.chrome("Admin"),
            users,
            boards: boards(),
            error,
            enroll_name,
        },
    ))
}

async fn admin(State(app): State<Arc<App>>, s: Session) -> Result<Response, WebError> {
    admin_only(&s)?;
    page(&app, &s, StatusCode::OK, None, String::new()).await
}

async fn disable(
    State(app): State<Arc<App>>,
    s: Session,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    set_disabled(&app, s, &name, true, &body).await
}

async fn enable(
    State(app): State<Arc<App>>,
    s: Session,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    set_disabled(&app, s, &name, false, &body).await
}

async fn set_disabled(app: &App, s: Session, name: &str, disabled: bool, body: &[u8]) -> Result<Response, WebError> {
    admin_only(&s)?;
    let form = Fields::parse(body);
    s.check_csrf(app, form.get(CSRF_FIELD))?;
    match crate::accounts::set_disabled(app, &s.caller, name, disabled).await {
        Ok(_) => Ok(Redirect::to("/admin").into_response()),
        Err(e) => {
            let (status, message) = form_error(e)?;
            page(app, &s, status, Some(message), String::new()).await
        }
    }
}

async fn enroll(State(app): State<Arc<App>>, s: Session, body: Bytes) -> Result<Response, WebError> {
    admin_only(&s)?;
    let form = Fields::parse(&body);
    s.check_csrf(&app, form.get(CSRF_FIELD))?;
    let name = form.text("name").trim().to_owned();
    let board = form.text("board");
    let bad = |message: String| page(&app, &s, StatusCode::BAD_REQUEST, Some(message), name.clone());
    if !board.is_empty() && !BOARDS.iter().any(|b| b.name == board) {
        return bad(format!("{board:?} is not a known board; pick one of the list")).await;
    }
    let e = match crate::api::enroll_for(&app, &s.caller, Some(name.as_str()).filter(|n| !n.is_empty())).await {
        Ok(e) => e,
        Err(e) => {
            let (status, message) = form_error(e)?;
            return page(&app, &s, status, Some(message), name.clone()).await;
        }
    };
    let name_arg = if name.is_empty() {
        String::new()
    } else {
        format!(" --name {}", shell_quote(&name))
    };
    let (command, troved) = if board.is_empty() {
        (
            format!("trove-controller enroll{name_arg}"),
            format!("troved --join {}", e.token),
        )
    } else {
        (
            format!("trove-controller enroll{name_arg} --board {board} --boot /media/$USER/bootfs"),
            format!("troved --join {} --board {board}", e.token),
        )
    };
    Ok(render(&EnrolledPage {
        chrome: s.chrome("Appliance enrolled"),
        node_id: e.node_id,
        name,
        token: e.token,
        command,
        troved,
    }))
}

/// `s` as one shell word (single-quoted unless it is plainly safe).
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_shell_word() {
        let check = |s, want: &str| assert_eq!(shell_quote(s), want);
        check("garage-pi", "garage-pi");
        check("garage pi", "'garage pi'");
        check("bob's pi", r"'bob'\''s pi'");
        check("$(rm -rf /)", "'$(rm -rf /)'");
    }
}
