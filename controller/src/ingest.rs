//! MQTT ingest: the controller's view of the fleet, kept from what appliances announce.
//!
//! The rumqttc event loop only receives; messages are handed to a separate task through a
//! bounded queue, so slow database writes never stall keep-alives. Every message must open
//! with its node's secret (MAC over topic and body) or it is dropped with a logged reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{Event, EventLoop, Packet, QoS};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use trove_common::NodeId;
use trove_common::control::{self, ControllerState, Have, NodeEvent, NodeInfo, NodeState, Outcome, Transfers};

use crate::app::{App, now_s};
use crate::db::HaveDelta;

/// Messages waiting for the database.
const INGEST_QUEUE_MAX: usize = 4096;
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub async fn run(app: Arc<App>, mut events: EventLoop) {
    let (tx, rx) = mpsc::channel::<(String, Vec<u8>)>(INGEST_QUEUE_MAX);
    tokio::spawn(process(app.clone(), rx));
    let mut backoff = Duration::from_millis(100);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                info!("connected to the MQTT broker");
                if let Err(e) = on_connect(&app).await {
                    warn!(error = %e, "subscribing after connect failed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                app.ingest_queued.fetch_add(1, Ordering::Relaxed);
                if tx.send((p.topic, p.payload.to_vec())).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "MQTT connection lost; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}

async fn on_connect(app: &App) -> anyhow::Result<()> {
    // Whatever appliances announced while we were not subscribed is lost, and a gap in a `have`
    // sequence only shows when the next delta arrives, which may be never: re-read everyone.
    app.db.mark_all_needs_inventory().await?;
    app.wake_inventory.notify_one();
    for leaf in ["state", "info", "have", "events", "transfers"] {
        app.mqtt
            .subscribe(format!("{}/node/+/{leaf}", control::TOPIC_ROOT), QoS::AtLeastOnce)
            .await?;
    }
    // Tell every appliance we are (back): they re-announce, so nothing depends on the broker
    // having kept retained messages.
    let state = ControllerState {
        boot_id: app.boot_id,
        online: true,
    }
    .sign(&app.key);
    app.mqtt
        .publish(control::controller_state_topic(), QoS::AtLeastOnce, true, state)
        .await?;
    Ok(())
}

/// `have` messages applied in one transaction at most. Only what is already queued is
/// grouped (nothing waits for a group to fill), so this bounds how long one transaction holds
/// the write lock and how much one failure retries message by message.
const HAVE_GROUP_MAX: usize = 16;

/// What ingest must know of a node to check a `have`'s sequence. Only ingest writes a node's
/// `boot_id` and `have_seq`, so this is kept here instead of read back for every message;
/// an entry is dropped whenever its node's state changes or a write fails.
#[derive(Clone, Copy)]
struct HaveSeq {
    num: i64,
    boot_id: Option<i64>,
    have_seq: i64,
}

struct Opened {
    node: NodeId,
    have: Have,
}

async fn process(app: Arc<App>, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
    let mut seqs: HashMap<NodeId, HaveSeq> = HashMap::new();
    let mut queued = Vec::with_capacity(HAVE_GROUP_MAX);
    let mut group = Vec::with_capacity(HAVE_GROUP_MAX);
    while let Some(first) = rx.recv().await {
        queued.push(first);
        while queued.len() < HAVE_GROUP_MAX {
            match rx.try_recv() {
                Ok(m) => queued.push(m),
                Err(_) => break,
            }
        }
        let taken = queued.len();
        for (topic, payload) in queued.drain(..) {
            app.metrics.mqtt_messages.fetch_add(1, Ordering::Relaxed);
            let result = match control::parse_node_topic(&topic) {
                Some((node, "have")) => open_have(&app, node, &topic, &payload).await.map(|h| {
                    if let Some(h) = h {
                        group.push(h);
                    }
                }),
                // In memory only and unordered with the rest: no need to flush the group.
                Some((node, "transfers")) => record_transfers(&app, node, &topic, &payload).await,
                parsed => {
                    // Everything else is ordered after the `have`s before it (a new boot must
                    // not be applied before the deltas of the old one).
                    apply_haves(&app, &mut seqs, &mut group).await;
                    if let Some((node, "state")) = parsed {
                        seqs.remove(&node);
                    }
                    handle(&app, &topic, &payload).await
                }
            };
            if let Err(reason) = result {
                app.metrics.mqtt_rejected.fetch_add(1, Ordering::Relaxed);
                warn!(%topic, %reason, "ignored MQTT message");
            }
        }
        apply_haves(&app, &mut seqs, &mut group).await;
        app.ingest_queued.fetch_sub(taken, Ordering::Relaxed);
    }
}

/// Opens and checks a `have`; `None` for an empty (retained-clearing) message.
async fn open_have(app: &App, node: NodeId, topic: &str, payload: &[u8]) -> anyhow::Result<Option<Opened>> {
    if payload.is_empty() {
        return Ok(None);
    }
    let secret = app
        .secret(&node)
        .await?
        .ok_or_else(|| anyhow::anyhow!("unknown node {node}"))?;
    let have: Have = secret.open(topic, payload)?;
    if have.added.len() + have.removed.len() > control::HAVE_BATCH_MAX {
        anyhow::bail!(
            "have delta of {} changes is over the batch limit",
            have.added.len() + have.removed.len()
        );
    }
    Ok(Some(Opened { node, have }))
}

/// Opens a `transfers` report and keeps it for the fleet view (`live.rs`).
async fn record_transfers(app: &App, node: NodeId, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
    let secret = app
        .secret(&node)
        .await?
        .ok_or_else(|| anyhow::anyhow!("unknown node {node}"))?;
    let t: Transfers = secret.open(topic, payload)?;
    app.live.record(node, t, std::time::Instant::now())?;
    Ok(())
}

/// Applies a group of `have`s in one transaction; if that fails, each on its own, so one bad
/// message costs only itself.
async fn apply_haves(app: &App, seqs: &mut HashMap<NodeId, HaveSeq>, group: &mut Vec<Opened>) {
    if group.is_empty() {
        return;
    }
    if group.len() > 1 {
        match apply_group(app, seqs, group).await {
            Ok(()) => {
                group.clear();
                return;
            }
            Err(e) => {
                seqs.clear();
                warn!(error = %e, messages = group.len(), "applying a group of have messages failed; one by one");
            }
        }
    }
    for one in group.drain(..) {
        if let Err(reason) = apply_group(app, seqs, std::slice::from_ref(&one)).await {
            seqs.remove(&one.node);
            app.metrics.mqtt_rejected.fetch_add(1, Ordering::Relaxed);
            warn!(node = %one.node, %reason, "ignored have message");
        }
    }
}

async fn apply_group(app: &App, seqs: &mut HashMap<NodeId, HaveSeq>, group: &[Opened]) -> anyhow::Result<()> {
    // Sequence checks run in message order on a copy, kept only once the transaction commits.
    let mut next: HashMap<NodeId, HaveSeq> = HashMap::new();
    let mut deltas = Vec::with_capacity(group.len());
    let mut gaps = Vec::new();
    for Opened { node, have } in group {
        let seq = match next.get(node).or_else(|| seqs.get(node)) {
            Some(s) => *s,
            None => {
                let row = app
                    .db
                    .node(node)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("node {node} vanished"))?;
                HaveSeq {
                    num: row.num,
                    boot_id: row.boot_id,
                    have_seq: row.have_seq,
                }
            }
        };
        let gap = seq.boot_id != Some(have.boot_id as i64) || have.seq as i64 != seq.have_seq + 1;
        if gap {
            gaps.push((*node, have.seq, seq.have_seq));
        }
        next.insert(
            *node,
            HaveSeq {
                have_seq: have.seq as i64,
                ..seq
            },
        );
        deltas.push(HaveDelta {
            node,
            num: seq.num,
            seq: have.seq as i64,
            gap,
            added: &have.added,
            removed: &have.removed,
        });
    }
    app.db.apply_haves(&deltas).await?;
    seqs.extend(next);
    let changes: usize = group.iter().map(|o| o.have.added.len() + o.have.removed.len()).sum();
    app.metrics.have_changes.fetch_add(changes as u64, Ordering::Relaxed);
    for (node, seq, last) in &gaps {
        debug!(%node, seq, last, "have sequence gap: will pull the inventory");
    }
    if !gaps.is_empty() {
        app.wake_inventory.notify_one();
    }
    app.touch_chunks(
        group
            .iter()
            .flat_map(|o| o.have.added.iter().chain(&o.have.removed))
            .copied(),
    );
    Ok(())
}

async fn handle(app: &App, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
    let (node, leaf) = control::parse_node_topic(topic).ok_or_else(|| anyhow::anyhow!("not a node topic"))?;
    if payload.is_empty() {
        // An empty retained message clears a topic; nothing to learn from it.
        return Ok(());
    }
    let secret = app
        .secret(&node)
        .await?
        .ok_or_else(|| anyhow::anyhow!("unknown node {node}"))?;
    let now = now_s();
    match leaf {
        "state" => {
            let state: NodeState = secret.open(topic, payload)?;
            let row = app
                .db
                .node(&node)
                .await?
                .ok_or_else(|| anyhow::anyhow!("node {node} vanished"))?;
            match state {
                NodeState::Online { boot_id } => {
                    let new_boot = row.boot_id != Some(boot_id as i64);
                    app.db.set_node_state(&node, true, boot_id as i64, now).await?;
                    info!(%node, boot_id, new_boot, "node online");
                    app.wake_inventory.notify_one();
                }
                NodeState::Offline { boot_id } => {
                    // A Will from an earlier boot must not take down the node's current life.
                    if row.boot_id.is_some_and(|b| b != boot_id as i64) {
                        debug!(%node, boot_id, "stale offline message from an earlier boot");
                        return Ok(());
                    }
                    app.db.set_node_state(&node, false, boot_id as i64, now).await?;
                    info!(%node, boot_id, "node offline");
                    // Its chunks are copied elsewhere only once its grace period is over.
                    app.touch_all_at(now + app.grace_s + 1);
                }
            }
            app.touch_all();
        }
        "info" => {
            let i: NodeInfo = secret.open(topic, payload)?;
            if i.data_addr.parse::<std::net::SocketAddr>().is_err() {
                anyhow::bail!("data address {:?} is not host:port", i.data_addr);
            }
            app.db
                .set_node_info(
                    &node,
                    &i.data_addr,
                    i.capacity_bytes,
                    i.used_bytes,
                    i.disk_free_bytes,
                    &i.version,
                    &i.board,
                )
                .await?;
        }
        "events" => {
            let e: NodeEvent = secret.open(topic, payload)?;
            // Success is seen through in the holdings (the node's next `have`), so a copy is
            // not ordered twice in between; a failure frees the slot for another try now.
            if let Outcome::Failed { message } = &e.outcome {
                warn!(%node, command = e.command_id, %message, "order failed");
                let mut repair = app.repair.lock().expect("repair lock");
                let key = repair
                    .in_flight
                    .iter()
                    .find(|(_, o)| o.command_id == e.command_id)
                    .map(|(k, _)| *k);
                if let Some(key) = key {
                    repair.in_flight.remove(&key);
                    repair.failed += 1;
                }
                drop(repair);
                app.wake_repair.notify_one();
            }
        }
        other => anyhow::bail!("unexpected topic leaf {other:?}"),
    }
    Ok(())
}
