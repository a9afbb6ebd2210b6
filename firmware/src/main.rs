//! `troved`: the Trove appliance daemon.
//!
//! Stores BLAKE3-verified chunks on local disk and serves them over TCP (wire protocol v1,
//! see `trove_common::wire`). It deliberately has no database and no web framework: the
//! filesystem is its index, and it must stay small enough for a Pi Zero 2 W.

mod config;
mod limits;
mod scrub;
mod server;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::info;
use trove_common::NodeId;

use crate::config::{Config, FileConfig, Size};

/// The Trove appliance daemon: stores and serves verified chunks.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TOML config file; flags given here override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to serve chunks on (default 0.0.0.0:7070; port 0 picks a free one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (chunks, node identity).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Most bytes of chunks to hold, e.g. 32GiB.
    #[arg(long, value_parser = parse_size_arg)]
    capacity: Option<u64>,
    /// Hex ed25519 public key whose grants allow writes.
    #[arg(long)]
    trusted_key: Option<String>,
    /// Disk space always left free, e.g. 64MiB.
    #[arg(long, value_parser = parse_size_arg)]
    disk_reserve: Option<u64>,
    /// Scrub speed limit, e.g. 8MiB (0: unlimited).
    #[arg(long, value_parser = parse_size_arg)]
    scrub_bytes_per_sec: Option<u64>,
    /// Seconds to rest between scrub passes.
    #[arg(long)]
    scrub_pause_secs: Option<u64>,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    config::parse_size(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        // journald and log files want plain text; colour only for a person at a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => FileConfig::default(),
    };
    let flags = FileConfig {
        listen: args.listen,
        data: args.data,
        capacity: args.capacity.map(Size::Bytes),
        trusted_key: args.trusted_key,
        disk_reserve: args.disk_reserve.map(Size::Bytes),
        scrub_bytes_per_sec: args.scrub_bytes_per_sec.map(Size::Bytes),
        scrub_pause_secs: args.scrub_pause_secs,
    };
    let config = Config::merge(file, flags)?;
    // A Pi has few cores; two workers keep a disk read and a network write going at once.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()?;
    rt.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data).with_context(|| format!("creating {}", config.data.display()))?;
    let node_id = load_or_create_node_id(&config.data)?;
    let (store, report) = store::Store::open(&config.data, config.capacity_bytes, config.disk_reserve_bytes)
        .with_context(|| format!("opening the chunk store in {}", config.data.display()))?;
    info!(
        node = %node_id,
        chunks = report.chunks,
        bytes = report.bytes,
        unfinished_writes_removed = report.tmp_removed,
        quarantined_at_open = report.quarantined,
        "chunk store open"
    );
    if config.trusted_key.is_none() {
        tracing::warn!("no trusted key configured: every write will be refused");
    }
    let store = Arc::new(store);
    scrub::spawn(
        store.clone(),
        scrub::ScrubConfig {
            bytes_per_sec: config.scrub_bytes_per_sec,
            pause: Duration::from_secs(config.scrub_pause_secs),
        },
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    // Tests and local clusters start troved on port 0 and read the real port from here.
    write_atomically(&config.data.join("listen.addr"), local.to_string().as_bytes())?;
    info!(addr = %local, "serving chunks");
    let node = Arc::new(server::Node::new(node_id, store, config.trusted_key));
    tokio::select! {
        r = server::serve(listener, node) => r.context("accept loop failed"),
        _ = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn load_or_create_node_id(data: &std::path::Path) -> anyhow::Result<NodeId> {
    let path = data.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.parse().with_context(|| format!("{} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness for a node ID: {e}"))?;
            let id = NodeId(id);
            write_atomically(&path, id.to_string().as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
