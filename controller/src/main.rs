//! `trove-controller`: keeps the fleet's state in SQL, listens to appliances over MQTT,
//! places new files, keeps every chunk on three appliances, and serves the JSON API.
//!
//! One process runs everything by default: an embedded MQTT broker (rumqttd), SQLite in the
//! data directory, and, with `--local-nodes N`, N local appliances for a one-machine Trove.

mod accounts;
mod api;
mod app;
mod availability;
mod broker;
mod db;
mod gateway;
mod ingest;
mod live;
mod local;
mod metrics;
mod mosquitto;
mod plan;
mod provision;
mod repair;
mod search;
mod text;
mod web;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rumqttc::{LastWill, MqttOptions, QoS};
use tracing::info;
use trove_common::control::{self, ControllerState};
use trove_common::grant::SigningKey;
use trove_common::hex;

use crate::app::{App, now_s};

/// The Trove controller.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// State directory: SQLite database, signing key, admin token, local nodes.
    #[arg(long, default_value = "trove-data")]
    data: PathBuf,
    /// Where the JSON API listens (port 0 picks one; see DATA/http.addr).
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// Where the embedded MQTT broker listens (port 0 picks one; see DATA/mqtt.addr).
    #[arg(long, default_value = "0.0.0.0:1883")]
    mqtt_listen: SocketAddr,
    /// Use an external broker (e.g. Mosquitto) instead of the embedded one: mqtt://HOST:PORT.
    #[arg(long)]
    mqtt_url: Option<String>,
    /// Broker address handed to appliances in join tokens (default: derived from the above).
    #[arg(long)]
    mqtt_advertise: Option<String>,
    #[arg(long, env = "TROVE_MQTT_USERNAME")]
    mqtt_username: Option<String>,
    #[arg(long, env = "TROVE_MQTT_PASSWORD")]
    mqtt_password: Option<String>,
    /// With an external Mosquitto: keep its password and ACL files in this directory
    /// (trove.passwd, trove.acl), so each appliance logs in with its own credentials and may
    /// publish only under its own topics. Mosquitto must be reloaded when they change
    /// (hardware/systemd/trove-mosquitto-reload.path does that).
    #[arg(long, requires_all = ["mqtt_url", "mqtt_username", "mqtt_password"])]
    mosquitto_auth: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST:PORT/DB (default: SQLite in the data directory).
    #[arg(long, env = "TROVE_DATABASE_URL")]
    database_url: Option<String>,
    /// Seconds an appliance may be offline before its chunks are copied elsewhere.
    #[arg(long, default_value_t = 300)]
    grace_secs: i64,
    /// Seconds a browser session lasts from its login; then the browser logs in again.
    #[arg(long, default_value_t = accounts::SESSION_LIFETIME_S)]
    session_lifetime_secs: i64,
    /// Bytes a browser upload must leave free on the disk of DATA/uploads (the database is
    /// usually there too); an upload that would not is refused with 507.
    #[arg(long, default_value_t = web::UPLOAD_RESERVE_BYTES)]
    upload_reserve_bytes: u64,
    /// Also run this many appliances on this machine, with data under DATA/nodes/.
    #[arg(long, default_value_t = 0)]
    local_nodes: u32,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a join token for a new appliance (`troved --join TOKEN`), then exit; or, with
    /// --board and --boot, write it with the board's settings onto an SD card's boot
    /// partition, for troved to pick up at its first start.
    Enroll {
        #[arg(long)]
        name: Option<String>,
        /// Board profile (hardware/boards/): rpi2, rpi3, rpi3-32, rpi4, rpi5, rpizero2w.
        #[arg(long, requires = "boot")]
        board: Option<String>,
        /// The mounted boot partition of a freshly flashed SD card (e.g. /media/$USER/bootfs).
        #[arg(long, requires = "board")]
        boot: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    keep_freed_chunk_buffers();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttd=warn".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

/// Tells glibc's allocator to keep freed chunk buffers for reuse instead of handing them
/// back to the kernel. The gateway allocates and frees a 1 MiB buffer per chunk it
/// streams; by default glibc trims the heap top (or unmaps) on many of those frees, and the
/// next buffer is faulted in again page by page and zeroed: 28k page faults per GiB
/// streamed, 7% of the gateway's CPU. Chunk-sized buffers now come from the heap and up to
/// [`HEAP_KEPT_FREE_BYTES`] of free heap stays mapped, about twice the gateway's cache.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_chunk_buffers() {
    // SAFETY: mallopt only changes allocator parameters, and runs before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, HEAP_KEPT_FREE_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_chunk_buffers() {}

/// Allocations from this size up get their own mapping: above any chunk buffer. (On a
/// 32-bit board glibc refuses a threshold over 16 MiB, and keeps its default.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 2 * trove_common::limits::CHUNK_BYTES_MAX as libc::c_int;
/// Free heap kept mapped before glibc gives memory back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_KEPT_FREE_BYTES: libc::c_int = 128 << 20;

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", args.data.join("trove.db").display()));
    let db = db::Db::connect(&url).await?;
    let key = load_or_create_key(&args.data.join("controller.key"))?;
    let boot_id = random_u64()?;

    // The broker: embedded unless told otherwise.
    let controller_password = match db.meta("mqtt_controller_password").await? {
        Some(p) => p,
        None => {
            let p = hex::encode(&random_bytes::<24>()?);
            db.set_meta("mqtt_controller_password", &p).await?;
            p
        }
    };
    let (broker_addr, broker_for_nodes) = match &args.mqtt_url {
        Some(url) => {
            let hostport = url
                .strip_prefix("mqtt://")
                .unwrap_or(url)
                .trim_end_matches('/')
                .to_owned();
            (hostport.clone(), args.mqtt_advertise.clone().unwrap_or(hostport))
        }
        None => {
            let listen = broker_listen(args.mqtt_listen, &remembered_mqtt_port(&db).await?)?;
            if args.command.is_none() {
                // Only the broker that really listens decides the port: `enroll` with
                // default flags must not overwrite the port a running controller picked.
                db.set_meta("mqtt_port", &listen.port().to_string()).await?;
                broker::start(
                    listen,
                    db.clone(),
                    controller_password.clone(),
                    tokio::runtime::Handle::current(),
                )?;
                write_atomically(&args.data.join("mqtt.addr"), listen.to_string().as_bytes())?;
            }
            let dial = if listen.ip().is_unspecified() {
                SocketAddr::new(lan_ip(), listen.port())
            } else {
                listen
            };
            (
                dial.to_string(),
                args.mqtt_advertise.clone().unwrap_or_else(|| dial.to_string()),
            )
        }
    };
    if args.command.is_none() {
        db.set_meta("broker_for_nodes", &broker_for_nodes).await?;
    }

    let (host, port) = broker_addr
        .rsplit_once(':')
        .context("broker address must be HOST:PORT")?;
    let mut opts = MqttOptions::new(
        format!("trove-controller-{boot_id:016x}"),
        host,
        port.parse().context("broker port")?,
    );
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(control::PAYLOAD_BYTES_MAX + 4096, control::PAYLOAD_BYTES_MAX + 4096);
    match (&args.mqtt_url, &args.mqtt_username) {
        (None, _) => {
            opts.set_credentials(broker::CONTROLLER_USERNAME, controller_password.clone());
        }
        (Some(_), Some(user)) => {
            opts.set_credentials(user.clone(), args.mqtt_password.clone().unwrap_or_default());
        }
        (Some(_), None) => {}
    }
    let will = ControllerState { boot_id, online: false }.sign(&key);
    opts.set_last_will(LastWill::new(
        control::controller_state_topic(),
        will,
        QoS::AtLeastOnce,
        true,
    ));
    let (client, events) = rumqttc::AsyncClient::new(opts, 1024);

    let uploads_dir = args.data.join("uploads");
    let mut app = App::new(
        db,
        key,
        client,
        broker_for_nodes,
        args.grace_secs,
        boot_id,
        uploads_dir.clone(),
    );
    app.session_lifetime_s = args.session_lifetime_secs.max(1);
    app.upload_reserve_bytes = args.upload_reserve_bytes;
    let app = Arc::new(app);

    if let Some(Cmd::Enroll { name, board, boot }) = &args.command {
        // Before the enrollment: an unknown board must not leave a node nobody will join as.
        let board = board.as_deref().map(provision::Board::named).transpose()?;
        let broker = app
            .db
            .meta("broker_for_nodes")
            .await?
            .unwrap_or_else(|| app.broker_for_nodes.clone());
        let app = App::new(
            app.db.clone(),
            SigningKey::from_secret(&app.key.secret()),
            app.mqtt.clone(),
            broker,
            0,
            0,
            app.uploads_dir.clone(),
        );
        let enrollment = api::make_enrollment(&app, name.as_deref()).await?;
        match (board, boot) {
            (Some(board), Some(boot)) => {
                let dir = provision::write_boot_files(boot, board, &enrollment.node_id, &enrollment.token)?;
                // Not the token: it holds the node's secret, and it is on the card now.
                println!(
                    "node {} provisioned for a {} in {}",
                    enrollment.node_id,
                    board.name,
                    dir.display()
                );
                println!(
                    "copy troved built for {} (`just cross`) and hardware/install.sh onto the card too; see README",
                    board.target()
                );
            }
            _ => println!("{}", enrollment.token),
        }
        return Ok(());
    }

    // Nobody is known to be online until it says so again.
    app.db.mark_all_offline(now_s()).await?;
    let admin_token_path = args.data.join("admin.token");
    let token = format!("trove_{}", hex::encode(&random_bytes::<24>()?));
    if app.db.bootstrap_admin(&token, now_s()).await? {
        write_secret_file(&admin_token_path, &token)?;
    }

    // Left-overs of uploads cut off by a crash or power cut: nobody waits for them. (Not
    // before `enroll` above, which may run beside a serving controller.)
    let _ = std::fs::remove_dir_all(&uploads_dir);
    std::fs::create_dir_all(&uploads_dir).with_context(|| format!("creating {}", uploads_dir.display()))?;
    tokio::spawn(ingest::run(app.clone(), events));
    tokio::spawn(repair::repair_loop(app.clone()));
    tokio::spawn(repair::inventory_loop(app.clone()));
    tokio::spawn(availability::availability_loop(app.clone()));
    if let (Some(dir), Some(user), Some(password)) = (&args.mosquitto_auth, &args.mqtt_username, &args.mqtt_password) {
        mosquitto::keep_files(app.clone(), dir.clone(), user.clone(), password.clone()).await?;
    }

    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding {}", args.http))?;
    let http_addr = listener.local_addr()?;
    // No Nagle (as nginx on kept-alive connections): the gateway writes a response's
    // headers, then its first verified bytes a moment later, and those must not wait for
    // the browser to ACK the headers. (On loopback ACKs come at once: no difference there.)
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on an HTTP connection failed");
        }
    });
    write_atomically(&args.data.join("http.addr"), http_addr.to_string().as_bytes())?;
    let shown = if http_addr.ip().is_unspecified() {
        SocketAddr::new(lan_ip(), http_addr.port())
    } else {
        http_addr
    };
    info!(api = %format!("http://{shown}/api/v1"), broker = %broker_addr, database = %app.db.backend_name(), "controller running");
    println!("Trove dashboard: http://{shown}/  (API http://{shown}/api/v1, metrics http://{shown}/metrics)");
    match std::fs::read_to_string(&admin_token_path) {
        Ok(t) => println!("Admin token (also in {}): {}", admin_token_path.display(), t.trim()),
        Err(_) => println!("Admin token: see {}", admin_token_path.display()),
    }
    let locals = local::start(&app, &args.data, args.local_nodes).await?;
    let server = axum::serve(
        listener,
        api::router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    );
    let result = tokio::select! {
        r = server => r.context("HTTP server failed"),
        _ = shutdown_signal() => Ok(()),
    };
    info!("shutting down");
    locals.stop().await;
    let _ = app
        .mqtt
        .publish(
            control::controller_state_topic(),
            QoS::AtLeastOnce,
            true,
            ControllerState { boot_id, online: false }.sign(&app.key),
        )
        .await;
    result
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Port 0 for the broker means "any free one, then the same one ever after": appliances know
/// the broker only from their join token, so a restarted controller must come back where
/// they look. rumqttd cannot report what it bound, so the port is picked here (the kernel
/// hands out a free one; `broker::start` checks again).
fn broker_listen(addr: SocketAddr, remembered: &Option<u16>) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    if let Some(port) = remembered {
        return Ok(SocketAddr::new(addr.ip(), *port));
    }
    let l = std::net::TcpListener::bind(addr)?;
    Ok(l.local_addr()?)
}

async fn remembered_mqtt_port(db: &db::Db) -> anyhow::Result<Option<u16>> {
    Ok(db.meta("mqtt_port").await?.and_then(|p| p.parse().ok()))
}

/// The address this machine uses on its LAN (a UDP "connect" sends nothing; it only asks the
/// kernel which source address a route would use). Loopback when there is no route.
fn lan_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?; // TEST-NET-1: never routed to anyone
        Ok(s.local_addr()?.ip())
    };
    probe()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

fn random_u64() -> anyhow::Result<u64> {
    Ok(u64::from_le_bytes(random_bytes::<8>()?))
}

fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = hex::decode::<32>(text.trim()).with_context(|| format!("{} is damaged", path.display()))?;
            Ok(SigningKey::from_secret(&secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::from_secret(&random_bytes::<32>()?);
            write_secret_file(path, &hex::encode(&key.secret()))?;
            info!(public = %key.public(), "created the controller's signing key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(f, "{text}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
