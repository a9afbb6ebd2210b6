//! The streaming gateway: `GET|HEAD /api/v1/files/{id}/content[?download=1]`, so a browser
//! can play, seek in and download a file through the controller (feature 13).
//!
//! Contract (docs/dashboard.md, "Content"): auth and visibility as `GET /api/v1/files/{id}`
//! (a private file is 404 to all but its sharers); HTTP Range per RFC 9110 (see
//! [`range`]: one range per answer, several ranges coalesced into one covering span);
//! the strong ETag is the file ID (`If-None-Match` → 304, `If-Range`); `Content-Type` from
//! the name and kind ([`media`]); `X-Content-Type-Options: nosniff` and a sandboxing CSP on
//! every answer, so nothing shared can run as a page on the dashboard's origin.
//!
//! A GET fetches only the chunks its range covers, verified, from the online holders
//! ([`fetch`]), and streams them in order. The first chunk, unless cached, comes through
//! the block path ([`fetch::Fetcher::chunk_part`]): verified 16 KiB blocks from the range's
//! start, so the first byte leaves after one block, not one chunk; the others come whole while at most [`READ_AHEAD_CHUNKS`] chunks are
//! fetched or waiting ahead of what was sent, never past the range's end. So an open-ended
//! `bytes=X-` that the browser abandons costs a few chunks, not the file. If no holder can
//! give a chunk, the body is cut short (the client sees a truncated transfer) and it is
//! logged. Nothing here writes to appliances; reads need no grant.
//!
//! History: a GET from byte 0 that is not `download=1` records a `view`, at most one per
//! user and file per [`VIEW_INTERVAL`]; a `download=1` GET of the whole file records a
//! `download` once its last byte is handed to the connection.

mod fetch;
mod media;
mod meta;
mod range;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use trove_common::{ChunkId, FileId, Manifest, NodeId};

use crate::api::{ApiError, parse_file_id};
use crate::app::{App, now_s};
use fetch::{FetchError, Fetcher, Holder};
use range::Wanted;

/// Chunks fetched or waiting ahead of the send position, the one being sent included.
pub const READ_AHEAD_CHUNKS: usize = 8;
/// Verified pieces of the first chunk waiting for the HTTP body to take them.
const PIECES_QUEUED_MAX: usize = 16;
/// At most one `view` event per user and file this often.
pub const VIEW_INTERVAL: Duration = Duration::from_secs(600);
/// Views remembered for [`VIEW_INTERVAL`]; past this, the oldest are forgotten.
const VIEWS_REMEMBERED_MAX: usize = 1 << 16;
/// What every gateway answer forbids if it is opened as a document: no script, no plugin,
/// no same-origin access (an SVG or PDF opened directly stays inert).
const CSP: &str = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";

/// The gateway's state: one per process (one controller per process).
struct Gateway {
    fetcher: Fetcher,
    /// Visibility, nodes and holders, cached briefly ([`meta`] says for how long and why).
    meta: meta::Meta,
    /// (user, file) → when its last `view` was recorded.
    views: Mutex<HashMap<(i64, FileId), Instant>>,
}

fn gateway() -> &'static Gateway {
    static G: OnceLock<Gateway> = OnceLock::new();
    G.get_or_init(|| Gateway {
        fetcher: Fetcher::new(),
        meta: meta::Meta::new(),
        views: Mutex::new(HashMap::new()),
    })
}

/// What the gateway is fetching from appliances now, for the fleet page: per appliance, the
/// bytes it delivered to the gateway in the last whole second plus the bytes asked of it and
/// not yet received. Appliances with nothing moving are left out; sorted by node ID.
pub fn active_transfers() -> Vec<(NodeId, u64)> {
    gateway().fetcher.live()
}

/// The local addresses of the gateway's open connections to appliances (they report them
/// as accepted from there), so the fleet page does not draw its fetches a second time as
/// downloads by a client.
pub fn connection_addrs() -> std::collections::HashSet<std::net::SocketAddr> {
    gateway().fetcher.local_addrs()
}

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/v1/files/{id}/content", get(content).head(content))
}

