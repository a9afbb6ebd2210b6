//! The TCP chunk server: one task per connection, requests answered in order.
//!
//! Anything a peer sends that does not decode closes its connection with a logged reason;
//! refusals (no grant, full, unknown chunk) are answered with an error and the connection
//! goes on. A put is judged on its header before its body is read; a refused body is read
//! and dropped through a small buffer, so pipelined requests behind it stay in step and no
//! unauthorised client can make the node hold bytes. Chunks go out with `sendfile`; a
//! get-blocks reads its chunk once, hashes it block by block and refuses a copy that does not
//! verify, so the block chaining values it sends are always those of the chunk's ID.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};
use trove_common::blocks::{self, BlockVerifier};
use trove_common::grant::GrantError;
use trove_common::net::{self, NetError};
use trove_common::wire::{self, ByteRange, ErrorCode, NodeStats, Request, Response};
use trove_common::{ChunkId, NodeId, PublicKey};

use crate::limits::{
    BODY_TIMEOUT, CONNECTIONS_MAX, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, IO_BUFFER_BYTES, PUT_BODY_BYTES_INFLIGHT_MAX,
};
use crate::store::{self, Store, StoreError};
use crate::traffic::{Meter, Peer, Traffic};

/// Everything a connection needs, shared.
pub struct Node {
    pub id: NodeId,
    pub store: Arc<Store>,
    pub trusted_key: Option<PublicKey>,
    pub started: Instant,
    pub bytes_served: AtomicU64,
    pub bytes_stored: AtomicU64,
    /// Per-connection byte counters for the fleet view.
    pub traffic: Traffic,
    /// Bytes of put bodies held in memory at once, in [`BUDGET_UNIT_BYTES`] units.
    body_budget: Semaphore,
}

const BUDGET_UNIT_BYTES: u64 = 1024;

fn budget_units(len: u64) -> u32 {
    len.div_ceil(BUDGET_UNIT_BYTES) as u32
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
            traffic: Traffic::default(),
            body_budget: Semaphore::new(budget_units(PUT_BODY_BYTES_INFLIGHT_MAX) as usize),
        }
    }

    /// Holds `len` bytes of the in-memory body budget until the permit drops: puts and
    /// replications share it, so together they never hold more than
    /// [`PUT_BODY_BYTES_INFLIGHT_MAX`] of chunk bodies.
    pub async fn hold_body(&self, len: u64) -> tokio::sync::SemaphorePermit<'_> {
        self.body_budget
            .acquire_many(budget_units(len))
            .await
            .expect("the body budget is never closed")
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
    // A small read buffer: put bodies go straight into their vector (`net::read_body`).
    let mut reader = BufReader::with_capacity(net::READ_BUFFER_BYTES, rd);
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
    let meter = node.traffic.open(Peer {
        addr: peer,
        dialed_from: None,
    });

    let mut header = Vec::new();
    let mut scratch = Vec::new();
    loop {
        let more = tokio::time::timeout(IDLE_TIMEOUT, net::read_header(&mut reader, &mut header))
            .await
            .map_err(|_| NetError::Timeout(IDLE_TIMEOUT))??;
        if !more {
            return Ok(());
        }
        let request = wire::decode_request(&header)?;
        let req = request.req();
        let response = match request {
            Request::Get { chunk, range, .. } => {
                send_chunk(&mut writer, &mut scratch, node, &meter, req, chunk, range).await?;
                None
            }
            Request::GetBlocks { chunk, from_block, .. } => {
                send_blocks(&mut writer, &mut scratch, node, &meter, req, chunk, from_block).await?;
                None
            }
            Request::Put { chunk, grant, .. } => {
                if reader.buffer().len() < chunk.len() as usize {
                    // The body must come from the peer: send what we owe first (see below).
                    writer.flush().await?;
                }
                Some(receive_put(&mut reader, node, &meter, req, chunk, grant).await?)
            }
            other => Some(answer(node, other).await),
        };
        if let Some(response) = response {
            net::write_response(&mut writer, &mut scratch, &response, &[]).await?;
        }
        // Answer pipelined requests in batches, but never wait for the peer while holding
        // replies: a client may hold back the rest of its pipeline until it sees them (one
        // that flushes only when its queue runs dry does), and then each would wait for the
        // other until a timeout. So flush unless the next header is already here whole.
        if !header_buffered(reader.buffer()) {
            writer.flush().await?;
        }
    }
}

