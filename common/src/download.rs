//! The verified parallel downloader: the tokio driver around [`crate::schedule::Schedule`].
//!
//! One worker task per source keeps a pipelined window of requests open on one connection;
//! each chunk is verified against its [`ChunkId`] before a byte of it is written, then
//! written at its offset into a preallocated `OUT.trove-part` file. A small text state file
//! (`OUT.trove-state`) records finished chunks, so an interrupted download resumes with
//! the missing chunks only; on resume, chunks recorded as done are re-hashed from disk
//! first, so a lost page cache (power cut) can only cost a re-fetch, never a wrong byte.
//! On success the part file is fsynced and renamed to `OUT`.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::id::{ChunkId, FileId};
use crate::limits::HAS_CHUNKS_MAX;
use crate::manifest::Manifest;
use crate::net::{self, ClientReader, ClientWriter, NetError};
use crate::schedule::{Outcome, Schedule, ScheduleConfig};
use crate::wire::ErrorCode;

/// Events a worker can queue before the driver reads them.
const EVENTS_MAX: usize = 1024;
/// How often the resume state is rewritten while chunks arrive.
const STATE_SAVE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{} chunk(s) could not be fetched from any source: {}", .0.len(), describe(.0))]
    Unservable(Vec<(usize, ChunkId)>),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("resume state {0} is damaged; delete it to start over")]
    BadState(PathBuf),
}

fn describe(chunks: &[(usize, ChunkId)]) -> String {
    let mut s: Vec<String> = chunks.iter().take(8).map(|(i, c)| format!("#{i} {c}")).collect();
    if chunks.len() > 8 {
        s.push(format!("and {} more", chunks.len() - 8));
    }
    s.join(", ")
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where each chunk can be fetched: `sources` by index, `holders[chunk_idx]` the indices.
#[derive(Clone, Debug)]
pub struct Holders {
    pub sources: Vec<SocketAddr>,
    pub holders: Vec<Vec<u16>>,
}

impl Holders {
    /// Every source holds every chunk (or will say it does not).
    pub fn everyone(manifest: &Manifest, sources: Vec<SocketAddr>) -> Holders {
        let all: Vec<u16> = (0..sources.len() as u16).collect();
        Holders {
            holders: vec![all; manifest.n_chunks()],
            sources,
        }
    }

    /// Asks each source which chunks it holds. A source that cannot be reached is left out.
    pub async fn discover(manifest: &Manifest, sources: Vec<SocketAddr>) -> Holders {
        let chunks: Arc<Vec<ChunkId>> = Arc::new(manifest.chunks().collect());
        let mut holders = vec![Vec::new(); chunks.len()];
        let mut asks = tokio::task::JoinSet::new();
        for (s, &addr) in sources.iter().enumerate() {
            let chunks = chunks.clone();
            asks.spawn(async move {
                let ask = async {
                    let mut client = net::connect(addr).await?;
                    let mut have = Vec::with_capacity(chunks.len());
                    for batch in chunks.chunks(HAS_CHUNKS_MAX) {
                        have.extend(client.has(batch).await?);
                    }
                    Ok::<_, NetError>(have)
                };
                (s, ask.await)
            });
        }
        while let Some(joined) = asks.join_next().await {
            let Ok((s, answer)) = joined else { continue };
            match answer {
                Ok(have) => {
                    for (c, held) in have.into_iter().enumerate() {
                        if held {
                            holders[c].push(s as u16);
                        }
                    }
                }
                Err(e) => warn!(source = %sources[s], error = %e, "could not ask source what it holds"),
            }
        }
        for h in &mut holders {
            h.sort_unstable();
        }
        Holders { sources, holders }
    }
}

/// Progress, published as it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub chunks_done: u64,
    pub chunks_total: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Cap on the total download rate, bytes per second.
    pub limit_rate_bytes_per_sec: Option<u64>,
    pub schedule: ScheduleConfig,
}

#[derive(Clone, Debug, Default)]
pub struct SourceReport {
    pub addr: Option<SocketAddr>,
    pub chunks: u64,
    pub failures: u64,
    pub bad_chunks: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub file_id: Option<FileId>,
    pub size: u64,
    pub chunks_total: u64,
    pub chunks_fetched: u64,
    pub chunks_resumed: u64,
    pub bytes_fetched: u64,
    pub sources: Vec<SourceReport>,
}

