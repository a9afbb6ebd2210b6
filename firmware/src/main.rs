//! `troved`: the Trove appliance daemon.
//!
//! Stores BLAKE3-verified chunks on local disk and serves them over TCP (wire protocol v1,
//! see `trove_common::wire`). It deliberately has no database and no web framework: the
//! filesystem is its index, and it must stay small enough for a Pi Zero 2 W.
//!
//! Joined to a fleet (`--join TOKEN`, kept in `DATA/join.token`), it also speaks MQTT to the
//! controller: presence, what it holds, and the controller's orders (see `agent.rs`).
//! Without a token it runs standalone, as a plain chunk server.

mod agent;
mod agent_state;
mod config;
mod firstboot;
mod identity;
mod limits;
mod notify;
mod scrub;
mod server;
mod store;
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::info;

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
    /// Join a fleet with this token from the controller (`trove1-...`). Kept in
    /// DATA/join.token, so later starts need not repeat it. The environment variable keeps
    /// the token (it holds the node's secret) out of the process list.
    #[arg(long, env = "TROVED_JOIN", hide_env_values = true)]
    join: Option<String>,
    /// The data address other nodes and clients should dial (default: the listen address;
    /// for a wildcard one, this host's address on the route to the broker, same port).
    #[arg(long)]
    advertise: Option<std::net::SocketAddr>,
    /// Board profile name reported to the controller (default: generic).
    #[arg(long)]
    board: Option<String>,
    /// Directory of a provisioned SD card's first-boot files (`trove-controller enroll
    /// --boot`), adopted once into the data directory (default /boot/firmware/trove;
    /// "" for none).
    #[arg(long)]
    firstboot: Option<PathBuf>,
    /// Adopt the first-boot files, then exit (the systemd unit runs this as root, which
    /// the boot partition needs, before troved proper starts as its own user).
    #[arg(long)]
    firstboot_only: bool,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    config::parse_size(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        // journald and log files want plain text; colour only for a person at a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    // journald stamps each line itself: a second timestamp only makes `journalctl` wider.
    if notify::stdout_is_journal() {
        logs.without_time().init();
    } else {
        logs.init();
    }
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
        join: args.join,
        advertise: args.advertise,
        board: args.board,
        firstboot: args.firstboot,
    };
    // The first-boot files are looked for once the data directory is known, and their
    // settings sit under the config file and flags.
    let firstboot_dir = flags
        .firstboot
        .clone()
        .or_else(|| file.firstboot.clone())
        .unwrap_or_else(|| firstboot::DEFAULT_DIR.into());
    let data = flags.data.clone().or_else(|| file.data.clone());
    let adopted = match &data {
        Some(data) if !firstboot_dir.as_os_str().is_empty() => firstboot::adopt(&firstboot_dir, data)?,
        _ => None,
    };
    let provisioned = match &data {
        Some(data) => firstboot::load_provisioned(data)?,
        None => FileConfig::default(),
    };
    let mut config = Config::merge(file.or(provisioned), flags)?;
    if let Some(adopted) = &adopted {
        // Newer than any token in the config file: it was just provisioned.
        config.join = Some(adopted.token.clone());
    }
    if args.firstboot_only {
        if let Some(adopted) = adopted {
            identity::resolve(&config.data, config.join.clone(), config.trusted_key)?;
            adopted.finish()?;
        }
        return firstboot::hand_over(&config.data);
    }
    // A Pi has few cores; two workers keep a disk read and a network write going at once.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()?;
    rt.block_on(run(config, adopted))
}

async fn run(config: Config, adopted: Option<firstboot::Adopted>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data).with_context(|| format!("creating {}", config.data.display()))?;
    let identity = identity::resolve(&config.data, config.join.clone(), config.trusted_key)?;
    if let Some(adopted) = adopted {
        adopted.finish()?;
    }
    let notifier = notify::Notifier::from_env().context("NOTIFY_SOCKET")?.map(Arc::new);
    let node_id = identity.node_id;
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
    if identity.trusted_key.is_none() {
        tracing::warn!("no trusted key configured: every write will be refused");
    }
    let store = Arc::new(store);
    // Before anything can change the store, so the controller hears of every change.
    let feed = identity.join.as_ref().map(|_| agent::watch_store(&store));
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
    identity::write_atomically(&config.data.join("listen.addr"), local.to_string().as_bytes(), 0o644)?;
    info!(addr = %local, "serving chunks");
    let node = Arc::new(server::Node::new(node_id, store, identity.trusted_key));
    let agent = match (identity.join, feed) {
        (Some(token), Some(feed)) => Some(agent::Agent::spawn(
            agent::AgentConfig {
                token,
                listen: local,
                advertise: config.advertise,
                board: config.board,
            },
            node.clone(),
            feed,
        )?),
        _ => {
            info!("standalone: no join token, so no MQTT");
            None
        }
    };
    if let Some(notifier) = &notifier {
        notifier.ready(&format!("serving {} chunks on {local}", report.chunks));
        if let Some(period) = notify::watchdog_period() {
            // Read-only on purpose: a write every few seconds would wear an SD card.
            let chunks = config.data.join("chunks");
            let probe = move || std::fs::read_dir(&chunks).map(drop);
            tokio::spawn(notify::watchdog(notifier.clone(), period, probe));
        }
    }
    tokio::select! {
        r = server::serve(listener, node) => r.context("accept loop failed"),
        _ = shutdown_signal() => {
            info!("shutting down");
            if let Some(notifier) = &notifier {
                notifier.stopping();
            }
            if let Some(agent) = agent {
                agent.shutdown().await;
            }
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