/// True when `buffered` starts with a whole frame header, so reading it cannot wait.
fn header_buffered(buffered: &[u8]) -> bool {
    match buffered.first_chunk::<{ wire::LEN_PREFIX_BYTES }>() {
        Some(prefix) => {
            let header_len = u32::from_le_bytes(*prefix) as usize;
            buffered.len() - prefix.len() >= header_len
        }
        None => false,
    }
}

/// Sends a chunk (or part of one) straight from the page cache with `sendfile`, so serving
/// costs no copy through user space.
async fn send_chunk(
    writer: &mut BufWriter<OwnedWriteHalf>,
    scratch: &mut Vec<u8>,
    node: &Node,
    meter: &Meter<'_>,
    req: u32,
    chunk: ChunkId,
    range: Option<ByteRange>,
) -> Result<(), NetError> {
    let range = range.unwrap_or_else(|| ByteRange::new(0, chunk.len()).expect("chunks are never empty"));
    let file = match node.store.open_chunk(&chunk) {
        Ok(f) => f,
        Err(e) => return net::write_response(writer, scratch, &store_error(req, e), &[]).await,
    };
    send_from_file(
        writer,
        scratch,
        node,
        meter,
        &Response::Chunk { req, range },
        FileBody {
            file: &file,
            range,
            with_header: 0,
        },
    )
    .await
}

/// A reply's body, sent from a chunk file.
struct FileBody<'a> {
    file: &'a std::fs::File,
    range: ByteRange,
    /// Bytes of it that leave in the same segment as the header.
    with_header: u32,
}

/// Sends `resp`'s header, then `body` with `sendfile`.
async fn send_from_file(
    writer: &mut BufWriter<OwnedWriteHalf>,
    scratch: &mut Vec<u8>,
    node: &Node,
    meter: &Meter<'_>,
    resp: &Response,
    body: FileBody<'_>,
) -> Result<(), NetError> {
    let FileBody {
        file,
        range,
        with_header,
    } = body;
    let start = u64::from(range.start());
    let (len, early) = (range.len() as usize, with_header.min(range.len()) as usize);
    // Corked, the header and the body's start leave in one segment: the reader wakes once,
    // with bytes it can use. Only that far: corked for a whole chunk, a stream ran at two
    // thirds of the speed.
    if early > 0 {
        set_cork(writer.get_ref().as_ref(), true);
    }
    net::write_response_header(writer, scratch, resp).await?;
    // The header must be in the socket before the body goes around the buffer.
    writer.flush().await?;
    let stream: &TcpStream = writer.get_ref().as_ref();
    let sent = sendfile_all(stream, file, start, early, meter).await;
    if early > 0 {
        set_cork(stream, false);
    }
    sent?;
    sendfile_all(stream, file, start + early as u64, len - early, meter).await?;
    node.bytes_served.fetch_add(u64::from(range.len()), Ordering::Relaxed);
    Ok(())
}