#[derive(Deserialize)]
struct ContentQuery {
    download: Option<String>,
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Who may see what, as the `Caller` extractor and the file routes decide it (same
/// answers, same counters), except that a (token, file) answer is reused for at most
/// [`meta::VISIBLE_TTL`] (see [`meta`]): a repeated request costs no database round trip.
async fn visible_to(app: &App, method: &Method, headers: &HeaderMap, id: &str) -> Result<Arc<meta::Visible>, ApiError> {
    let token = crate::api::request_token(method, headers);
    let parsed = parse_file_id(id);
    // A cache key only, never stored anywhere else.
    let key = token.map(|t| blake3::derive_key("trove/v1 gateway visibility cache key", t.as_bytes()));
    if let (Some(key), Ok(file)) = (key, &parsed)
        && let Some(v) = gateway().meta.fresh(key, *file)
    {
        app.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
        return Ok(v);
    }
    let caller = crate::api::caller_of_token(app, token).await?;
    let (key, file) = (key.expect("a caller has a token"), parsed?);
    gateway()
        .meta
        .visible(app, key, caller.user_id, &caller.name, file)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no file {file}")))
}

async fn content(
    State(app): State<Arc<App>>,
    method: Method,
    Path(id): Path<String>,
    Query(q): Query<ContentQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.metrics.gateway_requests.fetch_add(1, Ordering::Relaxed);
    let download = q.download.as_deref().is_some_and(|d| d == "1" || d == "true");
    let file = visible_to(&app, &method, &headers, &id).await?;
    let id = file.manifest.file_id();
    let len = file.manifest.size();
    let etag = range::etag(&id.to_string());

    let mut common = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        // Every value set here is ASCII we built ourselves.
        if let Ok(v) = HeaderValue::from_str(value) {
            common.insert(name, v);
        }
    };
    set(header::ACCEPT_RANGES, "bytes");
    set(header::ETAG, &etag);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::CONTENT_SECURITY_POLICY, CSP);
    // The bytes behind an ID never change, but who may see them can, and one browser may be
    // used by several people: a browser may keep the bytes but must ask again each time
    // (a cheap 304 once the visibility check passes), and shared caches keep nothing.
    set(header::CACHE_CONTROL, "private, no-cache");

    if header_str(&headers, header::IF_NONE_MATCH).is_some_and(|h| range::none_match(h, &etag)) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let wanted = match header_str(&headers, header::RANGE) {
        Some(r) if header_str(&headers, header::IF_RANGE).is_none_or(|h| range::if_range_holds(h, &etag)) => {
            range::parse(r, len)
        }
        _ => Wanted::All,
    };
    let Some((start, end)) = wanted.span(len) else {
        set(header::CONTENT_RANGE, &format!("bytes */{len}"));
        return Ok((StatusCode::RANGE_NOT_SATISFIABLE, common).into_response());
    };

    let m = media::media_of(&file.name, &file.kind);
    set(header::CONTENT_TYPE, m.content_type);
    set(
        header::CONTENT_DISPOSITION,
        &media::disposition(&file.name, download || m.attachment_only),
    );
    set(header::CONTENT_LENGTH, &(end - start).to_string());
    let status = match wanted {
        Wanted::Part { start, end } => {
            set(header::CONTENT_RANGE, &format!("bytes {start}-{end}/{len}"));
            StatusCode::PARTIAL_CONTENT
        }
        _ => StatusCode::OK,
    };
    if method == Method::HEAD {
        return Ok((status, common).into_response());
    }

    // History feeds recommendations, so another site must not be able to write it by
    // linking a logged-in browser here (the session cookie is SameSite=Lax, so it rides on
    // top-level navigations). Browsers say where a request came from; curl and the CLI
    // send no `Sec-Fetch-Site` and use a bearer token anyway.
    let counts = header_str(&headers, header::HeaderName::from_static("sec-fetch-site"))
        .is_none_or(|site| site == "same-origin" || site == "none");
    let on_complete = (counts && download && start == 0 && end == len).then_some((file.user_id, id));
    let mut transfer = Transfer::new(app.clone(), file.manifest.clone(), start, end, on_complete).await?;
    // Start fetching now, so the first chunk is on its way while the headers go out.
    transfer.read_ahead();
    // Only a stream that can start counts as a view.
    if counts && start == 0 && !download {
        record_view(&app, file.user_id, id);
    }
    let body = Body::from_stream(futures_util::stream::unfold(transfer, |mut t| async move {
        t.next().await.map(|item| (item, t))
    }));
    Ok((status, common, body).into_response())
}

