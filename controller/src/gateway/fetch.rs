//! Getting verified chunks for the gateway: a small pool of connections per appliance, an
//! LRU cache of verified chunks, and a live count of what is being fetched from whom.
//!
//! Every chunk comes through [`trove_common::net::Client::get_chunk`], which hashes the
//! bytes against the chunk ID before returning them; so nothing unverified reaches the cache
//! or a browser. The first chunk of a response may come through the block path instead
//! ([`Fetcher::chunk_part`]): a get-blocks whose block chaining values are checked against
//! the chunk ID first, then each 16 KiB block hashed at its offset before any of its bytes
//! is handed on, so the first verified bytes leave after one block instead of one chunk.
//! A node that cannot answer a get-blocks (an older troved closes the connection or answers
//! an error) is asked with whole-chunk `Get`s for [`NO_BLOCKS_RETRY`]. Reads need no grant:
//! naming the chunk is the capability.
//!
//! One chunk is fetched once at a time: a request wanting a chunk already on its way (a
//! player's overlapping ranges, two viewers) waits for that fetch (`in_flight`, a cell per
//! chunk that the fetch fills), and takes over if it fails. This module does not decide
//! what to fetch or when (that is the transfer in `gateway.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut, Range};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{OnceCell, mpsc};
use trove_common::blocks::{BLOCK_BYTES, BlockVerifier};
use trove_common::net::{self, Client, NetError};
use trove_common::wire::ErrorCode;
use trove_common::{ChunkId, NodeId};

use crate::metrics::Metrics;

/// Bytes of verified chunks kept for repeated range requests (a browser seeking asks for
/// overlapping ranges again and again).
pub const CACHE_BYTES_MAX: usize = 64 << 20;
/// Idle connections kept per appliance.
pub const IDLE_CONNECTIONS_PER_NODE_MAX: usize = 8;
/// How long one chunk from one holder may take (connecting included) before the next
/// holder is tried.
pub const CHUNK_FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node that could not answer a get-blocks is asked with whole-chunk gets only.
pub const NO_BLOCKS_RETRY: Duration = Duration::from_secs(60);

/// Verified pieces of one chunk, in order, as the block path hands them on.
pub type Pieces = mpsc::Sender<Result<Bytes, FetchError>>;

/// An online appliance that holds a chunk, and where to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub node: NodeId,
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("chunk at offset {offset} has no online holder")]
    NoHolder { offset: u64 },
    #[error("chunk at offset {offset}: all {tried} holders failed, the last with: {last}")]
    AllFailed { offset: u64, tried: usize, last: NetError },
}

/// Verified chunks, least recently used first out, at most [`CACHE_BYTES_MAX`] bytes.
struct Cache {
    map: HashMap<ChunkId, (Bytes, u64)>,
    /// Use tick → chunk, oldest first.
    order: BTreeMap<u64, ChunkId>,
    tick: u64,
    bytes: usize,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
        }
    }

    fn get(&mut self, chunk: &ChunkId) -> Option<Bytes> {
        let (bytes, tick) = self.map.get_mut(chunk)?;
        self.order.remove(tick);
        self.tick += 1;
        *tick = self.tick;
        self.order.insert(self.tick, *chunk);
        Some(bytes.clone())
    }

    fn contains(&self, chunk: &ChunkId) -> bool {
        self.map.contains_key(chunk)
    }

    fn insert(&mut self, chunk: ChunkId, bytes: Bytes) {
        if bytes.len() > CACHE_BYTES_MAX || self.map.contains_key(&chunk) {
            return;
        }
        while self.bytes + bytes.len() > CACHE_BYTES_MAX {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some((b, _)) = self.map.remove(&old) {
                self.bytes -= b.len();
            }
        }
        self.tick += 1;
        self.bytes += bytes.len();
        self.order.insert(self.tick, chunk);
        self.map.insert(chunk, (bytes, self.tick));
    }
}

