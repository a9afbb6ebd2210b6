//! Sharing from the browser: `/share` (the form) and `POST /share/upload` (the bytes).
//!
//! A browser cannot speak the data plane, so the controller does for it what `trove share`
//! does: it streams the body to a file in `DATA/uploads` (never all of it in memory), building the
//! manifest on the way, registers the share through `api::register_share` (the code behind
//! `POST /api/v1/files`), then sends each missing chunk to the appliance named for it, one
//! connection per appliance, all appliances at once, each chunk verified against its ID as
//! it is read back. The temporary file is removed however the request ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::os::unix::fs::FileExt;

use tokio::io::AsyncWriteExt;
use trove_common::api::{ApiErrorBody, KINDS, ShareRequest, ShareResponse};
use trove_common::kind::SNIFF_BYTES;
use trove_common::limits::CHUNK_BYTES_DEFAULT;
use trove_common::{ChunkId, Grant, Manifest, ManifestBuilder, hex, net};

use super::{Fields, split_tags};
use crate::api::{ApiError, Caller};
use crate::app::App;
use crate::web::{Chrome, MaybeSession, Session, render};

/// The largest file a browser may upload through the controller. Bigger files go with
/// `trove share`, which sends chunks to the appliances itself.
pub const UPLOAD_BYTES_MAX: u64 = 64 << 30;
/// Uploads spooled at once: each holds disk space in `DATA/uploads` until its chunks are out.
const UPLOADS_AT_ONCE: usize = 4;
/// Space an upload must leave free on the controller's disk (the database lives there
/// too), unless `--upload-reserve-bytes` says otherwise.
pub const SPOOL_RESERVE_BYTES: u64 = 1 << 30;
/// How often, in bytes spooled, the free space is checked again.
const SPOOL_CHECK_BYTES: u64 = 256 << 20;

static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(UPLOADS_AT_ONCE);

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/share", get(share_page)).route(
        "/share/upload",
        // The body is streamed to disk and counted against UPLOAD_BYTES_MAX here, not
        // buffered by an extractor, so the app-wide body limit does not apply.
        post(upload).layer(DefaultBodyLimit::disable()),
    )
}

#[derive(askama::Template)]
#[template(path = "share.html")]
struct SharePage {
    chrome: Chrome,
    kinds: &'static [&'static str],
    upload_max: String,
}

async fn share_page(s: Session) -> Response {
    render(&SharePage {
        chrome: s.chrome("Share a file"),
        kinds: &KINDS,
        upload_max: super::bytes_h(UPLOAD_BYTES_MAX),
    })
}

/// What an upload answers.
#[derive(serde::Serialize)]
struct Uploaded {
    file_id: String,
    url: String,
    new_file: bool,
    chunks_sent: u64,
}

fn json_error(status: StatusCode, word: &str, message: impl Into<String>) -> Response {
    let body = ApiErrorBody {
        error: word.into(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

/// A temporary file that is removed when dropped, whatever happened.
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn create(dir: &std::path::Path) -> anyhow::Result<(Spool, std::fs::File)> {
        let mut r = [0u8; 12];
        getrandom::fill(&mut r).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let path = dir.join(format!("trove-upload-{}.part", hex::encode(&r)));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok((Spool { path }, f))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove an upload's temporary file");
        }
    }
}

async fn upload(
    State(app): State<Arc<App>>,
    MaybeSession(s): MaybeSession,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    let Some(s) = s else {
        return json_error(StatusCode::UNAUTHORIZED, "unauthorized", "log in first");
    };
    if s.check_csrf_header(&app, &headers).is_err() {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "missing or wrong X-CSRF-Token: reload the page and try again",
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > UPLOAD_BYTES_MAX) {
        return too_large();
    }
    if declared.is_some_and(|n| !room_for(&app, n)) {
        return no_room();
    }
    let Ok(_slot) = UPLOADS.try_acquire() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{UPLOADS_AT_ONCE} uploads are already under way; try again in a moment"),
        );
    };
    match upload_inner(&app, &s.caller, raw.as_deref().unwrap_or(""), body).await {
        Ok(u) => Json(u).into_response(),
        Err(UploadError::TooLarge) => too_large(),
        Err(UploadError::NoRoom) => no_room(),
        Err(UploadError::Api(e)) => e.into_response(),
    }
}

fn too_large() -> Response {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "a browser upload is at most {}; use `trove share` for bigger files",
            super::bytes_h(UPLOAD_BYTES_MAX)
        ),
    )
}

/// Whether the uploads directory's file system can take `bytes` more and keep the upload
/// reserve free. Unknown free space (statvfs failed) counts as room: the write will say.
fn room_for(app: &App, bytes: u64) -> bool {
    free_bytes(&app.uploads_dir).is_none_or(|free| free >= bytes.saturating_add(app.upload_reserve_bytes))
}

fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed is a valid statvfs (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn no_room() -> Response {
    json_error(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "the controller has no room to take this upload now; use `trove share`, which sends chunks straight to the appliances",
    )
}

enum UploadError {
    TooLarge,
    NoRoom,
    Api(ApiError),
}

impl<E: Into<ApiError>> From<E> for UploadError {
    fn from(e: E) -> UploadError {
        UploadError::Api(e.into())
    }
}

fn bad(message: impl Into<String>) -> UploadError {
    UploadError::Api(ApiError::BadRequest(message.into()))
}

async fn upload_inner(app: &App, caller: &Caller, raw: &str, mut body: Body) -> Result<Uploaded, UploadError> {
    // Check what the share says before reading a byte: bad input costs nothing.
    let q = Fields::parse(raw.as_bytes());
    let kind = q.text("kind").trim().to_lowercase();
    let auto = kind.is_empty() || kind == "auto";
    let req = ShareRequest {
        manifest: String::new(),
        name: q.text("name"),
        title: q.get("title").map(str::to_owned),
        kind: Some(if auto { "other".into() } else { kind }),
        tags: q
            .all("tags")
            .chain(q.all("tag"))
            .flat_map(split_tags)
            .map(str::to_owned)
            .collect(),
        description: q.get("description").map(str::to_owned),
        private: q.checked("private"),
    };
    let mut meta = crate::api::share_meta(&req)?;

    let (spool, file) = Spool::create(&app.uploads_dir)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut builder = ManifestBuilder::new(CHUNK_BYTES_DEFAULT).context("chunk size")?;
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut size = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| bad(format!("the upload broke off: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        size += data.len() as u64;
        if size > UPLOAD_BYTES_MAX {
            return Err(UploadError::TooLarge);
        }
        // Crossing a check mark: is there still room beside the database?
        if size / SPOOL_CHECK_BYTES != (size - data.len() as u64) / SPOOL_CHECK_BYTES && !room_for(app, 0) {
            return Err(UploadError::NoRoom);
        }
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(data.len());
            head.extend_from_slice(&data[..take]);
        }
        builder.update(&data);
        if let Err(e) = file.write_all(&data).await {
            return Err(if e.kind() == std::io::ErrorKind::StorageFull {
                ApiError::InsufficientStorage("the controller's upload directory is full".into()).into()
            } else {
                anyhow::Error::from(e).context("spooling an upload").into()
            });
        }
    }
    file.flush().await.context("spooling an upload")?;
    if size == 0 {
        return Err(bad("the file is empty: there is nothing to share"));
    }
    let manifest = builder.finish();
    if auto {
        meta.kind = trove_common::kind::detect(&meta.name, &head).to_owned();
    }
    let resp = crate::api::register_share(app, caller, &meta, &manifest).await?;
    let file = Arc::new(file.into_std().await);
    let sent = send_chunks(&file, &manifest, &resp).await.map_err(|e| {
        ApiError::Unavailable(format!(
            "the file is registered but its bytes did not all reach the appliances ({e:#}); share it again"
        ))
    })?;
    drop(file);
    drop(spool);
    tracing::info!(user = %caller.name, file = %manifest.file_id(), size, kind = %meta.kind, chunks_sent = sent, "uploaded from the dashboard");
    Ok(Uploaded {
        url: format!("/f/{}", resp.file_id),
        file_id: resp.file_id,
        new_file: resp.new_file,
        chunks_sent: sent,
    })
}

/// Sends the chunks `resp` asks for, one task per appliance, each reading its chunks from
/// the spooled file and checking them against their IDs before they leave. Returns how many
/// were stored; fails with the first appliance's error after all have finished.
async fn send_chunks(file: &Arc<std::fs::File>, manifest: &Manifest, resp: &ShareResponse) -> anyhow::Result<u64> {
    let mut by_node: BTreeMap<SocketAddr, Vec<(ChunkId, Grant)>> = BTreeMap::new();
    for u in &resp.uploads {
        let idx = usize::try_from(u.chunk_idx).ok().filter(|i| *i < manifest.n_chunks());
        let idx = idx.with_context(|| format!("chunk index {} out of range", u.chunk_idx))?;
        let addr: SocketAddr = u
            .addr
            .parse()
            .with_context(|| format!("appliance address {:?}", u.addr))?;
        let grant: Grant = postcard::from_bytes(&hex::decode_vec(&u.grant).context("grant hex")?).context("grant")?;
        by_node.entry(addr).or_default().push((manifest.chunk(idx), grant));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (addr, chunks) in by_node {
        let f = file.clone();
        tasks.spawn(async move {
            let mut client = net::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            let mut sent = 0u64;
            for (chunk, grant) in chunks {
                let f = f.clone();
                let bytes = tokio::task::spawn_blocking(move || {
                    let mut bytes = vec![0u8; chunk.len() as usize];
                    f.read_exact_at(&mut bytes, chunk.offset()).map(|()| bytes)
                })
                .await?
                .context("reading the upload back")?;
                anyhow::ensure!(chunk.verify(&bytes), "the spooled upload changed under chunk {chunk}");
                client
                    .put_chunk(chunk, Some(&grant), &bytes)
                    .await
                    .with_context(|| format!("putting chunk {chunk} to {addr}"))?;
                sent += 1;
            }
            anyhow::Ok(sent)
        });
    }
    let mut sent = 0;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r.context("an upload task panicked").and_then(|r| r) {
            Ok(n) => sent += n,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}