/// Answers a get-blocks: the chaining values, then blocks `from_block..`. With the CVs the
/// store keeps beside the chunk (checked against its ID here), the blocks go straight from
/// the page cache with `sendfile`, like a plain get: nothing is read or hashed first, so the
/// first block leaves at once. Without them (an older troved stored it), the chunk is read
/// once (its bytes count against the in-memory budget for put bodies), every block's CV
/// computed and checked against the chunk ID (a copy damaged on disk is refused with
/// `HashMismatch`, never sent), and kept for next time. Either way the receiver verifies
/// every block against the CVs, so a copy damaged since it was stored is caught there.
async fn send_blocks(
    writer: &mut BufWriter<OwnedWriteHalf>,
    scratch: &mut Vec<u8>,
    node: &Node,
    meter: &Meter<'_>,
    req: u32,
    chunk: ChunkId,
    from_block: u32,
) -> Result<(), NetError> {
    let file = match node.store.open_chunk(&chunk) {
        Ok(f) => f,
        Err(e) => return net::write_response(writer, scratch, &store_error(req, e), &[]).await,
    };
    if let Some(v) = store::stored_cvs(&file, &chunk) {
        let range = blocks_from(&v, from_block);
        let resp = Response::Blocks {
            req,
            range,
            cvs: v.cvs().to_vec(),
        };
        // The first block goes with the CVs: the reader needs both before its first byte.
        let body = FileBody {
            file: &file,
            range,
            with_header: blocks::BLOCK_BYTES,
        };
        return send_from_file(writer, scratch, node, meter, &resp, body).await;
    }
    let _budget = node.hold_body(u64::from(chunk.len())).await;
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; chunk.len() as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let checked = BlockVerifier::new(chunk, blocks::block_cvs(&chunk, &bytes));
        if let Ok(v) = &checked {
            store::store_cvs(&file, v.cvs());
        }
        Ok((bytes, checked))
    })
    .await;
    let (bytes, checked) = match read {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => {
            let resp = Response::error(req, ErrorCode::Internal, format!("reading chunk {chunk}: {e}"));
            return net::write_response(writer, scratch, &resp, &[]).await;
        }
        Err(e) => {
            return net::write_response(
                writer,
                scratch,
                &Response::error(req, ErrorCode::Internal, e.to_string()),
                &[],
            )
            .await;
        }
    };
    let v = match checked {
        Ok(v) => v,
        Err(e) => {
            warn!(chunk = %chunk, reason = %e, "stored copy does not verify; refusing to serve its blocks");
            let resp = Response::error(req, ErrorCode::HashMismatch, format!("stored copy of {chunk}: {e}"));
            return net::write_response(writer, scratch, &resp, &[]).await;
        }
    };
    let range = blocks_from(&v, from_block);
    let resp = Response::Blocks {
        req,
        range,
        cvs: v.cvs().to_vec(),
    };
    net::write_response(writer, scratch, &resp, &bytes[range.start() as usize..]).await?;
    meter.sent(u64::from(range.len()));
    node.bytes_served.fetch_add(u64::from(range.len()), Ordering::Relaxed);
    Ok(())
}

/// The bytes of blocks `from_block..` to the chunk's end.
fn blocks_from(v: &BlockVerifier, from_block: u32) -> ByteRange {
    let start = v.block_range(from_block).start;
    // Invariant: the request decoded, so `from_block` is a block of this non-empty chunk.
    ByteRange::new(start, v.chunk().len()).expect("from_block lies inside the chunk")
}