/// A chunk being fetched: the cell its fetch fills, and the requests waiting for it.
struct Wanted {
    cell: Arc<OnceCell<Bytes>>,
    requests: usize,
}

/// One request's part in a chunk's fetch ([`Fetcher::in_flight`]). Dropping it, when done
/// or when the request's task is aborted, leaves: the last request out forgets the fetch
/// (by then it filled its cell, so the chunk is cached, or every attempt failed).
struct InFlightPart<'a> {
    fetcher: &'a Fetcher,
    chunk: ChunkId,
    cell: Arc<OnceCell<Bytes>>,
    first: bool,
}

impl Drop for InFlightPart<'_> {
    fn drop(&mut self) {
        let mut map = self.fetcher.in_flight.lock().expect("in_flight lock");
        if let Some(w) = map.get_mut(&self.chunk) {
            w.requests -= 1;
            if w.requests == 0 {
                map.remove(&self.chunk);
            }
        }
    }
}

/// What is moving from one appliance now.
#[derive(Default)]
struct Live {
    in_flight: u32,
    /// Bytes asked for and not yet received.
    bytes_in_flight: u64,
    /// Unix-ish second (from `started`) of `bytes_this_second`.
    second: u64,
    bytes_this_second: u64,
    bytes_last_second: u64,
}

/// The local addresses of the gateway's open connections to appliances. An appliance
/// reports each as an accepted connection from that address; the fleet view skips those,
/// since the gateway draws its own fetches (else every gateway byte is drawn twice, once
/// as a download by some client on the controller's address).
type LocalAddrs = Arc<Mutex<HashSet<SocketAddr>>>;

/// A connection to an appliance whose local address is in [`LocalAddrs`] while it is open.
struct Conn {
    client: Client,
    addrs: LocalAddrs,
}

impl Conn {
    async fn connect(addr: SocketAddr, addrs: &LocalAddrs) -> Result<Conn, NetError> {
        let client = with_timeout(net::connect(addr)).await?;
        addrs.lock().expect("addrs lock").insert(client.local_addr());
        Ok(Conn {
            client,
            addrs: addrs.clone(),
        })
    }
}

impl Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.addrs.lock().expect("addrs lock").remove(&self.client.local_addr());
    }
}

pub struct Fetcher {
    idle: Mutex<HashMap<NodeId, Vec<Conn>>>,
    /// Chunks being fetched now, each with the cell its fetch fills and how many requests
    /// want it: a second request for one waits for that fetch instead of asking an
    /// appliance again. The entry lives until the last of them is done, so a request that
    /// comes after a failed fetch joins the one that took over instead of starting another.
    in_flight: Mutex<HashMap<ChunkId, Wanted>>,
    local_addrs: LocalAddrs,
    /// Nodes that could not answer a get-blocks, and since when.
    no_blocks: Mutex<HashMap<NodeId, Instant>>,
    cache: Mutex<Cache>,
    live: Mutex<HashMap<NodeId, Live>>,
    started: Instant,
}

