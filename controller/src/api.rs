//! The JSON API (`/api/v1`, types in `trove_common::api`) and `/metrics`.
//!
//! Every route but health, sign-up, login and metrics needs `Authorization: Bearer <token>`.
//! Errors are one [`ApiError`] mapped to a status and an `ApiErrorBody` a person can read.
//! Accounts are in `accounts.rs`, search, history and recommendations in `search.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use trove_common::api::{
    ApiErrorBody, ChunkStatus, DESCRIPTION_BYTES_MAX, EnrollRequest, Enrollment, FileStatus, FileView, Health, KINDS,
    NodeView, REPLICAS_TARGET, RepairView, ShareRequest, ShareResponse, TAG_BYTES_MAX, TAGS_MAX, TITLE_BYTES_MAX,
    Upload, normalize_tag,
};
use trove_common::control::{JoinToken, NodeSecret};
use trove_common::{ChunkId, FileId, Manifest, NodeId, hex};

use crate::accounts;
use crate::app::{App, now_s};
use crate::db::{Counted, FileRow, NodeRow, ShareMeta};
use crate::metrics::Gauges;
use crate::plan;
use crate::repair::node_facts;
use crate::text;

/// How long a share waits for deletions of its chunks still under way.
const PENDING_DELETES_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a write grant handed out with a share stays valid.
const GRANT_TTL_S: u64 = 3600;
/// The largest manifest a share may carry (hex), i.e. a file of ~2^20 chunks.
const MANIFEST_HEX_MAX: usize = 80 << 20;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/enrollments", post(enroll))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/files", post(share))
        .route("/api/v1/files/{id}", get(file).delete(delete_file))
        .route("/api/v1/files/{id}/status", get(file_status))
        .route("/api/v1/repair", get(repair))
        .merge(crate::accounts::routes())
        .merge(crate::search::routes())
        .merge(crate::gateway::routes())
        .merge(crate::live::routes())
        .merge(crate::web::routes())
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MANIFEST_HEX_MAX + 4096))
        .with_state(app)
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or malformed Authorization header: use `Authorization: Bearer <token>`")]
    NoToken,
    #[error("this token is not valid")]
    BadToken,
    #[error("only an admin may do this")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("wrong name or password")]
    WrongPassword,
    #[error("{0}")]
    Conflict(String),
    #[error("too many failed attempts; try again in {0} s")]
    TooManyAttempts(u64),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, word) = match &self {
            ApiError::NoToken | ApiError::BadToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            ApiError::WrongPassword => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = ApiErrorBody {
            error: word.into(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyAttempts(secs) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// The caller, from the bearer token; for GET and HEAD also from the dashboard's session
/// cookie, so pages can play content and scripts can read the API. State-changing API calls
/// never accept the cookie: they would be open to cross-site request forgery.
pub struct Caller {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
    /// Of the token this request came with (logout revokes it).
    pub token_hash: [u8; 32],
}

impl From<crate::db::TokenOwner> for Caller {
    fn from(o: crate::db::TokenOwner) -> Caller {
        Caller {
            user_id: o.user_id,
            name: o.name,
            is_admin: o.is_admin,
            token_hash: o.token_hash,
        }
    }
}

/// The token a request carries: a bearer token, else (GET and HEAD only) the dashboard's
/// session cookie. The gateway reads it here too, so both always agree.
pub fn request_token<'h>(method: &Method, headers: &'h HeaderMap) -> Option<&'h str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .or_else(|| {
            let safe = method == Method::GET || method == Method::HEAD;
            safe.then(|| crate::web::session_cookie(headers)).flatten()
        })
}

/// Who `token` speaks for: nobody if it is unknown or revoked, its user disabled, or it is
/// a browser session that has run out (revoked here, so it leaves the token list and no
/// later check has to work it out again). The one token check: the API's, the gateway's
/// and the dashboard's sessions.
pub async fn owner_of_token(app: &App, token: &str) -> anyhow::Result<Option<crate::db::TokenOwner>> {
    let now = now_s();
    let Some(o) = app.db.user_of_token(token, now).await? else {
        return Ok(None);
    };
    if accounts::session_expired(&o.label, o.created_at, now, app.session_lifetime_s) {
        app.db.revoke_token_hash(&o.token_hash).await?;
        tracing::info!(user = %o.name, "a browser session ran out; its token is revoked");
        return Ok(None);
    }
    Ok(Some(o))
}

