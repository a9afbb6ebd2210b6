//! Moving bytes: hashing a file into its manifest, sending chunks to appliances, and
//! downloading a file from its holders. Used by both the low-level commands (`put`,
//! `fetch`, with local keys and given nodes) and the controller-driven ones (`share`,
//! `get`, with grants and holders from the controller).
//!
//! Every chunk is verified against its `ChunkId` before it is sent (the file may have
//! changed since it was hashed) and, by the downloader, before a byte of it is written.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{mpsc, watch};
use trove_common::download::{self, Holders, Options};
use trove_common::net;
use trove_common::{ChunkId, Grant, Manifest, ManifestBuilder};

/// Chunks buffered per node ahead of the socket.
const PUT_QUEUE_CHUNKS: usize = 4;
/// Files smaller than this are hashed without a progress bar (it would only flicker).
const HASH_BAR_BYTES_MIN: u64 = 64 << 20;
/// Read buffer for hashing.
const HASH_READ_BYTES: usize = 1 << 20;

pub fn bar(len: u64, show: bool, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    pb.set_style(
        ProgressStyle::with_template("{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Reads a file once, building its manifest and FileId together.
pub fn manifest_of_file(path: &Path, chunk_bytes: u32, progress: bool) -> anyhow::Result<Manifest> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let pb = bar(len, progress && len > HASH_BAR_BYTES_MIN, "hashing");
    let mut b = ManifestBuilder::new(chunk_bytes).context("bad chunk size")?;
    let mut buf = vec![0u8; HASH_READ_BYTES];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        b.update(&buf[..n]);
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(b.finish())
}

/// A chunk on its way to one appliance: its ID, its grant, its (shared) bytes.
type Outgoing = (ChunkId, Grant, Arc<Vec<u8>>);

/// One chunk to send to one appliance, with the grant that lets it be stored there.
#[derive(Clone, Debug)]
pub struct Send {
    pub chunk_idx: usize,
    pub addr: SocketAddr,
    pub grant: Grant,
}

/// What [`send_chunks`] put on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    /// `Put` requests the appliances acknowledged as stored.
    pub chunks_sent: u64,
    /// Chunk bytes in those requests (a chunk sent to two nodes counts twice).
    pub bytes_sent: u64,
}

/// Sends chunks of `file` (described by `manifest`) as `sends` says: one pipelined
/// connection per appliance, each chunk read from the file once however many appliances
/// it goes to, and verified before it leaves. Fails with the first appliance's error, after
/// the others have finished.
pub async fn send_chunks(
    file: &Path,
    manifest: &Manifest,
    sends: Vec<Send>,
    progress: bool,
) -> anyhow::Result<SendReport> {
    let mut by_chunk: BTreeMap<usize, Vec<(SocketAddr, Grant)>> = BTreeMap::new();
    let mut total_bytes = 0u64;
    for s in sends {
        if s.chunk_idx >= manifest.n_chunks() {
            bail!(
                "chunk index {} is out of range: the file has {} chunks",
                s.chunk_idx,
                manifest.n_chunks()
            );
        }
        total_bytes += u64::from(manifest.chunk(s.chunk_idx).len());
        by_chunk.entry(s.chunk_idx).or_default().push((s.addr, s.grant));
    }
    let pb = bar(total_bytes, progress, "sending");
    let report = Arc::new(std::sync::Mutex::new(SendReport::default()));
    let mut queues: HashMap<SocketAddr, mpsc::Sender<Outgoing>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for addr in by_chunk.values().flatten().map(|(a, _)| *a) {
        queues.entry(addr).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PUT_QUEUE_CHUNKS);
            let (pb, report) = (pb.clone(), report.clone());
            tasks.spawn(async move {
                put_to_node(addr, rx, pb, report)
                    .await
                    .with_context(|| format!("putting to {addr}"))
            });
            tx
        });
    }
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    'chunks: for (chunk_idx, targets) in by_chunk {
        let chunk = manifest.chunk(chunk_idx);
        let mut bytes = vec![0u8; chunk.len() as usize];
        f.read_exact_at(&mut bytes, chunk.offset())
            .with_context(|| format!("reading {} (did it change?)", file.display()))?;
        if !chunk.verify(&bytes) {
            bail!("{} changed since it was hashed (chunk {chunk_idx})", file.display());
        }
        let bytes = Arc::new(bytes);
        for (addr, grant) in targets {
            if queues[&addr].send((chunk, grant, bytes.clone())).await.is_err() {
                // That node's task failed; its error is reported below. Stop reading.
                break 'chunks;
            }
        }
    }
    drop(queues);
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.context("put task panicked").and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    pb.finish_and_clear();
    if let Some(e) = first_error {
        return Err(e);
    }
    let report = *report.lock().expect("no task panicked holding it");
    Ok(report)
}