/// TCP_CORK on or off: while on, the kernel sends only full segments; off, it sends what is
/// left at once. Best effort: uncorked, the bytes only leave in more segments.
fn set_cork(stream: &TcpStream, on: bool) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = on.into();
    // SAFETY: a valid socket and a c_int option value of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn sendfile_all(
    stream: &TcpStream,
    file: &std::fs::File,
    mut offset: u64,
    mut len: usize,
    meter: &Meter<'_>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while len > 0 {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut off = offset as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the call and `off` is a
            // valid, writable off_t.
            let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "chunk file shrank while sending",
                ));
            }
            Ok(n) => {
                offset += n as u64;
                len -= n;
                meter.sent(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Decides on a put from its header alone, then reads or discards its body.
///
/// The grant, the capacity and whether the chunk is already held are all checked *before*
/// the body is read, so a client without a grant cannot make the node hold its bytes;
/// and the bytes of bodies held at once are capped by `Node::body_budget`.
async fn receive_put(
    reader: &mut BufReader<OwnedReadHalf>,
    node: &Node,
    meter: &Meter<'_>,
    req: u32,
    chunk: ChunkId,
    grant: Option<trove_common::Grant>,
) -> Result<Response, NetError> {
    let len = u64::from(chunk.len());
    let refusal = match admit_put(node, req, chunk, grant.as_ref()) {
        Ok(Admission::Write) => None,
        Ok(Admission::AlreadyHeld) => Some(Response::Stored { req }),
        Err(resp) => Some(resp),
    };
    if let Some(resp) = refusal {
        discard(reader, len).await?;
        meter.received(len);
        return Ok(resp);
    }
    let _budget = node.hold_body(len).await;
    let mut body = Vec::new();
    tokio::time::timeout(BODY_TIMEOUT, net::read_body(reader, chunk.len() as usize, &mut body))
        .await
        .map_err(|_| NetError::Timeout(BODY_TIMEOUT))??;
    meter.received(len);
    let store = node.store.clone();
    match tokio::task::spawn_blocking(move || store.put(&chunk, &body)).await {
        Ok(Ok(())) => {
            node.bytes_stored.fetch_add(len, Ordering::Relaxed);
            debug!(chunk = %chunk, "stored");
            Ok(Response::Stored { req })
        }
        Ok(Err(e)) => {
            info!(chunk = %chunk, reason = %e, "put refused");
            Ok(store_error(req, e))
        }
        Err(e) => Ok(Response::error(req, ErrorCode::Internal, e.to_string())),
    }
}

enum Admission {
    Write,
    AlreadyHeld,
}

fn admit_put(
    node: &Node,
    req: u32,
    chunk: ChunkId,
    grant: Option<&trove_common::Grant>,
) -> Result<Admission, Response> {
    let Some(key) = node.trusted_key else {
        return Err(Response::error(
            req,
            ErrorCode::GrantInvalid,
            "this node trusts no grant key yet",
        ));
    };
    let Some(grant) = grant else {
        return Err(Response::error(
            req,
            ErrorCode::GrantMissing,
            format!("writing chunk {chunk} needs a grant"),
        ));
    };
    if grant.chunk != chunk {
        return Err(Response::error(
            req,
            ErrorCode::GrantInvalid,
            format!("grant is for {}, not {chunk}", grant.chunk),
        ));
    }
    match grant.check(&key, now_s()) {
        Ok(()) => {}
        Err(e @ GrantError::Expired { .. }) => {
            return Err(Response::error(
                req,
                ErrorCode::GrantExpired,
                format!("grant for {chunk}: {e}"),
            ));
        }
        Err(e) => {
            return Err(Response::error(
                req,
                ErrorCode::GrantInvalid,
                format!("grant for {chunk}: {e}"),
            ));
        }
    }
    match node.store.admit(&chunk) {
        Ok(true) => Ok(Admission::AlreadyHeld),
        Ok(false) => Ok(Admission::Write),
        Err(e) => Err(store_error(req, e)),
    }
}

/// Reads and drops `len` body bytes through a small buffer, keeping pipelined requests in step.
async fn discard(reader: &mut BufReader<OwnedReadHalf>, len: u64) -> Result<(), NetError> {
    let copied = tokio::time::timeout(
        BODY_TIMEOUT,
        tokio::io::copy(&mut reader.take(len), &mut tokio::io::sink()),
    )
    .await
    .map_err(|_| NetError::Timeout(BODY_TIMEOUT))??;
    if copied < len {
        return Err(NetError::Closed);
    }
    Ok(())
}

/// Answers the requests that carry no body and send none back.
async fn answer(node: &Node, request: Request) -> Response {
    let req = request.req();
    match request {
        Request::Get { .. } | Request::Put { .. } | Request::GetBlocks { .. } => {
            unreachable!("handled by send_chunk, receive_put and send_blocks")
        }
        Request::Has { chunks, .. } => {
            let store = node.store.clone();
            match tokio::task::spawn_blocking(move || chunks.iter().map(|c| store.contains(c)).collect()).await {
                Ok(have) => Response::Has { req, have },
                Err(e) => Response::error(req, ErrorCode::Internal, e.to_string()),
            }
        }
        Request::Inventory {
            ticket, after, limit, ..
        } => {
            let Some(key) = node.trusted_key else {
                return Response::error(req, ErrorCode::Unauthorized, "this node trusts no controller key yet");
            };
            if let Err(e) = ticket.check(&key, node.id, now_s()) {
                return Response::error(req, ErrorCode::Unauthorized, format!("inventory ticket: {e}"));
            }
            let store = node.store.clone();
            match tokio::task::spawn_blocking(move || store.page(after.as_ref(), limit as usize)).await {
                Ok(Ok((chunks, more))) => Response::Inventory { req, chunks, more },
                Ok(Err(e)) => store_error(req, e),
                Err(e) => Response::error(req, ErrorCode::Internal, e.to_string()),
            }
        }
        Request::Stats { .. } => Response::Stats {
            req,
            stats: node.stats(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use trove_common::Manifest;
    use trove_common::blocks::{BLOCK_BYTES, n_blocks};

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect()
    }

    /// A real server on 127.0.0.1 over a store holding every chunk of `bytes`.
    async fn serving(dir: &std::path::Path, bytes: &[u8], chunk_bytes: u32) -> (SocketAddr, Manifest, Arc<Store>) {
        let m = Manifest::of_bytes(bytes, chunk_bytes).unwrap();
        let (store, _) = Store::open(dir, 1 << 30, 0).unwrap();
        let store = Arc::new(store);
        for c in m.chunks() {
            store
                .put(&c, &bytes[c.offset() as usize..][..c.len() as usize])
                .unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Arc::new(Node::new(NodeId([9; 16]), store.clone(), None));
        tokio::spawn(serve(listener, node));
        (addr, m, store)
    }

    /// Pins the get-blocks answer: from any block, the chaining values check against the
    /// chunk ID and every block after it arrives verified, the blocks before it verify from a
    /// ranged get, and the connection stays in step for the next request.
    #[tokio::test]
    async fn get_blocks_serves_verifiable_blocks_from_any_block() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(2 * (1 << 20) + 5 * BLOCK_BYTES as usize + 77);
        let (addr, m, _) = serving(dir.path(), &bytes, 1 << 20).await;
        let mut c = net::connect(addr).await.unwrap();
        for c_idx in 0..m.n_chunks() {
            let chunk = m.chunk(c_idx);
            let body = &bytes[chunk.offset() as usize..][..chunk.len() as usize];
            let n = n_blocks(chunk.len());
            for from in [0, 1, n / 2, n - 1] {
                let v = c.get_blocks(chunk, from).await.unwrap();
                assert_eq!(v.n_blocks(), n);
                let mut buf = Vec::new();
                for i in from..n {
                    c.read_block(&v, i, &mut buf).await.unwrap();
                    let r = v.block_range(i);
                    assert_eq!(buf, body[r.start as usize..r.end as usize]);
                }
                if from > 0 {
                    let front = c.get_verified_blocks(&v, 0..from).await.unwrap();
                    assert_eq!(front, body[..v.block_range(from).start as usize]);
                }
            }
        }
        // A one-chunk file (root) of less than a block.
        let small = data(3000);
        let dir2 = tempfile::tempdir().unwrap();
        let (addr2, m2, _) = serving(dir2.path(), &small, 1 << 20).await;
        let mut c2 = net::connect(addr2).await.unwrap();
        let v = c2.get_blocks(m2.chunk(0), 0).await.unwrap();
        let mut buf = Vec::new();
        c2.read_block(&v, 0, &mut buf).await.unwrap();
        assert_eq!(buf, small);
        // Still in step after all that.
        assert_eq!(c.stats().await.unwrap().node_id, NodeId([9; 16]));
    }

    /// The file of `chunk` in the store under `dir` (docs/on-disk.md:
    /// chunks/<first hash byte>/<chunk ID>).
    fn chunk_path(dir: &std::path::Path, chunk: &ChunkId) -> std::path::PathBuf {
        dir.join("chunks")
            .join(format!("{:02x}", chunk.hash().0[0]))
            .join(chunk.to_string())
    }

    /// Flips one bit of the byte at `at` of a stored chunk, as a failing disk would.
    fn damage(dir: &std::path::Path, chunk: &ChunkId, original: u8, at: u64) {
        use std::os::unix::fs::FileExt;
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(chunk_path(dir, chunk))
            .unwrap();
        w.write_all_at(&[original ^ 0x10], at).unwrap();
    }

    /// Removes the stored block CVs of a chunk, as if an older troved had stored it.
    fn forget_cvs(dir: &std::path::Path, chunk: &ChunkId) {
        let path = std::ffi::CString::new(chunk_path(dir, chunk).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: both arguments are C strings.
        assert_eq!(
            unsafe { libc::removexattr(path.as_ptr(), c"user.trove.cvs".as_ptr()) },
            0
        );
    }

    fn stored_cvs_of(dir: &std::path::Path, chunk: &ChunkId) -> Option<BlockVerifier> {
        store::stored_cvs(&std::fs::File::open(chunk_path(dir, chunk)).unwrap(), chunk)
    }

    /// Pins: a chunk it does not hold is an error reply (the connection goes on); a copy
    /// damaged on disk is never accepted: with its stored CVs the blocks go out unread and
    /// the receiver refuses the damaged one; without them the node hashes the copy first and
    /// refuses it with `HashMismatch`.
    #[tokio::test]
    async fn get_blocks_refuses_missing_and_damaged_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(3 * (1 << 20));
        let (addr, m, _) = serving(dir.path(), &bytes, 1 << 20).await;
        let mut c = net::connect(addr).await.unwrap();
        let other = Manifest::of_bytes(&data(5), 1 << 20).unwrap().chunk(0);
        match c.get_blocks(other, 0).await {
            Err(NetError::Remote {
                code: ErrorCode::NotFound,
                ..
            }) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
        let victim = m.chunk(1);
        let at = 40 * u64::from(BLOCK_BYTES) + 3;
        damage(dir.path(), &victim, bytes[(victim.offset() + at) as usize], at);
        let v = c.get_blocks(victim, 10).await.unwrap();
        let mut buf = Vec::new();
        for i in 10..40 {
            c.read_block(&v, i, &mut buf).await.unwrap();
        }
        match c.read_block(&v, 40, &mut buf).await {
            Err(NetError::HashMismatch(chunk)) => assert_eq!(chunk, victim),
            other => panic!("expected the damaged block to fail verification, got {other:?}"),
        }

        // The rest of that reply is still on its way: a new connection.
        let mut c = net::connect(addr).await.unwrap();
        forget_cvs(dir.path(), &victim);
        match c.get_blocks(victim, 10).await {
            Err(NetError::Remote {
                code: ErrorCode::HashMismatch,
                ..
            }) => {}
            other => panic!("expected HashMismatch, got {other:?}"),
        }
        assert!(
            stored_cvs_of(dir.path(), &victim).is_none(),
            "no CVs are kept for a damaged copy"
        );
        // The undamaged chunks are still served on the same connection.
        let v = c.get_blocks(m.chunk(2), 63).await.unwrap();
        c.read_block(&v, 63, &mut buf).await.unwrap();
        assert_eq!(buf, bytes[3 * (1 << 20) - BLOCK_BYTES as usize..]);
    }

    /// Pins: a chunk stored without block CVs (by an older troved) is served by hashing it,
    /// and keeps the CVs from then on; CVs that do not check against the chunk ID are not
    /// used.
    #[tokio::test]
    async fn get_blocks_without_stored_cvs_hashes_the_chunk_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(2 * (1 << 20));
        let (addr, m, _) = serving(dir.path(), &bytes, 1 << 20).await;
        let chunk = m.chunk(1);
        assert!(stored_cvs_of(dir.path(), &chunk).is_some(), "put keeps the CVs");
        forget_cvs(dir.path(), &chunk);
        assert!(stored_cvs_of(dir.path(), &chunk).is_none());
        let mut c = net::connect(addr).await.unwrap();
        for round in 0..2 {
            let v = c.get_blocks(chunk, 5).await.unwrap();
            let mut buf = Vec::new();
            for i in 5..v.n_blocks() {
                c.read_block(&v, i, &mut buf).await.unwrap();
            }
            assert_eq!(buf, bytes[(2 << 20) - BLOCK_BYTES as usize..], "round {round}");
            assert!(stored_cvs_of(dir.path(), &chunk).is_some(), "round {round}: CVs kept");
        }

        // Other CVs under the attribute (here chunk 0's) do not check and are not used.
        let wrong = stored_cvs_of(dir.path(), &m.chunk(0)).unwrap();
        let f = std::fs::File::open(chunk_path(dir.path(), &chunk)).unwrap();
        assert!(store::store_cvs(&f, wrong.cvs()));
        assert!(stored_cvs_of(dir.path(), &chunk).is_none());
        let v = c.get_blocks(chunk, 0).await.unwrap();
        let mut buf = Vec::new();
        c.read_block(&v, 0, &mut buf).await.unwrap();
        assert_eq!(buf, bytes[1 << 20..][..BLOCK_BYTES as usize]);
    }
}