/// The paths a download uses next to its output.
pub fn part_path(out: &Path) -> PathBuf {
    with_suffix(out, ".trove-part")
}
pub fn state_path(out: &Path) -> PathBuf {
    with_suffix(out, ".trove-state")
}
fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Downloads the file `manifest` describes into `out`, from `holders`, verified.
pub async fn download(
    manifest: &Manifest,
    holders: Holders,
    out: &Path,
    options: Options,
    progress: Option<watch::Sender<Progress>>,
) -> Result<Report, DownloadError> {
    let part = part_path(out);
    let state_file = state_path(out);
    let (file, done) = open_part(manifest, &part, &state_file)?;
    let file = Arc::new(file);
    let n = manifest.n_chunks();
    let chunks_resumed = done.iter().filter(|d| **d).count() as u64;
    let mut report = Report {
        file_id: Some(manifest.file_id()),
        size: manifest.size(),
        chunks_total: n as u64,
        chunks_resumed,
        ..Default::default()
    };
    let mut sched = Schedule::new(options.schedule.clone(), holders.sources.len(), holders.holders, &done);
    let mut state = ResumeState {
        file_id: manifest.file_id(),
        size: manifest.size(),
        chunk_bytes: manifest.chunk_bytes(),
        done,
    };
    let bytes_of = |i: usize| u64::from(manifest.chunk(i).len());
    let mut prog = Progress {
        bytes_done: (0..n).filter(|&i| state.done[i]).map(bytes_of).sum(),
        bytes_total: manifest.size(),
        chunks_done: chunks_resumed,
        chunks_total: n as u64,
    };
    let publish = |p: Progress| {
        if let Some(tx) = &progress {
            let _ = tx.send(p);
        }
    };
    publish(prog);

    let manifest = Arc::new(manifest.clone());
    let limiter = options.limit_rate_bytes_per_sec.map(|r| Arc::new(RateLimiter::new(r)));
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(EVENTS_MAX);
    let mut workers: Vec<Option<Worker>> = (0..holders.sources.len()).map(|_| None).collect();
    let start = Instant::now();
    let mut last_save = start;
    let mut per_source = vec![0u64; holders.sources.len()];

    let outcome = loop {
        let now = start.elapsed();
        while let Some(a) = sched.poll_assignment(now) {
            let worker = workers[a.source].get_or_insert_with(|| {
                spawn_worker(
                    a.source,
                    holders.sources[a.source],
                    options.schedule.inflight_per_source_max as usize,
                    manifest.clone(),
                    file.clone(),
                    limiter.clone(),
                    events_tx.clone(),
                )
            });
            // Invariant: the channel holds a full window and the schedule never assigns more
            // than a window to one source, so this cannot be full; a closed channel means the
            // worker died, which it reports as an event that we handle below.
            let _ = worker.assignments.try_send(a.chunk_idx);
        }
        if let Some(outcome) = sched.poll_outcome() {
            break outcome;
        }
        let deadline = sched.poll_timeout().map(|t| start + t);
        let event = tokio::select! {
            ev = events_rx.recv() => ev,
            _ = sleep_until_opt(deadline) => None,
        };
        let now = start.elapsed();
        match event {
            Some(Event::Done { source, chunk_idx }) => {
                let was_done = sched.is_done(chunk_idx);
                sched.handle_chunk_done(now, source, chunk_idx);
                if !was_done {
                    per_source[source] += 1;
                    state.done[chunk_idx] = true;
                    report.chunks_fetched += 1;
                    report.bytes_fetched += bytes_of(chunk_idx);
                    prog.chunks_done += 1;
                    prog.bytes_done += bytes_of(chunk_idx);
                    publish(prog);
                }
            }
            Some(Event::Bad { source, chunk_idx }) => {
                warn!(source = %holders.sources[source], chunk = %manifest.chunk(chunk_idx), "chunk failed verification; asking another holder");
                sched.handle_chunk_bad(now, source, chunk_idx);
            }
            Some(Event::Missing { source, chunk_idx }) => {
                debug!(source = %holders.sources[source], chunk_idx, "source does not hold the chunk");
                sched.handle_chunk_missing(now, source, chunk_idx);
            }
            Some(Event::Failed { source, error }) => {
                warn!(source = %holders.sources[source], %error, "source failed");
                sched.handle_source_failed(now, source);
                workers[source] = None;
            }
            None => sched.handle_timeout(now),
        }
        for (s, w) in workers.iter_mut().enumerate() {
            if w.is_some() && sched.should_disconnect(s) {
                *w = None;
            }
        }
        if last_save.elapsed() >= STATE_SAVE_INTERVAL {
            state.save(&state_file)?;
            last_save = Instant::now();
        }
    };
    drop(workers);
    for (s, addr) in holders.sources.iter().enumerate() {
        let r = sched.source_report(s);
        report.sources.push(SourceReport {
            addr: Some(*addr),
            chunks: per_source[s],
            failures: r.failures,
            bad_chunks: r.bad_chunks,
        });
    }
    match outcome {
        Outcome::Complete => {
            file.sync_all().map_err(io_at(&part))?;
            std::fs::rename(&part, out).map_err(io_at(out))?;
            let _ = std::fs::remove_file(&state_file);
            Ok(report)
        }
        Outcome::Unservable(idx) => {
            state.save(&state_file)?;
            Err(DownloadError::Unservable(
                idx.into_iter().map(|i| (i, manifest.chunk(i))).collect(),
            ))
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Opens (or creates) the part file and works out which chunks it already holds.
fn open_part(manifest: &Manifest, part: &Path, state_file: &Path) -> Result<(File, Vec<bool>), DownloadError> {
    let n = manifest.n_chunks();
    let previous = match ResumeState::load(state_file) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return Err(DownloadError::BadState(state_file.to_owned())),
    };
    let resumable = previous.filter(|s| {
        s.file_id == manifest.file_id()
            && s.size == manifest.size()
            && s.chunk_bytes == manifest.chunk_bytes()
            && part.exists()
    });
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(io_at(part))?;
    let mut done = vec![false; n];
    if let Some(prev) = resumable {
        let mut buf = Vec::new();
        for (i, chunk) in manifest.chunks().enumerate() {
            if !prev.done[i] {
                continue;
            }
            buf.resize(chunk.len() as usize, 0);
            // Re-check what the state claims: the state may be newer than the data on disk.
            if file.read_exact_at(&mut buf, chunk.offset()).is_ok() && chunk.verify(&buf) {
                done[i] = true;
            }
        }
    } else {
        file.set_len(0).map_err(io_at(part))?;
    }
    file.set_len(manifest.size()).map_err(io_at(part))?;
    Ok((file, done))
}

#[derive(Debug)]
enum Event {
    Done { source: usize, chunk_idx: usize },
    Bad { source: usize, chunk_idx: usize },
    Missing { source: usize, chunk_idx: usize },
    Failed { source: usize, error: NetError },
}

/// The driver's handle on one source's worker task. Dropping it aborts the task, so a
/// source that stalls with its socket open cannot hold anything up.
struct Worker {
    assignments: mpsc::Sender<usize>,
    task: tokio::task::AbortHandle,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn_worker(
    source: usize,
    addr: SocketAddr,
    window: usize,
    manifest: Arc<Manifest>,
    file: Arc<File>,
    limiter: Option<Arc<RateLimiter>>,
    events: mpsc::Sender<Event>,
) -> Worker {
    let (tx, rx) = mpsc::channel(window.max(1));
    let task = tokio::spawn(async move {
        if let Err(error) = run_worker(source, addr, rx, &manifest, &file, limiter, &events).await {
            let _ = events.send(Event::Failed { source, error }).await;
        }
    });
    Worker {
        assignments: tx,
        task: task.abort_handle(),
    }
}

/// Sends requests as assignments arrive and reads replies in order, until the driver drops
/// the assignment channel (then it returns `Ok`) or the connection fails.
async fn run_worker(
    source: usize,
    addr: SocketAddr,
    mut assignments: mpsc::Receiver<usize>,
    manifest: &Manifest,
    file: &File,
    limiter: Option<Arc<RateLimiter>>,
    events: &mpsc::Sender<Event>,
) -> Result<(), NetError> {
    let client = net::connect(addr).await?;
    let (reader, writer) = client.split();
    // The writer half tells the reader half, in order, which chunk each request was for.
    let (sent_tx, sent_rx) = mpsc::channel::<(u32, usize)>(64);
    let send = send_requests(writer, &mut assignments, manifest, limiter, sent_tx);
    let recv = receive_chunks(source, reader, sent_rx, manifest, file, events);
    tokio::select! {
        r = send => r,
        r = recv => r,
    }
}

async fn send_requests(
    mut writer: ClientWriter,
    assignments: &mut mpsc::Receiver<usize>,
    manifest: &Manifest,
    limiter: Option<Arc<RateLimiter>>,
    sent: mpsc::Sender<(u32, usize)>,
) -> Result<(), NetError> {
    while let Some(chunk_idx) = assignments.recv().await {
        let chunk = manifest.chunk(chunk_idx);
        if let Some(l) = &limiter {
            let at = l.reserve(u64::from(chunk.len()));
            if at > Instant::now() {
                // Requests already written must not wait in the buffer for this one's turn:
                // the peer would get them in bursts, and the rate would be met only on average.
                writer.flush().await?;
                tokio::time::sleep_until(at).await;
            }
        }
        let req = writer.send_get(chunk, None).await?;
        if sent.send((req, chunk_idx)).await.is_err() {
            return Ok(());
        }
        if assignments.is_empty() {
            writer.flush().await?;
        }
    }
    // The driver is done with this source: wait for the replies still under way.
    drop(sent);
    std::future::pending().await
}

async fn receive_chunks(
    source: usize,
    mut reader: ClientReader,
    mut sent: mpsc::Receiver<(u32, usize)>,
    manifest: &Manifest,
    file: &File,
    events: &mpsc::Sender<Event>,
) -> Result<(), NetError> {
    let mut body = Vec::new();
    while let Some((req, chunk_idx)) = sent.recv().await {
        let chunk = manifest.chunk(chunk_idx);
        let event = match reader.recv_chunk(req, &mut body).await {
            Ok(()) if chunk.verify(&body) => {
                file.write_all_at(&body, chunk.offset()).map_err(NetError::Io)?;
                Event::Done { source, chunk_idx }
            }
            Ok(()) => Event::Bad { source, chunk_idx },
            Err(NetError::Remote {
                code: ErrorCode::NotFound,
                ..
            }) => Event::Missing { source, chunk_idx },
            Err(e) => return Err(e),
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A shared pacing clock: [`RateLimiter::reserve`] books the next `n` bytes and says when
/// they may go, so requests leave evenly spaced at the rate.
struct RateLimiter {
    bytes_per_sec: u64,
    next_free: std::sync::Mutex<Option<Instant>>,
}

impl RateLimiter {
    fn new(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_sec: bytes_per_sec.max(1),
            next_free: std::sync::Mutex::new(None),
        }
    }

    /// When a request for `n` bytes may be sent (now, or later if the rate is used up).
    fn reserve(&self, n: u64) -> Instant {
        let mut next = self.next_free.lock().expect("rate limiter lock");
        let now = Instant::now();
        let at = next.map_or(now, |t| t.max(now));
        *next = Some(at + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64));
        at
    }
}

/// What `OUT.trove-state` holds. Text, so a person (or a test) can read it:
///
/// ```text
/// trove-resume v1
/// file <64 hex>
/// size <bytes>
/// chunk_bytes <bytes>
/// done <hex bitmap: bit i, LSB first within each byte, is chunk i>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeState {
    pub file_id: FileId,
    pub size: u64,
    pub chunk_bytes: u32,
    pub done: Vec<bool>,
}

impl ResumeState {
    pub fn to_text(&self) -> String {
        let mut bits = vec![0u8; self.done.len().div_ceil(8)];
        for (i, _) in self.done.iter().enumerate().filter(|(_, d)| **d) {
            bits[i / 8] |= 1 << (i % 8);
        }
        format!(
            "trove-resume v1\nfile {}\nsize {}\nchunk_bytes {}\ndone {}\n",
            self.file_id,
            self.size,
            self.chunk_bytes,
            crate::hex::encode(&bits)
        )
    }

    pub fn parse(text: &str) -> Option<ResumeState> {
        let mut lines = text.lines();
        if lines.next()? != "trove-resume v1" {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned);
        let file_id: FileId = field("file")?.parse().ok()?;
        let size: u64 = field("size")?.parse().ok()?;
        let chunk_bytes: u32 = field("chunk_bytes")?.parse().ok()?;
        let hex = field("done")?;
        if chunk_bytes == 0 {
            return None;
        }
        let n = size.div_ceil(u64::from(chunk_bytes)) as usize;
        let bytes = crate::hex::decode_vec(&hex).ok()?;
        if bytes.len() != n.div_ceil(8) {
            return None;
        }
        let done = (0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect();
        Some(ResumeState {
            file_id,
            size,
            chunk_bytes,
            done,
        })
    }

    fn load(path: &Path) -> std::io::Result<ResumeState> {
        let text = std::fs::read_to_string(path)?;
        ResumeState::parse(&text)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "damaged resume state"))
    }

    /// Replaces the state file atomically (write aside, rename over).
    fn save(&self, path: &Path) -> Result<(), DownloadError> {
        let tmp = with_suffix(path, ".tmp");
        std::fs::write(&tmp, self.to_text()).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_at(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rate_limiter_spaces_requests_by_their_size() {
        let l = RateLimiter::new(4 << 20);
        let first = l.reserve(1 << 20);
        let second = l.reserve(1 << 20);
        let third = l.reserve(2 << 20);
        assert!(first <= Instant::now());
        assert_eq!(second - first, Duration::from_millis(250));
        assert_eq!(third - second, Duration::from_millis(250));
        assert_eq!(l.reserve(1) - third, Duration::from_millis(500));
    }

    #[test]
    fn resume_state_round_trips_and_rejects_damage() {
        let s = ResumeState {
            file_id: FileId::of_bytes(b"x"),
            size: 20 << 20,
            chunk_bytes: 1 << 20,
            done: (0..20).map(|i| i % 3 == 0).collect(),
        };
        let text = s.to_text();
        assert_eq!(ResumeState::parse(&text), Some(s));
        assert_eq!(ResumeState::parse(&text.replace("v1", "v9")), None);
        assert_eq!(ResumeState::parse(&text.replace("done ", "done 00")), None);
        assert_eq!(ResumeState::parse("trove-resume v1\n"), None);
    }
}