/// Records a `view` unless this user viewed this file less than [`VIEW_INTERVAL`] ago.
fn record_view(app: &Arc<App>, user_id: i64, file: FileId) {
    let now = Instant::now();
    {
        let mut views = gateway().views.lock().expect("views lock");
        if views
            .get(&(user_id, file))
            .is_some_and(|t| now.duration_since(*t) < VIEW_INTERVAL)
        {
            return;
        }
        if views.len() >= VIEWS_REMEMBERED_MAX {
            views.retain(|_, t| now.duration_since(*t) < VIEW_INTERVAL);
            if views.len() >= VIEWS_REMEMBERED_MAX {
                views.clear();
            }
        }
        views.insert((user_id, file), now);
    }
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = app.db.add_event(user_id, &file, "view", now_s()).await {
            tracing::error!(error = %format!("{e:#}"), file = %file, "gateway: recording a view failed");
        }
    });
}

/// One GET's body: bytes `start..end` of a file, chunk by chunk, with read-ahead.
struct Transfer {
    app: Arc<App>,
    manifest: Arc<Manifest>,
    start: u64,
    end: u64,
    /// Online holders per chunk, from chunk `first` on.
    holders: Arc<Vec<Vec<Holder>>>,
    first: usize,
    /// The next chunk to send, the next to start fetching, one past the last to send.
    next_send: usize,
    next_fetch: usize,
    last: usize,
    /// Fetches under way for chunks `next_send..next_fetch`, in order.
    pending: VecDeque<Pending>,
    /// Body bytes handed out so far.
    sent: u64,
    /// True while the first chunk's first verified piece is on its way through the block
    /// path: read-ahead waits, so nothing competes with it for the appliance or the CPU.
    first_piece_due: bool,
    /// (user, file) to record a `download` for once the last byte is out.
    on_complete: Option<(i64, FileId)>,
    failed: bool,
}

impl Transfer {
    /// Looks up who holds the chunks of `start..end`; refuses (503) if some chunk that is
    /// not cached has no online holder, before a byte is promised.
    async fn new(
        app: Arc<App>,
        manifest: Arc<Manifest>,
        start: u64,
        end: u64,
        on_complete: Option<(i64, FileId)>,
    ) -> Result<Transfer, ApiError> {
        let span = manifest.chunks_for_range(start, end);
        let chunks: Vec<ChunkId> = span.clone().map(|i| manifest.chunk(i)).collect();
        let meta = &gateway().meta;
        let (held, online) = tokio::try_join!(meta.holders(&app, &manifest, span.clone()), meta.online(&app))?;
        let mut holders = Vec::with_capacity(chunks.len());
        for (k, (c, held)) in chunks.iter().zip(held).enumerate() {
            let mut h: Vec<Holder> = held
                .into_iter()
                .filter_map(|node| {
                    Some(Holder {
                        node,
                        addr: *online.get(&node)?,
                    })
                })
                .collect();
            if h.is_empty() && !gateway().fetcher.is_cached(c) {
                return Err(ApiError::Unavailable(format!(
                    "chunk {} of this file has no online appliance holding it",
                    span.start + k
                )));
            }
            // Spread consecutive chunks over the holders.
            if !h.is_empty() {
                let r = (span.start + k) % h.len();
                h.rotate_left(r);
            }
            holders.push(h);
        }
        Ok(Transfer {
            app,
            manifest,
            start,
            end,
            holders: Arc::new(holders),
            first: span.start,
            next_send: span.start,
            next_fetch: span.start,
            last: span.end,
            pending: VecDeque::new(),
            sent: 0,
            first_piece_due: false,
            on_complete,
            failed: false,
        })
    }

    /// Records the `download` this transfer completes, if it is one.
    fn completed(&mut self) {
        if let Some((user, file)) = self.on_complete.take() {
            let app = self.app.clone();
            tokio::spawn(async move {
                if let Err(e) = app.db.add_event(user, &file, "download", now_s()).await {
                    tracing::error!(error = %format!("{e:#}"), file = %file, "gateway: recording a download failed");
                }
            });
        }
    }