/// Who holds `token` (counted and refused like every API request).
pub async fn caller_of_token(app: &App, token: Option<&str>) -> Result<Caller, ApiError> {
    app.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let Some(token) = token else {
        app.metrics.http_unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::NoToken);
    };
    match owner_of_token(app, token).await? {
        Some(o) => Ok(o.into()),
        None => {
            app.metrics.http_unauthorized.fetch_add(1, Ordering::Relaxed);
            tracing::info!("API request with an unknown token refused");
            Err(ApiError::BadToken)
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        caller_of_token(app, request_token(&parts.method, &parts.headers)).await
    }
}

async fn health(State(app): State<Arc<App>>) -> Json<Health> {
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").into(),
        controller_key: app.key.public().to_string(),
    })
}

/// Makes an enrollment: a new node ID and secret, and the token that carries them.
pub async fn make_enrollment(app: &App, name: Option<&str>) -> anyhow::Result<Enrollment> {
    let mut id = [0u8; 16];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let node_id = NodeId(id);
    app.db.enroll_node(&node_id, &secret, name, now_s()).await?;
    let token = JoinToken {
        broker: app.broker_for_nodes.clone(),
        node_id,
        secret: NodeSecret(secret),
        controller_key: app.key.public().to_bytes(),
    };
    Ok(Enrollment {
        node_id: node_id.to_string(),
        token: token.encode(),
    })
}

async fn enroll(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Option<Json<EnrollRequest>>,
) -> Result<Json<Enrollment>, ApiError> {
    let name = body.and_then(|Json(b)| b.name);
    Ok(Json(enroll_for(&app, &caller, name.as_deref()).await?))
}

/// An admin enrolls a new appliance. The API's `POST /enrollments` and the admin page's.
pub async fn enroll_for(app: &App, caller: &Caller, name: Option<&str>) -> Result<Enrollment, ApiError> {
    if !caller.is_admin {
        return Err(ApiError::Forbidden);
    }
    if name.is_some_and(|n| n.len() > 128) {
        return Err(ApiError::BadRequest("name is longer than 128 bytes".into()));
    }
    Ok(make_enrollment(app, name).await?)
}

async fn nodes(State(app): State<Arc<App>>, _caller: Caller) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(node_views(&app).await?))
}

/// The fleet as `GET /api/v1/nodes` shows it (also the fleet page's and live feed's source).
pub async fn node_views(app: &App) -> anyhow::Result<Vec<NodeView>> {
    let rows = app.db.nodes().await?;
    let per_node = app.db.chunks_per_node().await?;
    Ok(rows
        .into_iter()
        .map(|n| NodeView {
            id: n.id.to_string(),
            name: n.name,
            state: n.state,
            state_since: n.state_since,
            data_addr: n.data_addr,
            capacity_bytes: n.capacity_bytes,
            used_bytes: n.used_bytes,
            disk_free_bytes: n.disk_free_bytes,
            chunks: per_node.get(&n.id).copied().unwrap_or(0),
            version: n.version,
            board: n.board,
        })
        .collect())
}

pub fn parse_file_id(id: &str) -> Result<FileId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::BadRequest(format!("{id:?} is not a file ID: {e}")))
}

async fn share(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(req): Json<ShareRequest>,
) -> Result<Json<ShareResponse>, ApiError> {
    let meta = share_meta(&req)?;
    let bytes =
        hex::decode_vec(&req.manifest).map_err(|e| ApiError::BadRequest(format!("manifest is not hex: {e}")))?;
    let manifest = Manifest::decode_self_checked(&bytes).map_err(|e| ApiError::BadRequest(format!("manifest: {e}")))?;
    Ok(Json(register_share(&app, &caller, &meta, &manifest).await?))
}

