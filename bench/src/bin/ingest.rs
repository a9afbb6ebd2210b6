//! Announce-path benchmark: simulated appliances publish `have` deltas through the broker and
//! we measure how many chunk-holding changes per second the controller ingests into SQL.
//!
//! It starts the real `trove-controller` (embedded broker; SQLite, then PostgreSQL when
//! available), enrolls the simulated nodes through the API, connects one MQTT client per node
//! with that node's credentials, publishes full batches of `HAVE_BATCH_MAX` new chunk IDs per
//! message, and polls the controller's `trove_have_changes_total` until every change is in.
//!
//! Usage: bench-ingest [CHANGES=1000000] [NODES=8] [sqlite|postgres|both]

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use trove_common::control::{self, HAVE_BATCH_MAX, Have, JoinToken, NodeState};
use trove_common::{ChunkId, Hash32};
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
    }
    if which != "sqlite" {
        let pg = Postgres::start();
        let ctl = Controller::builder().database_url(&pg.url()).start();
        results.push(("postgres", rt.block_on(run(&ctl, changes, n_nodes))?));
    }
    println!("\nannounce ingest: {changes} chunk-holding changes from {n_nodes} simulated appliances");
    for (db, (secs, rate)) in results {
        println!("{db:<10} {secs:>7.2} s   {rate:>10.0} changes/s");
    }
    Ok(())
}

async fn run(ctl: &Controller, changes: usize, n_nodes: usize) -> anyhow::Result<(f64, f64)> {
    let broker = ctl.mqtt_addr().expect("embedded broker");
    let per_node = changes.div_ceil(n_nodes);
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
        clients.push((client, token, boot_id));
    }
    // Let the state messages land first so every delta below is in sequence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = changes_ingested(ctl);

    // Build every payload before the clock starts: we measure the controller, not the sealing.
    let mut batches = Vec::new();
    for (n, (_, token, boot_id)) in clients.iter().enumerate() {
        let mut rng = TestRng::new(n as u64 + 1);
        let topic = control::node_topic(&token.node_id, "have");
        let mut left = per_node;
        let mut seq = 1;
        let mut payloads = Vec::new();
        while left > 0 {
            let k = left.min(HAVE_BATCH_MAX);
            let added = (0..k)
                .map(|i| {
                    let mut h = [0u8; 32];
                    rng.fill(&mut h);
                    ChunkId::new(Hash32(h), (i as u64 + 1) << 20, 1 << 20, false).expect("valid chunk")
                })
                .collect();
            payloads.push(token.secret.seal(
                &topic,
                &Have {
                    boot_id: *boot_id,
                    seq,
                    added,
                    removed: vec![],
                },
            ));
            seq += 1;
            left -= k;
        }
        batches.push((topic, payloads));
    }
    let total = (per_node * n_nodes) as u64;
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((secs, total as f64 / secs))
}

fn changes_ingested(ctl: &Controller) -> u64 {
    let text = http("GET", &format!("{}/metrics", ctl.url()), None, None).body;
    text.lines()
        .find_map(|l| l.strip_prefix("trove_have_changes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
