//! A file's page, `/f/{file_id}`: what it is, who shares it, how safe its copies are, a
//! share link, a download button and, for video, audio and images, the file itself through
//! the gateway (`/api/v1/files/{id}/content`). A private file of someone else's, or a file
//! that never was, is the same 404 page.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use trove_common::NodeId;
use trove_common::api::REPLICAS_TARGET;

use super::bytes_h;
use super::find::copies_online;
use crate::api::ApiError;
use crate::app::App;
use crate::web::{Chrome, Session, WebError, render};

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/f/{id}", get(file_page))
}

pub struct Sharer {
    pub name: String,
    pub title: String,
    pub shared: String,
    pub private: bool,
}

#[derive(askama::Template)]
#[template(path = "file.html")]
struct FilePage {
    chrome: Chrome,
    file_id: String,
    title: String,
    name: String,
    kind: String,
    description: String,
    tags: Vec<String>,
    sharers: Vec<Sharer>,
    size: String,
    size_bytes: u64,
    n_chunks: usize,
    share_link: String,
    /// Copies of the scarcest chunk, online or not.
    copies: usize,
    target: u32,
    available: bool,
    availability: String,
    content_url: String,
}

async fn file_page(
    State(app): State<Arc<App>>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (id, f, nodes, holders) = match crate::api::file_with_holders(&app, &s.caller, &id).await {
        Ok(x) => x,
        // A malformed ID names no file either.
        Err(ApiError::BadRequest(_) | ApiError::NotFound(_)) => return Err(WebError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let shares = app.db.shares_of(&id, s.caller.user_id).await?;
    let online: HashSet<NodeId> = nodes.iter().filter(|n| n.state == "online").map(|n| n.id).collect();
    let copies = holders.iter().map(Vec::len).min().unwrap_or(0);
    let live = holders
        .iter()
        .map(|h| h.iter().filter(|n| online.contains(n)).count())
        .min()
        .unwrap_or(0);
    let first = shares.first();
    let mut tags: Vec<String> = Vec::new();
    for t in shares.iter().flat_map(|s| &s.tags) {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let file_id = id.to_string();
    let page = FilePage {
        chrome: s.chrome(first.map_or_else(|| f.name.clone(), |s| s.title.clone())),
        title: first.map_or_else(|| f.name.clone(), |s| s.title.clone()),
        name: f.name.clone(),
        kind: first.map_or_else(|| "other".to_owned(), |s| s.kind.clone()),
        description: first.map(|s| s.description.clone()).unwrap_or_default(),
        tags,
        sharers: shares
            .iter()
            .map(|sh| Sharer {
                name: sh.owner.clone(),
                title: sh.title.clone(),
                shared: super::when_h(sh.created_at),
                private: sh.private,
            })
            .collect(),
        size: bytes_h(f.manifest.size()),
        size_bytes: f.manifest.size(),
        n_chunks: f.manifest.n_chunks(),
        share_link: format!("http://{host}/f/{file_id}"),
        copies,
        target: REPLICAS_TARGET,
        available: live > 0,
        availability: copies_online(live as u32),
        content_url: format!("/api/v1/files/{file_id}/content"),
        file_id,
    };
    Ok(render(&page))
}