    /// Starts fetching chunks up to [`READ_AHEAD_CHUNKS`] ahead of the send position.
    fn read_ahead(&mut self) {
        while self.next_fetch < self.last
            && self.next_fetch < self.next_send + READ_AHEAD_CHUNKS
            && !self.first_piece_due
        {
            let idx = self.next_fetch;
            let chunk = self.manifest.chunk(idx);
            let (app, holders, k) = (self.app.clone(), self.holders.clone(), idx - self.first);
            let in_flight = InFlight::new(app.clone());
            if idx == self.first && !gateway().fetcher.is_cached(&chunk) {
                let offset = chunk.offset();
                let want = (self.start.max(offset) - offset) as u32
                    ..(self.end.min(offset + u64::from(chunk.len())) - offset) as u32;
                let (tx, rx) = mpsc::channel(PIECES_QUEUED_MAX);
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    gateway()
                        .fetcher
                        .chunk_part(&app.metrics, chunk, &holders[k], want, &tx)
                        .await
                });
                self.pending.push_back(Pending::Parts { rx });
                self.first_piece_due = true;
            } else {
                self.pending.push_back(Pending::Whole(tokio::spawn(async move {
                    let _in_flight = in_flight;
                    gateway().fetcher.chunk(&app.metrics, chunk, &holders[k]).await
                })));
            }
            self.next_fetch += 1;
        }
    }

    /// The next piece of the body; `None` at the end, after an error too.
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.failed {
                return None;
            }
            self.read_ahead();
            let idx = self.next_send;
            let got = match self.pending.front_mut() {
                None => {
                    // An empty file: nothing to send, and it is complete.
                    self.completed();
                    return None;
                }
                Some(Pending::Whole(handle)) => {
                    let got = match handle.await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("fetch task failed: {e}")),
                    };
                    self.pending.pop_front();
                    self.next_send += 1;
                    got.map(|bytes| {
                        let offset = self.manifest.chunk(idx).offset();
                        let lo = (self.start.max(offset) - offset) as usize;
                        let hi = (self.end.min(offset + bytes.len() as u64) - offset) as usize;
                        bytes.slice(lo..hi)
                    })
                }
                Some(Pending::Parts { rx, .. }) => match rx.recv().await {
                    Some(got) => got.map_err(|e| e.to_string()),
                    None => {
                        // This chunk's pieces are all out.
                        self.pending.pop_front();
                        self.next_send += 1;
                        continue;
                    }
                },
            };
            match got {
                Ok(piece) => {
                    self.first_piece_due = false;
                    if piece.is_empty() {
                        continue;
                    }
                    self.sent += piece.len() as u64;
                    self.app
                        .metrics
                        .gateway_bytes_sent
                        .fetch_add(piece.len() as u64, Ordering::Relaxed);
                    // Hyper stops asking once Content-Length bytes are out, so the last piece
                    // is where the transfer completes, not the end of the stream.
                    if self.start + self.sent == self.end {
                        self.completed();
                    }
                    return Some(Ok(piece));
                }
                Err(e) => {
                    self.failed = true;
                    tracing::error!(file = %self.manifest.file_id(), chunk_idx = idx, error = %e,
                        "gateway: cannot get a chunk; cutting the response short");
                    return Some(Err(std::io::Error::other(e)));
                }
            }
        }
    }
}

/// A fetch under way for one chunk of a transfer.
enum Pending {
    /// The whole chunk, verified.
    Whole(JoinHandle<Result<Bytes, FetchError>>),
    /// Verified pieces of the part the transfer needs, in order, from the block path; the
    /// channel closes after the last.
    /// Its task is not kept: it ends by itself once its chunk is complete.
    Parts {
        rx: mpsc::Receiver<Result<Bytes, FetchError>>,
    },
}

impl Pending {
    /// Stops a whole-chunk fetch; a block-path fetch finishes its chunk (see
    /// [`fetch::Fetcher::chunk_part`]: bounded, and it keeps its connection usable).
    fn abort(&self) {
        match self {
            Pending::Whole(h) => h.abort(),
            Pending::Parts { .. } => {}
        }
    }
}

/// One chunk fetch started and not yet finished or aborted, in
/// `trove_gateway_fetches_in_flight`.
struct InFlight(Arc<App>);

impl InFlight {
    fn new(app: Arc<App>) -> InFlight {
        app.metrics.gateway_fetches_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(app)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.gateway_fetches_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Transfer {
    /// An abandoned response (the browser seeked elsewhere) stops its read-ahead.
    fn drop(&mut self) {
        for p in &self.pending {
            p.abort();
        }
    }
}
