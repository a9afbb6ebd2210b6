//! The TCP chunk server: one task per connection, requests answered in order.
//!
//! Anything a peer sends that does not decode closes its connection with a logged reason;
//! refusals (no grant, full, unknown chunk) are answered with an error and the connection
//! goes on. Request bodies are always consumed, even when refused, so pipelined requests
//! behind a refused put stay in step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};
use trove_common::grant::GrantError;
use trove_common::net::{self, NetError};
use trove_common::wire::{self, ErrorCode, NodeStats, Request, Response};
use trove_common::{NodeId, PublicKey};

use crate::limits::{CONNECTIONS_MAX, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, IO_BUFFER_BYTES, PUTS_INFLIGHT_MAX};
use crate::store::{Store, StoreError};

/// Everything a connection needs, shared.
pub struct Node {
    pub id: NodeId,
    pub store: Arc<Store>,
    pub trusted_key: Option<PublicKey>,
    pub started: Instant,
    pub bytes_served: AtomicU64,
    pub bytes_stored: AtomicU64,
    puts: Semaphore,
}

impl Node {
    pub fn new(id: NodeId, store: Arc<Store>, trusted_key: Option<PublicKey>) -> Node {
        Node {
            id,
            store,
            trusted_key,
            started: Instant::now(),
            bytes_served: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
            puts: Semaphore::new(PUTS_INFLIGHT_MAX),
        }
    }

    fn stats(&self) -> NodeStats {
        NodeStats {
            node_id: self.id,
            version: env!("CARGO_PKG_VERSION").into(),
            chunks: self.store.n_chunks(),
            used_bytes: self.store.used_bytes(),
            capacity_bytes: self.store.capacity_bytes(),
            disk_free_bytes: self.store.disk_free_bytes(),
            quarantined: self.store.n_quarantined(),
            uptime_s: self.started.elapsed().as_secs(),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            bytes_stored: self.bytes_stored.load(Ordering::Relaxed),
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn serve(listener: TcpListener, node: Arc<Node>) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = listener.accept().await?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = CONNECTIONS_MAX, "too many connections; closing the new one");
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            match serve_connection(stream, peer, &node).await {
                Ok(()) => debug!(%peer, "connection closed"),
                Err(reason) => warn!(%peer, %reason, "closing connection"),
            }
            drop(permit);
        });
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, node: &Node) -> Result<(), NetError> {
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let mut reader = BufReader::with_capacity(IO_BUFFER_BYTES, rd);
    let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, wr);

    let mut hello = [0u8; wire::CLIENT_HELLO_BYTES];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_exact(&mut hello))
        .await
        .map_err(|_| NetError::Timeout(HANDSHAKE_TIMEOUT))??;
    let version = wire::decode_client_hello(&hello)?;
    writer.write_all(&wire::server_hello(node.id)).await?;
    writer.flush().await?;
    if version != wire::PROTOCOL_VERSION {
        // They got our hello with our version, so they can say what went wrong too.
        return Err(wire::DecodeError::VersionMismatch {
            ours: wire::PROTOCOL_VERSION,
            theirs: version,
        }
        .into());
    }
    debug!(%peer, "handshake done");

    let mut header = Vec::new();
    let mut scratch = Vec::new();
    let mut body = Vec::new();
    loop {
        let more = tokio::time::timeout(IDLE_TIMEOUT, net::read_header(&mut reader, &mut header))
            .await
            .map_err(|_| NetError::Timeout(IDLE_TIMEOUT))??;
        if !more {
            return Ok(());
        }
        let request = wire::decode_request(&header)?;
        // Bodies come right after their header; read them before answering.
        body.clear();
        let body_len = request.body_len() as usize;
        if body_len > 0 {
            body.resize(body_len, 0);
            tokio::time::timeout(IDLE_TIMEOUT, reader.read_exact(&mut body))
                .await
                .map_err(|_| NetError::Timeout(IDLE_TIMEOUT))?
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        NetError::Closed
                    } else {
                        e.into()
                    }
                })?;
        }
        let (response, out) = handle(node, request, std::mem::take(&mut body)).await;
        let send = match &out {
            Some(bytes) => &bytes[..],
            None => &[],
        };
        net::write_response(&mut writer, &mut scratch, &response, send).await?;
        if let Some(bytes) = out {
            node.bytes_served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            body = bytes; // reuse the allocation
        }
        // Answer pipelined requests in batches: flush only when nothing more is waiting.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// Answers one request; returns the response and the body to send after it.
