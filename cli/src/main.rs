//! `trove`: the Trove command-line client.
//!
//! The user-facing commands talk to the controller (`--controller`, `TROVE_CONTROLLER`;
//! token in `--token`, `TROVE_TOKEN`): `share` registers a file and sends each byte once to
//! the appliances it names, `get` downloads a file from every online holder, `nodes`,
//! `status`, `repair` show the fleet, `rm` and `enroll` change it.
//!
//! The low-level commands of the data plane need no controller: hash a file, put its chunks
//! onto given appliances with locally signed grants, fetch it back from given appliances
//! (parallel, verified, resumable), and read an appliance's stats.
//!
//! Module map: `api` (HTTP client of the JSON API), `transfer` (hashing, the put pipeline,
//! the download driver), `files` (share, get, status, rm), `fleet` (nodes, enroll, repair).

mod api;
mod files;
mod fleet;
mod transfer;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use trove_common::Manifest;
use trove_common::download::Holders;
use trove_common::grant::SigningKey;
use trove_common::limits::CHUNK_BYTES_DEFAULT;
use trove_common::net;

use crate::api::Api;
use crate::transfer::{Send, download_and_report, manifest_of_file, send_chunks};

#[derive(Parser)]
#[command(version, about = "Trove: share files across your LAN's appliances")]
struct Cli {
    /// The controller's URL.
    #[arg(
        long,
        global = true,
        env = "TROVE_CONTROLLER",
        default_value = "http://127.0.0.1:8080"
    )]
    controller: String,
    /// API token, sent as `Authorization: Bearer`.
    #[arg(long, global = true, env = "TROVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Share a file: register it with the controller and send its chunks to the appliances
    /// it names (each byte once). Prints the FileId.
    Share {
        file: PathBuf,
        /// The name others see (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Then wait until every chunk has its full number of copies.
        #[arg(long)]
        wait: bool,
        /// Print a JSON report instead of the FileId.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Download a file by ID from every online appliance that holds it, verified and
    /// resumable.
    Get {
        id: String,
        /// Where to write it (default: the file's name in the current directory).
        #[arg(short, long)]
        out: Option<PathBuf>,
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
    /// List the appliances: state, address, chunks held, space.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Show a file's replication: chunks at their target number of copies, availability.
    Status {
        id: String,
        /// The controller's full status, per chunk.
        #[arg(long)]
        json: bool,
    },
    /// Remove a file (its chunks are freed unless another file shares them).
    Rm { id: String },
    /// Make a join token for a new appliance (`troved --join TOKEN`). Admin only.
    Enroll {
        /// A name for the fleet view.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show repair progress: chunks under or over their target, orders in flight.
    Repair {
        #[arg(long)]
        json: bool,
    },
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
    trove_common::units::parse_bytes(s).map_err(|e| e.to_string())
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
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = || Api::new(&cli.controller, cli.token.clone());
    match cli.command {
        Command::Share {
            file,
            name,
            wait,
            json,
            no_progress,
        } => {
            let opts = files::ShareOptions {
                name,
                wait,
                json,
                progress: !no_progress,
            };
            files::share(&api()?, &file, opts).await
        }
        Command::Get {
            id,
            out,
            limit_rate,
            json,
            no_progress,
        } => {
            let opts = files::GetOptions {
                out,
                limit_rate,
                json,
                progress: !no_progress,
            };
            files::get(&api()?, &id, opts).await
        }
        Command::Nodes { json } => fleet::nodes(&api()?, json).await,
        Command::Status { id, json } => files::status(&api()?, &id, json).await,
        Command::Rm { id } => files::rm(&api()?, &id).await,
        Command::Enroll { name, json } => fleet::enroll(&api()?, name, json).await,
        Command::Repair { json } => fleet::repair(&api()?, json).await,
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
            let holders = Holders::discover(&manifest, nodes).await;
            download_and_report(&manifest, holders, &out, limit_rate, json, !no_progress).await
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

/// `trove put`: chunk i goes to nodes i, i+1, ... (mod n), `replicas` of them, each with
/// a grant signed by the local key.
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
    let expires = now_s() + grant_ttl_secs;
    let mut sends = Vec::with_capacity(manifest.n_chunks() * replicas);
    for (chunk_idx, chunk) in manifest.chunks().enumerate() {
        let grant = key.grant(chunk, expires);
        for k in 0..replicas {
            sends.push(Send {
                chunk_idx,
                addr: nodes[(chunk_idx + k) % nodes.len()],
                grant: grant.clone(),
            });
        }
    }
    send_chunks(file, manifest, sends, progress).await.map(|_| ())
}

/// `n` bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
