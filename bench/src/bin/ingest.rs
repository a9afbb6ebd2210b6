//! Announce-path benchmark: simulated appliances publish `have` deltas through the broker and
//! we measure how many chunk-holding changes per second the controller ingests into SQL.
//!
//! It starts the real `trove-controller` (embedded broker; SQLite, then PostgreSQL when
//! available), enrolls the simulated nodes through the API and connects one MQTT client per
//! node with that node's credentials. It registers files of 1 GiB (1024 chunks of random
//! hashes) through the share API, as `trove share` would, so a third of CHANGES chunks exist;
//! then every node announces its copies (chunk i lives on nodes i, i+1 and i+2 mod NODES), in
//! file order and full batches of `HAVE_BATCH_MAX`, the way appliances announce what a share
//! or a repair sent them. It polls the controller's `trove_have_changes_total` until every
//! change is in. Registration and ingest are timed apart.
//!
//! Usage: bench-ingest [CHANGES=1000000] [NODES=8] [sqlite|postgres|both]

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use trove_common::control::{self, HAVE_BATCH_MAX, Have, JoinToken, NodeInfo, NodeState};
use trove_common::{ChunkId, Hash32, Manifest, hex};
use trove_tests::{Controller, Postgres, TestRng, http};

fn main() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    if std::env::var_os("TROVE_BIN_DIR").is_none() {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("TROVE_BIN_DIR", exe.parent().expect("exe has a parent")) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let changes: usize = args.first().map_or(Ok(1_000_000), |s| s.parse())?;
    let n_nodes: usize = args.get(1).map_or(Ok(8), |s| s.parse())?;
    let which = args.get(2).map(String::as_str).unwrap_or("both");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut results = Vec::new();
    if which != "postgres" {
        let ctl = Controller::builder().start();
        results.push(("sqlite", rt.block_on(run(&ctl, changes, n_nodes))?));
        keep_log(&ctl, "sqlite")?;
    }
    if which != "sqlite" {
        let pg = Postgres::start();
        let ctl = Controller::builder().database_url(&pg.url()).start();
        results.push(("postgres", rt.block_on(run(&ctl, changes, n_nodes))?));
        keep_log(&ctl, "postgres")?;
    }
    println!("\nannounce ingest: {changes} chunk-holding changes from {n_nodes} simulated appliances");
    for (db, r) in results {
        println!(
            "{db:<10} ingest {:>7.2} s {:>10.0} changes/s   (registering {} files beforehand: {:.2} s)",
            r.ingest_s,
            r.changes as f64 / r.ingest_s,
            r.files,
            r.register_s
        );
    }
    Ok(())
}

struct Outcome {
    changes: u64,
    ingest_s: f64,
    files: usize,
    register_s: f64,
}

const CHUNKS_PER_FILE: usize = 1024;
const COPIES: usize = 3;