async fn handle(node: &Node, request: Request, body: Vec<u8>) -> (Response, Option<Vec<u8>>) {
    let req = request.req();
    match request {
        Request::Get { chunk, range, .. } => {
            let (start, end) = range.map_or((0, chunk.len()), |r| (r.start(), r.end()));
            let store = node.store.clone();
            let mut buf = body;
            buf.resize((end - start) as usize, 0);
            let read =
                tokio::task::spawn_blocking(move || store.read_at(&chunk, u64::from(start), &mut buf).map(|()| buf))
                    .await;
            match read {
                Ok(Ok(buf)) => {
                    let range = wire::ByteRange::new(start, end).expect("requests carry non-empty ranges");
                    (Response::Chunk { req, range }, Some(buf))
                }
                Ok(Err(e)) => (store_error(req, e), None),
                Err(e) => (Response::error(req, ErrorCode::Internal, e.to_string()), None),
            }
        }
        Request::Put { chunk, grant, .. } => {
            let Some(key) = node.trusted_key else {
                return (
                    Response::error(req, ErrorCode::GrantInvalid, "this node trusts no grant key yet"),
                    None,
                );
            };
            let Some(grant) = grant else {
                return (
                    Response::error(
                        req,
                        ErrorCode::GrantMissing,
                        format!("writing chunk {chunk} needs a grant"),
                    ),
                    None,
                );
            };
            if grant.chunk != chunk {
                return (
                    Response::error(
                        req,
                        ErrorCode::GrantInvalid,
                        format!("grant is for {}, not {chunk}", grant.chunk),
                    ),
                    None,
                );
            }
            match grant.check(&key, now_s()) {
                Ok(()) => {}
                Err(e @ GrantError::Expired { .. }) => {
                    return (
                        Response::error(req, ErrorCode::GrantExpired, format!("grant for {chunk}: {e}")),
                        None,
                    );
                }
                Err(e) => {
                    return (
                        Response::error(req, ErrorCode::GrantInvalid, format!("grant for {chunk}: {e}")),
                        None,
                    );
                }
            }
            let _permit = node.puts.acquire().await.expect("the put semaphore is never closed");
            let store = node.store.clone();
            let len = body.len() as u64;
            match tokio::task::spawn_blocking(move || store.put(&chunk, &body)).await {
                Ok(Ok(())) => {
                    node.bytes_stored.fetch_add(len, Ordering::Relaxed);
                    debug!(chunk = %chunk, "stored");
                    (Response::Stored { req }, None)
                }
                Ok(Err(e)) => {
                    info!(chunk = %chunk, reason = %e, "put refused");
                    (store_error(req, e), None)
                }
                Err(e) => (Response::error(req, ErrorCode::Internal, e.to_string()), None),
            }
        }
        Request::Has { chunks, .. } => {
            let store = node.store.clone();
            match tokio::task::spawn_blocking(move || chunks.iter().map(|c| store.contains(c)).collect()).await {
                Ok(have) => (Response::Has { req, have }, None),
                Err(e) => (Response::error(req, ErrorCode::Internal, e.to_string()), None),
            }
        }
        Request::Inventory {
            ticket, after, limit, ..
        } => {
            let Some(key) = node.trusted_key else {
                return (
                    Response::error(req, ErrorCode::Unauthorized, "this node trusts no controller key yet"),
                    None,
                );
            };
            if let Err(e) = ticket.check(&key, node.id, now_s()) {
                return (
                    Response::error(req, ErrorCode::Unauthorized, format!("inventory ticket: {e}")),
                    None,
                );
            }
            let store = node.store.clone();
            match tokio::task::spawn_blocking(move || store.page(after.as_ref(), limit as usize)).await {
                Ok(Ok((chunks, more))) => (Response::Inventory { req, chunks, more }, None),
                Ok(Err(e)) => (store_error(req, e), None),
                Err(e) => (Response::error(req, ErrorCode::Internal, e.to_string()), None),
            }
        }
        Request::Stats { .. } => (
            Response::Stats {
                req,
                stats: node.stats(),
            },
            None,
        ),
    }
}

fn store_error(req: u32, e: StoreError) -> Response {
    let code = match &e {
        StoreError::HashMismatch(_) => ErrorCode::HashMismatch,
        StoreError::CapacityFull { .. } => ErrorCode::CapacityFull,
        StoreError::DiskFull { .. } => ErrorCode::DiskFull,
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::Io { .. } => ErrorCode::Internal,
    };
    Response::error(req, code, e.to_string())
}