impl Fetcher {
    pub fn new() -> Fetcher {
        Fetcher {
            idle: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            local_addrs: LocalAddrs::default(),
            no_blocks: Mutex::new(HashMap::new()),
            cache: Mutex::new(Cache::new()),
            live: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The local addresses of the connections to appliances open now.
    pub fn local_addrs(&self) -> HashSet<SocketAddr> {
        self.local_addrs.lock().expect("addrs lock").clone()
    }

    /// True if `chunk` is cached (does not count as a use).
    pub fn is_cached(&self, chunk: &ChunkId) -> bool {
        self.cache.lock().expect("cache lock").contains(chunk)
    }

    /// A verified chunk, from the cache or from the first of `holders` that delivers it.
    /// Holders are tried least busy first. If the chunk is already being fetched (for
    /// another response: a player asks for overlapping ranges), this waits for that fetch.
    pub async fn chunk(&self, metrics: &Metrics, chunk: ChunkId, holders: &[Holder]) -> Result<Bytes, FetchError> {
        if let Some(b) = self.cached(metrics, &chunk) {
            return Ok(b);
        }
        let part = self.in_flight(chunk);
        part.cell
            .get_or_try_init(|| self.fetch_whole(metrics, chunk, holders))
            .await
            .cloned()
    }

    /// From the cache, counted as a hit.
    fn cached(&self, metrics: &Metrics, chunk: &ChunkId) -> Option<Bytes> {
        let b = self.cache.lock().expect("cache lock").get(chunk)?;
        metrics.gateway_cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(b)
    }

    /// This request's part in the fetch of `chunk` under way: a new fetch if none is, and
    /// then this request is the first (the one to fetch).
    fn in_flight(&self, chunk: ChunkId) -> InFlightPart<'_> {
        let mut map = self.in_flight.lock().expect("in_flight lock");
        let w = map.entry(chunk).or_insert_with(|| Wanted {
            cell: Arc::new(OnceCell::new()),
            requests: 0,
        });
        w.requests += 1;
        InFlightPart {
            fetcher: self,
            chunk,
            cell: w.cell.clone(),
            first: w.requests == 1,
        }
    }

    /// Fetches `chunk` whole from the first of `holders` that delivers it, and caches it;
    /// from the cache if a fetch that just ended put it there.
    async fn fetch_whole(&self, metrics: &Metrics, chunk: ChunkId, holders: &[Holder]) -> Result<Bytes, FetchError> {
        if let Some(b) = self.cached(metrics, &chunk) {
            return Ok(b);
        }
        let mut order: Vec<Holder> = holders.to_vec();
        {
            let live = self.live.lock().expect("live lock");
            // Stable: among equally busy holders the caller's order (rotated per chunk) holds.
            order.sort_by_key(|h| live.get(&h.node).map_or(0, |l| l.in_flight));
        }
        let mut last = None;
        for h in &order {
            self.begin(h.node, chunk.len());
            let got = self.ask_holder(h, chunk).await;
            self.end(h.node, chunk.len(), got.is_ok());
            match got {
                Ok(body) => return Ok(self.fetched(metrics, chunk, body)),
                Err(e) => {
                    tracing::warn!(node = %h.node, addr = %h.addr, offset = chunk.offset(), error = %e,
                        "gateway: holder failed, trying the next");
                    last = Some(e);
                }
            }
        }
        match last {
            None => Err(FetchError::NoHolder { offset: chunk.offset() }),
            Some(last) => Err(FetchError::AllFailed {
                offset: chunk.offset(),
                tried: order.len(),
                last,
            }),
        }
    }

    /// Bytes `want` of `chunk`, verified, handed to `out` in order as they arrive: from the
    /// cache in one piece; from a fetch of it already under way once that ends; else through
    /// the block path from the least busy holder that speaks it, piece by piece, and if that
    /// fails at any point, the rest after what was handed on from a whole-chunk fetch. The
    /// last piece goes once the whole chunk is verified and cached, so a complete fetch is
    /// counted and cached before the caller's range ends. Errors go to `out` too. Returns
    /// when done, or when `out` closes (a block-path fetch completes its chunk first).
    pub async fn chunk_part(
        &self,
        metrics: &Metrics,
        chunk: ChunkId,
        holders: &[Holder],
        want: Range<u32>,
        out: &Pieces,
    ) {
        debug_assert!(want.start < want.end && want.end <= chunk.len());
        if let Some(b) = self.cached(metrics, &chunk) {
            let _ = out.send(Ok(b.slice(want.start as usize..want.end as usize))).await;
            return;
        }
        let part = self.in_flight(chunk);
        let mut sent = want.start;
        let got = if part.first {
            part.cell
                .get_or_try_init(|| async {
                    if let Some(b) = self.cached(metrics, &chunk) {
                        return Ok(b);
                    }
                    match self.blocks(metrics, chunk, holders, &mut sent, want.end, out).await {
                        Some(whole) => Ok(whole),
                        None => self.fetch_whole(metrics, chunk, holders).await,
                    }
                })
                .await
                .cloned()
        } else {
            // Someone else's fetch: wait for it (or take over if it fails).
            part.cell
                .get_or_try_init(|| self.fetch_whole(metrics, chunk, holders))
                .await
                .cloned()
        };
        drop(part);
        let rest = got.map(|b| b.slice(sent as usize..want.end as usize));
        let _ = out.send(rest).await;
    }

    /// The block path from the least busy holder that speaks it: hands on verified pieces of
    /// `*sent..end` but the last (moving `sent` past each) and returns the whole chunk,
    /// verified and cached; `None` if it could not (no such holder, or it failed part way).
    async fn blocks(
        &self,
        metrics: &Metrics,
        chunk: ChunkId,
        holders: &[Holder],
        sent: &mut u32,
        end: u32,
        out: &Pieces,
    ) -> Option<Bytes> {
        let now = Instant::now();
        let h = {
            let live = self.live.lock().expect("live lock");
            let mut no_blocks = self.no_blocks.lock().expect("no_blocks lock");
            no_blocks.retain(|_, since| now.duration_since(*since) < NO_BLOCKS_RETRY);
            holders
                .iter()
                .filter(|h| !no_blocks.contains_key(&h.node))
                .min_by_key(|h| live.get(&h.node).map_or(0, |l| l.in_flight))
                .copied()?
        };
        self.begin(h.node, chunk.len());
        let got = self.blocks_from(metrics, &h, chunk, sent, end, out).await;
        self.end(h.node, chunk.len(), got.is_ok());
        match got {
            Ok(whole) => Some(whole),
            Err(e) => {
                if matches!(
                    e,
                    NetError::Closed
                        | NetError::Decode(_)
                        | NetError::Remote {
                            code: ErrorCode::BadRequest,
                            ..
                        }
                ) {
                    self.no_blocks
                        .lock()
                        .expect("no_blocks lock")
                        .insert(h.node, Instant::now());
                }
                tracing::warn!(node = %h.node, addr = %h.addr, offset = chunk.offset(), error = %e,
                    "gateway: holder failed on the block path, fetching the rest whole");
                None
            }
        }
    }

    /// The block path from one holder: hands on verified pieces of `*sent..end` but the
    /// last (moving `sent` past each), then reads the rest of the chunk (blocks after it,
    /// then those before the first asked), verifies and caches it, and returns it. When
    /// `out` closes (the browser went away) the chunk is still completed, at most one chunk
    /// of work: it is cached for the next request and the connection goes back to the pool
    /// in step.
    async fn blocks_from(
        &self,
        metrics: &Metrics,
        h: &Holder,
        chunk: ChunkId,
        sent: &mut u32,
        end: u32,
        out: &Pieces,
    ) -> Result<Bytes, NetError> {
        let from = *sent / BLOCK_BYTES;
        let (mut c, v) = self.open_blocks(h, chunk, from).await?;
        // Made once the first piece is out: zeroing 1 MiB is 50 µs or more that the first
        // byte need not wait for.
        let mut whole = Vec::new();
        let mut block = Vec::with_capacity(BLOCK_BYTES as usize);
        let mut wanted = true;
        for i in from..v.n_blocks() {
            with_timeout(c.read_block(&v, i, &mut block)).await?;
            let r = v.block_range(i);
            let (a, b) = (r.start.max(*sent), r.end.min(end));
            // The last piece waits for the whole chunk (see `chunk_part`).
            if a < b && b != end && wanted {
                let piece = Bytes::copy_from_slice(&block[(a - r.start) as usize..(b - r.start) as usize]);
                if out.send(Ok(piece)).await.is_ok() {
                    *sent = b;
                    // Let the response take the piece now: a woken task waits in this worker's
                    // LIFO slot until this one yields, and with the reply already buffered the
                    // loop would not yield before the chunk's end.
                    tokio::task::yield_now().await;
                } else {
                    wanted = false;
                }
            }
            if whole.is_empty() {
                whole = vec![0u8; chunk.len() as usize];
            }
            whole[r.start as usize..r.end as usize].copy_from_slice(&block);
        }
        if from > 0 {
            let front = with_timeout(c.get_verified_blocks(&v, 0..from)).await?;
            whole[..front.len()].copy_from_slice(&front);
        }
        self.put_back(h.node, c);
        Ok(self.fetched(metrics, chunk, whole))
    }

    /// A chunk fetched and verified, by either path: counted and cached.
    fn fetched(&self, metrics: &Metrics, chunk: ChunkId, body: Vec<u8>) -> Bytes {
        metrics.gateway_chunks_fetched.fetch_add(1, Ordering::Relaxed);
        let bytes = Bytes::from(body);
        self.cache.lock().expect("cache lock").insert(chunk, bytes.clone());
        bytes
    }

    /// A connection to `h` on which a get-blocks for `chunk` was answered with checked block
    /// chaining values (the blocks follow on it): an idle one first, else a fresh one.
    async fn open_blocks(&self, h: &Holder, chunk: ChunkId, from: u32) -> Result<(Conn, BlockVerifier), NetError> {
        let pooled = self.idle.lock().expect("idle lock").get_mut(&h.node).and_then(Vec::pop);
        if let Some(mut c) = pooled {
            match with_timeout(c.get_blocks(chunk, from)).await {
                Ok(v) => return Ok((c, v)),
                Err(e @ NetError::Remote { .. }) => {
                    // An error reply has no body: the connection is still in step.
                    self.put_back(h.node, c);
                    return Err(e);
                }
                Err(e) => tracing::debug!(node = %h.node, error = %e, "gateway: pooled connection failed"),
            }
        }
        let mut c = Conn::connect(h.addr, &self.local_addrs).await?;
        match with_timeout(c.get_blocks(chunk, from)).await {
            Ok(v) => Ok((c, v)),
            Err(e) => {
                if matches!(e, NetError::Remote { .. }) {
                    self.put_back(h.node, c);
                }
                Err(e)
            }
        }
    }

    /// One holder: an idle connection first; if that one turns out dead (the node restarted
    /// since), one fresh connection.
    async fn ask_holder(&self, h: &Holder, chunk: ChunkId) -> Result<Vec<u8>, NetError> {
        let pooled = self.idle.lock().expect("idle lock").get_mut(&h.node).and_then(Vec::pop);
        if let Some(mut c) = pooled {
            match with_timeout(c.get_chunk(chunk)).await {
                Ok(body) => {
                    self.put_back(h.node, c);
                    return Ok(body);
                }
                // The node answered: the connection is fine, the chunk is not there.
                Err(e) if e.is_remote_refusal() => {
                    self.put_back(h.node, c);
                    return Err(e);
                }
                Err(e) => tracing::debug!(node = %h.node, error = %e, "gateway: pooled connection failed"),
            }
        }
        let mut c = Conn::connect(h.addr, &self.local_addrs).await?;
        let body = with_timeout(c.get_chunk(chunk)).await?;
        self.put_back(h.node, c);
        Ok(body)
    }

    fn put_back(&self, node: NodeId, c: Conn) {
        let mut idle = self.idle.lock().expect("idle lock");
        let v = idle.entry(node).or_default();
        if v.len() < IDLE_CONNECTIONS_PER_NODE_MAX {
            v.push(c);
        }
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn begin(&self, node: NodeId, len: u32) {
        let mut live = self.live.lock().expect("live lock");
        let l = live.entry(node).or_default();
        l.in_flight += 1;
        l.bytes_in_flight += u64::from(len);
    }

    fn end(&self, node: NodeId, len: u32, ok: bool) {
        let now = self.second();
        let mut live = self.live.lock().expect("live lock");
        let l = live.entry(node).or_default();
        l.in_flight -= 1;
        l.bytes_in_flight -= u64::from(len);
        roll(l, now);
        if ok {
            l.bytes_this_second += u64::from(len);
        }
    }

    /// Per appliance: bytes received in the last whole second plus bytes asked for and not
    /// yet received; only appliances with something to report.
    pub fn live(&self) -> Vec<(NodeId, u64)> {
        let now = self.second();
        let mut live = self.live.lock().expect("live lock");
        live.retain(|_, l| {
            roll(l, now);
            l.in_flight > 0 || l.bytes_last_second > 0 || l.bytes_this_second > 0
        });
        let mut out: Vec<(NodeId, u64)> = live
            .iter()
            .map(|(n, l)| (*n, l.bytes_last_second + l.bytes_in_flight))
            .filter(|(_, b)| *b > 0)
            .collect();
        out.sort();
        out
    }
}

/// Moves `l`'s per-second buckets forward to second `now`.
fn roll(l: &mut Live, now: u64) {
    if l.second == now {
        return;
    }
    l.bytes_last_second = if l.second + 1 == now { l.bytes_this_second } else { 0 };
    l.bytes_this_second = 0;
    l.second = now;
}

async fn with_timeout<T>(f: impl Future<Output = Result<T, NetError>>) -> Result<T, NetError> {
    tokio::time::timeout(CHUNK_FETCH_TIMEOUT, f)
        .await
        .map_err(|_| NetError::Timeout(CHUNK_FETCH_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_common::Hash32;

    fn chunk(i: u64, len: u32) -> ChunkId {
        ChunkId::new(Hash32([i as u8; 32]), i * (1 << 20), len, false).unwrap()
    }

    #[test]
    fn cache_evicts_least_recently_used_within_its_budget() {
        let mut c = Cache::new();
        let mib = 1usize << 20;
        let n = CACHE_BYTES_MAX / mib;
        for i in 0..n as u64 {
            c.insert(chunk(i, mib as u32), Bytes::from(vec![i as u8; mib]));
        }
        assert_eq!(c.bytes, CACHE_BYTES_MAX);
        // Using chunk 0 makes chunk 1 the oldest: the next insert evicts it.
        assert!(c.get(&chunk(0, mib as u32)).is_some());
        c.insert(chunk(n as u64, mib as u32), Bytes::from(vec![1; mib]));
        assert!(c.contains(&chunk(0, mib as u32)));
        assert!(!c.contains(&chunk(1, mib as u32)));
        assert!(c.contains(&chunk(n as u64, mib as u32)));
        assert_eq!(c.bytes, CACHE_BYTES_MAX);
        assert_eq!(c.map.len(), c.order.len());
    }

    #[test]
    fn a_fetch_is_forgotten_only_when_its_last_request_leaves() {
        let f = Fetcher::new();
        let c = chunk(1, 1 << 20);
        let first = f.in_flight(c);
        let second = f.in_flight(c);
        assert!(first.first && !second.first);
        // The first request fails and leaves while the second takes over: a request that
        // comes now joins that fetch instead of starting its own.
        drop(first);
        let late = f.in_flight(c);
        assert!(!late.first);
        assert!(Arc::ptr_eq(&late.cell, &second.cell));
        drop(second);
        drop(late);
        assert!(f.in_flight.lock().unwrap().is_empty());
        // The next request for it starts a fetch again.
        assert!(f.in_flight(c).first);
    }

    #[test]
    fn live_counts_roll_by_the_second() {
        let mut l = Live {
            second: 5,
            bytes_this_second: 10,
            ..Live::default()
        };
        roll(&mut l, 6);
        assert_eq!((l.bytes_last_second, l.bytes_this_second), (10, 0));
        roll(&mut l, 8);
        assert_eq!((l.bytes_last_second, l.bytes_this_second), (0, 0));
    }
}