/// Records `caller`'s share of `manifest`'s file and says which chunks must be sent where,
/// with a grant each. The API's share and the dashboard's upload.
pub async fn register_share(
    app: &App,
    caller: &Caller,
    meta: &ShareMeta,
    manifest: &Manifest,
) -> Result<ShareResponse, ApiError> {
    let new_file = app.db.add_share(manifest, caller.user_id, meta, now_s()).await?;
    app.db.refresh_availability_of_file(&manifest.file_id()).await?;
    app.touch_chunks(manifest.chunks());

    // What no online node holds yet must come from the client, once, to one node each.
    let nodes = node_facts(&app.db.nodes().await?);
    let online: HashSet<NodeId> = nodes.iter().filter(|n| n.online).map(|n| n.id).collect();
    // If the file was just removed, deletions of its chunks may still be on their way: let them
    // land (they take a fraction of a second) rather than count copies about to vanish.
    let deadline = tokio::time::Instant::now() + PENDING_DELETES_WAIT;
    while manifest.chunks().any(|c| !app.pending_deletes(&c).is_empty()) && tokio::time::Instant::now() < deadline {
        app.wake_repair.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut missing = Vec::new();
    let mut avoid = Vec::new();
    let all: Vec<ChunkId> = manifest.chunks().collect();
    let mut held = app.db.holdings_of_chunks(&all).await?;
    for (idx, chunk) in all.into_iter().enumerate() {
        // A copy about to be deleted (the file was just removed) does not count, and its node
        // must not be the one the chunk goes to: the delete could land after the upload.
        let doomed = app.pending_deletes(&chunk);
        let holders = held.remove(&chunk).unwrap_or_default();
        if !holders.iter().any(|h| online.contains(h) && !doomed.contains(h)) {
            missing.push((idx, chunk));
            avoid.push(doomed);
        }
    }
    if !missing.is_empty() && online.is_empty() {
        return Err(ApiError::Unavailable("no appliance is online to take the file".into()));
    }
    let chunks: Vec<_> = missing.iter().map(|(_, c)| *c).collect();
    let placed = plan::place_primaries(&nodes, &chunks, &avoid);
    let addr_of: HashMap<NodeId, String> = nodes
        .iter()
        .filter_map(|n| Some((n.id, n.data_addr.clone()?)))
        .collect();
    let expires = now_s() as u64 + GRANT_TTL_S;
    let mut uploads = Vec::with_capacity(missing.len());
    for ((idx, chunk), node) in missing.iter().zip(placed) {
        let node = node.ok_or_else(|| {
            ApiError::InsufficientStorage(format!(
                "no online appliance has room for chunk {idx} ({} bytes)",
                chunk.len()
            ))
        })?;
        let grant = app.key.grant(*chunk, expires);
        uploads.push(Upload {
            chunk_idx: *idx as u64,
            node_id: node.to_string(),
            addr: addr_of[&node].clone(),
            grant: hex::encode(&postcard::to_allocvec(&grant).map_err(anyhow::Error::from)?),
        });
    }
    tracing::info!(file = %manifest.file_id(), new_file, uploads = uploads.len(), "shared");
    Ok(ShareResponse {
        file_id: manifest.file_id().to_string(),
        size: manifest.size(),
        new_file,
        uploads,
    })
}

/// Checks and normalises what a share says (everything but its manifest).
pub fn share_meta(req: &ShareRequest) -> Result<ShareMeta, ApiError> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    let name = req.name.trim();
    if name.is_empty() || name.len() > TITLE_BYTES_MAX {
        return bad(format!("a share needs a name of 1 to {TITLE_BYTES_MAX} bytes"));
    }
    let title = req
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(name);
    if title.len() > TITLE_BYTES_MAX {
        return bad(format!("a title is at most {TITLE_BYTES_MAX} bytes"));
    }
    let kind = req.kind.as_deref().map(str::trim).unwrap_or("other").to_lowercase();
    if !KINDS.contains(&kind.as_str()) {
        return bad(format!("kind {kind:?} is not one of {}", KINDS.join(", ")));
    }
    let description = req.description.as_deref().unwrap_or("").trim();
    if description.len() > DESCRIPTION_BYTES_MAX {
        return bad(format!("a description is at most {DESCRIPTION_BYTES_MAX} bytes"));
    }
    let mut tags: Vec<String> = Vec::new();
    for t in &req.tags {
        let t = normalize_tag(t);
        if t.is_empty() || t.len() > TAG_BYTES_MAX {
            return bad(format!("a tag has 1 to {TAG_BYTES_MAX} bytes: {t:?}"));
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > TAGS_MAX {
        return bad(format!("at most {TAGS_MAX} tags"));
    }
    Ok(ShareMeta {
        name: name.to_owned(),
        title: title.to_owned(),
        search_text: text::search_text(title, description, &tags),
        kind,
        tags,
        description: description.to_owned(),
        private: req.private,
    })
}

/// A file the caller may see, the fleet, and who holds each of its chunks (in chunk order),
/// in a few queries. A private file of someone else's is "no file", like one that never was.
pub async fn file_with_holders(
    app: &App,
    caller: &Caller,
    id: &str,
) -> Result<(FileId, FileRow, Vec<NodeRow>, Vec<Vec<NodeId>>), ApiError> {
    let id = parse_file_id(id)?;
    let f = app
        .db
        .visible_file(&id, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no file {id}")))?;
    let chunks: Vec<ChunkId> = f.manifest.chunks().collect();
    // Chunk IDs carry their offset, so no chunk appears twice in one file.
    let mut held = app.db.holdings_of_chunks(&chunks).await?;
    let holders = chunks.iter().map(|c| held.remove(c).unwrap_or_default()).collect();
    Ok((id, f, app.db.nodes().await?, holders))
}

async fn file(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> Result<Json<FileView>, ApiError> {
    let (id, f, nodes, holders) = file_with_holders(&app, &caller, &id).await?;
    let shares = app.db.shares_of(&id, caller.user_id).await?;
    let online: HashMap<NodeId, String> = nodes
        .into_iter()
        .filter(|n| n.state == "online")
        .filter_map(|n| Some((n.id, n.data_addr?)))
        .collect();
    Ok(Json(FileView {
        file_id: id.to_string(),
        name: f.name,
        shares,
        size: f.manifest.size(),
        chunk_bytes: f.manifest.chunk_bytes(),
        manifest: hex::encode(&f.manifest.encode()),
        holders: holders
            .iter()
            .map(|h| h.iter().filter_map(|n| online.get(n).cloned()).collect())
            .collect(),
    }))
}

async fn file_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<FileStatus>, ApiError> {
    let (id, f, nodes, holders) = file_with_holders(&app, &caller, &id).await?;
    let online: HashSet<NodeId> = nodes.iter().filter(|n| n.state == "online").map(|n| n.id).collect();
    let chunks: Vec<ChunkStatus> = holders
        .into_iter()
        .enumerate()
        .map(|(idx, h)| {
            let (on, off): (Vec<NodeId>, Vec<NodeId>) = h.into_iter().partition(|n| online.contains(n));
            ChunkStatus {
                chunk_idx: idx as u64,
                online: on.iter().map(|n| n.to_string()).collect(),
                offline: off.iter().map(|n| n.to_string()).collect(),
            }
        })
        .collect();
    let at_target = chunks
        .iter()
        .filter(|c| c.online.len() >= REPLICAS_TARGET as usize)
        .count() as u64;
    let availability = chunks
        .iter()
        .map(|c| c.online.len() as u32)
        .min()
        .unwrap_or(REPLICAS_TARGET);
    Ok(Json(FileStatus {
        file_id: id.to_string(),
        name: f.name,
        size: f.manifest.size(),
        n_chunks: f.manifest.n_chunks() as u64,
        replicas_target: REPLICAS_TARGET,
        chunks_at_target: at_target,
        availability,
        chunks,
    }))
}

async fn delete_file(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_file_id(&id)?;
    if app.db.visible_file(&id, caller.user_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no file {id}")));
    }
    // Your own shares go; an admin's delete takes everyone's. The bytes are freed only when
    // nobody shares the file any more.
    let (removed, file_removed) = app.db.unshare(&id, caller.user_id, caller.is_admin).await?;
    if removed == 0 {
        return Err(ApiError::Forbidden);
    }
    tracing::info!(file = %id, shares_removed = removed, file_removed, "unshared");
    app.touch_all();
    Ok(StatusCode::NO_CONTENT)
}

async fn repair(State(app): State<Arc<App>>, _caller: Caller) -> Json<RepairView> {
    Json(repair_view(&app))
}

pub fn repair_view(app: &App) -> RepairView {
    let r = app.repair.lock().expect("repair lock");
    RepairView {
        under_replicated: r.under_replicated,
        over_replicated: r.over_replicated,
        unavailable: r.unavailable,
        orders_in_flight: r.in_flight.len() as u64,
        orders_done: r.done,
        orders_failed: r.failed,
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let nodes = app.db.nodes().await?;
    let g = Gauges {
        nodes_online: nodes.iter().filter(|n| n.state == "online").count() as u64,
        nodes_offline: nodes.iter().filter(|n| n.state == "offline").count() as u64,
        files: app.db.count(Counted::Files).await? as u64,
        chunks: app.db.count(Counted::Chunks).await? as u64,
        holdings: app.db.count(Counted::Holdings).await? as u64,
        repair: repair_view(&app),
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&g),
    )
        .into_response())
}
