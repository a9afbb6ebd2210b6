//! `trove`: the Trove command-line client.
//!
//! So far the low-level commands of the data plane: hash a file, put its chunks onto given
//! appliances with locally signed grants, fetch it back from given appliances (parallel,
//! verified, resumable), and read an appliance's stats. The user-facing `share` and `get`
//! arrive with the controller, which will hand out grants and holders instead.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{mpsc, watch};
use trove_common::download::{self, Holders, Options};
use trove_common::grant::SigningKey;
use trove_common::limits::CHUNK_BYTES_DEFAULT;
use trove_common::net;
use trove_common::{ChunkId, Grant, Manifest, ManifestBuilder};

#[derive(Parser)]
#[command(version, about = "Trove: share files across your LAN's appliances")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the FileId of files (the same as `b3sum`).
    Hash { files: Vec<PathBuf> },
    /// Make a grant-signing key pair: writes the secret, prints the public key.
    Keygen {
        #[arg(long)]
        secret_out: PathBuf,
    },
    /// Put a file's chunks onto appliances, signing grants with a local key.
    Put {
        file: PathBuf,
        /// Secret key file (hex) whose public key the appliances trust.
        #[arg(long)]
        key: PathBuf,
        /// Appliance address; repeat for each. Chunk i goes to nodes i, i+1, ... (mod n).
        #[arg(long = "node", required = true)]
        nodes: Vec<SocketAddr>,
        /// Copies of each chunk (at most one per node).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
        replicas: u16,
        /// Where to write the manifest (default: FILE.manifest).
        #[arg(long)]
        manifest_out: Option<PathBuf>,
        #[arg(long, default_value_t = CHUNK_BYTES_DEFAULT)]
        chunk_bytes: u32,
        /// How long the signed grants stay valid.
        #[arg(long, default_value_t = 3600)]
        grant_ttl_secs: u64,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Download a file described by a manifest from appliances, verified and resumable.
    Fetch {
        manifest: PathBuf,
        /// Appliance address to fetch from; repeat for each. Each is asked what it holds.
        #[arg(long = "node", required = true)]
        nodes: Vec<SocketAddr>,
        /// Where to write the file (OUT.trove-part and OUT.trove-state meanwhile).
        #[arg(short, long)]
        out: PathBuf,
        /// Cap on the download rate, e.g. 8MiB (per second).
        #[arg(long, value_parser = parse_size)]
        limit_rate: Option<u64>,
        /// Print a JSON report on stdout at the end.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Show an appliance's counters and capacity.
    Stats {
        #[arg(long)]
        node: SocketAddr,
        #[arg(long)]
        json: bool,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}")),
    };
    Ok(num * mult)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Hash { files } => {
            if files.is_empty() {
                bail!("name at least one file");
            }
            for f in files {
                let m = manifest_of_file(&f, CHUNK_BYTES_DEFAULT, false)?;
                println!("{}  {}", m.file_id(), f.display());
            }
            Ok(())
        }
        Command::Keygen { secret_out } => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = SigningKey::from_secret(&secret);
            write_secret(&secret_out, &key)?;
            println!("{}", key.public());
            Ok(())
        }
        Command::Put {
            file,
            key,
            nodes,
            replicas,
            manifest_out,
            chunk_bytes,
            grant_ttl_secs,
            no_progress,
        } => {
            let key = read_secret(&key)?;
            let manifest = manifest_of_file(&file, chunk_bytes, !no_progress)?;
            let manifest_out = manifest_out.unwrap_or_else(|| {
                let mut p = file.as_os_str().to_owned();
                p.push(".manifest");
                PathBuf::from(p)
            });
            std::fs::write(&manifest_out, manifest.encode())
                .with_context(|| format!("writing {}", manifest_out.display()))?;
            put(&file, &manifest, &key, &nodes, replicas, grant_ttl_secs, !no_progress).await?;
            println!("{}", manifest.file_id());
            Ok(())
        }
        Command::Fetch {
            manifest,
            nodes,
            out,
            limit_rate,
            json,
            no_progress,
        } => {
            let bytes = std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            let manifest = Manifest::decode_self_checked(&bytes)
                .with_context(|| format!("{} is not a valid manifest", manifest.display()))?;
            fetch(&manifest, nodes, &out, limit_rate, json, !no_progress).await
        }
        Command::Stats { node, json } => {
            let stats = net::connect(node)
                .await
                .with_context(|| format!("connecting to {node}"))?
                .stats()
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "node_id": stats.node_id.to_string(),
                        "version": stats.version,
                        "chunks": stats.chunks,
                        "used_bytes": stats.used_bytes,
                        "capacity_bytes": stats.capacity_bytes,
                        "disk_free_bytes": stats.disk_free_bytes,
                        "quarantined": stats.quarantined,
                        "uptime_s": stats.uptime_s,
                        "bytes_served": stats.bytes_served,
                        "bytes_stored": stats.bytes_stored,
                    })
                );
            } else {
                println!("node        {}", stats.node_id);
                println!("version     {}", stats.version);
                println!("chunks      {} ({} quarantined)", stats.chunks, stats.quarantined);
                println!("used        {} of {} bytes", stats.used_bytes, stats.capacity_bytes);
                println!("disk free   {} bytes", stats.disk_free_bytes);
                println!(
                    "served      {} bytes; stored {} bytes",
                    stats.bytes_served, stats.bytes_stored
                );
                println!("uptime      {} s", stats.uptime_s);
            }
            Ok(())
        }
    }
}