async fn put_to_node(
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Outgoing>,
    pb: ProgressBar,
    report: Arc<std::sync::Mutex<SendReport>>,
) -> anyhow::Result<()> {
    let client = net::connect(addr).await?;
    let (mut reader, mut writer) = client.split();
    let (sent_tx, mut sent_rx) = mpsc::channel::<(u32, ChunkId, u64)>(PUT_QUEUE_CHUNKS * 4);
    let send = async move {
        while let Some((chunk, grant, bytes)) = rx.recv().await {
            let req = writer.send_put(chunk, Some(&grant), &bytes).await?;
            if rx.is_empty() {
                writer.flush().await?;
            }
            // Never wait for replies with requests still in our buffer: the node cannot answer
            // what it has not seen, and would wait for us as we wait for it.
            match sent_tx.try_send((req, chunk, bytes.len() as u64)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    writer.flush().await?;
                    if sent_tx.send(item).await.is_err() {
                        break;
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        writer.flush().await?;
        anyhow::Ok(())
    };
    let recv = async move {
        while let Some((req, chunk, len)) = sent_rx.recv().await {
            reader
                .recv_stored(req)
                .await
                .with_context(|| format!("chunk {chunk}"))?;
            pb.inc(len);
            let mut r = report.lock().expect("no task panicked holding it");
            r.chunks_sent += 1;
            r.bytes_sent += len;
        }
        anyhow::Ok(())
    };
    tokio::try_join!(send, recv)?;
    Ok(())
}

/// Downloads `manifest`'s file from `holders` into `out` (resumable, verified), then prints
/// a one-line JSON report on stdout (`json`) or a summary on stderr.
pub async fn download_and_report(
    manifest: &Manifest,
    holders: Holders,
    out: &Path,
    limit_rate: Option<u64>,
    json: bool,
    progress: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (tx, mut rx) = watch::channel(download::Progress::default());
    let pb = bar(manifest.size(), progress, "fetching");
    let pb2 = pb.clone();
    let ticker = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            pb2.set_position(rx.borrow().bytes_done);
        }
    });
    let options = Options {
        limit_rate_bytes_per_sec: limit_rate,
        ..Default::default()
    };
    let result = download::download(manifest, holders, out, options, Some(tx)).await;
    let _ = ticker.await;
    pb.finish_and_clear();
    let report = result?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    if json {
        println!("{}", download_json(manifest, &report, secs));
    } else {
        eprintln!(
            "{}  {}: {} bytes, {} chunks fetched, {} resumed, {:.1} MB/s",
            manifest.file_id(),
            out.display(),
            manifest.size(),
            report.chunks_fetched,
            report.chunks_resumed,
            report.bytes_fetched as f64 / secs / 1e6
        );
    }
    Ok(())
}

/// The `--json` report of `fetch` and `get`.
fn download_json(manifest: &Manifest, report: &download::Report, secs: f64) -> serde_json::Value {
    serde_json::json!({
        "file_id": manifest.file_id().to_string(),
        "size": manifest.size(),
        "chunks_total": report.chunks_total,
        "chunks_fetched": report.chunks_fetched,
        "chunks_resumed": report.chunks_resumed,
        "bytes_fetched": report.bytes_fetched,
        "seconds": secs,
        "sources": report.sources.iter().map(|s| serde_json::json!({
            "addr": s.addr.map(|a| a.to_string()),
            "chunks": s.chunks,
            "failures": s.failures,
            "bad_chunks": s.bad_chunks,
        })).collect::<Vec<_>>(),
    })
}