async fn run(ctl: &Controller, changes: usize, n_nodes: usize) -> anyhow::Result<Outcome> {
    anyhow::ensure!(n_nodes >= COPIES, "need at least {COPIES} nodes");
    let broker = ctl.mqtt_addr().expect("embedded broker");
    let mut clients = Vec::new();
    for i in 0..n_nodes {
        let token = JoinToken::decode(&ctl.enroll()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut opts = MqttOptions::new(token.node_id.to_string(), broker.ip().to_string(), broker.port());
        opts.set_credentials(token.node_id.to_string(), token.secret.password());
        opts.set_max_packet_size(control::PAYLOAD_BYTES_MAX + 4096, control::PAYLOAD_BYTES_MAX + 4096);
        opts.set_inflight(64);
        let (client, mut events) = AsyncClient::new(opts, 256);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        ready_rx.await?;
        let boot_id = 1000 + i as u64;
        let topic = control::node_topic(&token.node_id, "state");
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                true,
                token.secret.seal(&topic, &NodeState::Online { boot_id }),
            )
            .await?;
        // The share API places chunks only on nodes that said where they serve and how much room
        // they have; nobody dials this address.
        let topic = control::node_topic(&token.node_id, "info");
        let info = NodeInfo {
            boot_id,
            data_addr: format!("127.0.0.1:{}", 9000 + i),
            capacity_bytes: 1 << 50,
            used_bytes: 0,
            disk_free_bytes: 1 << 50,
            chunks: 0,
            version: "bench".into(),
            board: "bench".into(),
        };
        client
            .publish(&topic, QoS::AtLeastOnce, true, token.secret.seal(&topic, &info))
            .await?;
        clients.push((client, token, boot_id));
    }
    // Let the state messages land first so every delta below is in sequence.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let n_chunks = changes.div_ceil(COPIES);
    let mut rng = TestRng::new(7);
    let mut chunks: Vec<ChunkId> = Vec::with_capacity(n_chunks);
    let registering = Instant::now();
    let mut files = 0;
    while chunks.len() < n_chunks {
        let k = (n_chunks - chunks.len()).clamp(2, CHUNKS_PER_FILE);
        let hashes: Vec<Hash32> = (0..k)
            .map(|_| {
                let mut h = [0u8; 32];
                rng.fill(&mut h);
                Hash32(h)
            })
            .collect();
        let manifest = Manifest::from_chunk_hashes((k as u64) << 20, 1 << 20, hashes)?;
        // Only what `ShareRequest` requires: its optional fields keep their defaults.
        let body = serde_json::json!({
            "manifest": hex::encode(&manifest.encode()),
            "name": format!("bench-{files}"),
        })
        .to_string();
        let answer = http(
            "POST",
            &format!("{}/api/v1/files", ctl.url()),
            Some(&ctl.admin_token()),
            Some(&body),
        );
        anyhow::ensure!(answer.status == 200, "share failed: {} {}", answer.status, answer.body);
        chunks.extend(manifest.chunks());
        files += 1;
    }
    let register_s = registering.elapsed().as_secs_f64();
    eprintln!("registered {files} files in {register_s:.2} s; announcing");
    let before = changes_ingested(ctl);

    // Build every payload before the clock starts: we measure the controller, not the sealing.
    let mut batches = Vec::new();
    let mut total = 0;
    for (n, (_, token, boot_id)) in clients.iter().enumerate() {
        let topic = control::node_topic(&token.node_id, "have");
        let mine: Vec<ChunkId> = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| (0..COPIES).any(|k| (i + k) % n_nodes == n))
            .map(|(_, c)| *c)
            .collect();
        total += mine.len() as u64;
        let payloads = mine
            .chunks(HAVE_BATCH_MAX)
            .zip(1..)
            .map(|(added, seq)| {
                token.secret.seal(
                    &topic,
                    &Have {
                        boot_id: *boot_id,
                        seq,
                        added: added.to_vec(),
                        removed: vec![],
                    },
                )
            })
            .collect::<Vec<_>>();
        batches.push((topic, payloads));
    }
    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for ((client, _, _), (topic, payloads)) in clients.iter().zip(batches) {
        let client = client.clone();
        sends.spawn(async move {
            for p in payloads {
                client.publish(&topic, QoS::AtLeastOnce, false, p).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = changes_ingested(ctl) - before;
        if done >= total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {total} changes ingested after 10 minutes"
        );
        // Not faster: each poll counts whole tables for /metrics, stealing from the ingest.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(Outcome {
        changes: total,
        ingest_s: started.elapsed().as_secs_f64(),
        files,
        register_s,
    })
}

/// With `TROVE_TEST_LOG` set (say, `info,sqlx=debug`), the controller's log outlives the run.
fn keep_log(ctl: &Controller, db: &str) -> anyhow::Result<()> {
    if std::env::var_os("TROVE_TEST_LOG").is_some() {
        let path = std::env::temp_dir().join(format!("bench-ingest-{db}.log"));
        std::fs::write(&path, ctl.log())?;
        eprintln!("controller log: {}", path.display());
    }
    Ok(())
}

fn changes_ingested(ctl: &Controller) -> u64 {
    let text = http("GET", &format!("{}/metrics", ctl.url()), None, None).body;
    text.lines()
        .find_map(|l| l.strip_prefix("trove_have_changes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