fn bar(len: u64, show: bool, what: &str) -> ProgressBar {
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
fn manifest_of_file(path: &Path, chunk_bytes: u32, progress: bool) -> anyhow::Result<Manifest> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let pb = bar(len, progress && len > 64 << 20, "hashing");
    let mut b = ManifestBuilder::new(chunk_bytes).context("bad --chunk-bytes")?;
    let mut buf = vec![0u8; 1 << 20];
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

fn write_secret(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(f, "{}", trove_common::hex::encode(&key.secret()))?;
    Ok(())
}

fn read_secret(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let secret = trove_common::hex::decode::<32>(text.trim())
        .with_context(|| format!("{} is not a hex secret key", path.display()))?;
    Ok(SigningKey::from_secret(&secret))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Chunks buffered per node ahead of the socket.
const PUT_QUEUE_CHUNKS: usize = 4;

async fn put(
    file: &Path,
    manifest: &Manifest,
    key: &SigningKey,
    nodes: &[SocketAddr],
    replicas: u16,
    grant_ttl_secs: u64,
    progress: bool,
) -> anyhow::Result<()> {
    let replicas = usize::from(replicas).min(nodes.len());
    let pb = bar(manifest.size() * replicas as u64, progress, "putting");
    let mut queues = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for &addr in nodes {
        let (tx, rx) = mpsc::channel::<(ChunkId, Grant, Arc<Vec<u8>>)>(PUT_QUEUE_CHUNKS);
        queues.push(tx);
        let pb = pb.clone();
        tasks.spawn(async move {
            put_to_node(addr, rx, pb)
                .await
                .with_context(|| format!("putting to {addr}"))
        });
    }
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let expires = now_s() + grant_ttl_secs;
    for (i, chunk) in manifest.chunks().enumerate() {
        let mut bytes = vec![0u8; chunk.len() as usize];
        f.read_exact(&mut bytes)
            .with_context(|| format!("reading {} (did it change?)", file.display()))?;
        if !chunk.verify(&bytes) {
            bail!("{} changed while it was being put", file.display());
        }
        let bytes = Arc::new(bytes);
        let grant = key.grant(chunk, expires);
        for k in 0..replicas {
            let q = &queues[(i + k) % nodes.len()];
            if q.send((chunk, grant.clone(), bytes.clone())).await.is_err() {
                break; // that node's task failed; its error is reported below
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
    first_error.map_or(Ok(()), Err)
}

async fn put_to_node(
    addr: SocketAddr,
    mut rx: mpsc::Receiver<(ChunkId, Grant, Arc<Vec<u8>>)>,
    pb: ProgressBar,
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
            if sent_tx.send((req, chunk, bytes.len() as u64)).await.is_err() {
                break;
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
        }
        anyhow::Ok(())
    };
    tokio::try_join!(send, recv)?;
    Ok(())
}

async fn fetch(
    manifest: &Manifest,
    nodes: Vec<SocketAddr>,
    out: &Path,
    limit_rate: Option<u64>,
    json: bool,
    progress: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let holders = Holders::discover(manifest, nodes).await;
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
        println!(
            "{}",
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
        );
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
