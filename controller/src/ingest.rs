//! MQTT ingest: the controller's view of the fleet, kept from what appliances announce.
//!
//! The rumqttc event loop only receives; messages are handed to a separate task through a
//! bounded queue, so slow database writes never stall keep-alives. Every message must open
//! with its node's secret (MAC over topic and body) or it is dropped with a logged reason.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{Event, EventLoop, Packet, QoS};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use trove_common::control::{self, ControllerState, Have, NodeEvent, NodeInfo, NodeState, Outcome};

use crate::app::{App, now_s};

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
    for leaf in ["state", "info", "have", "events"] {
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

async fn process(app: Arc<App>, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
    while let Some((topic, payload)) = rx.recv().await {
        app.metrics.mqtt_messages.fetch_add(1, Ordering::Relaxed);
        if let Err(reason) = handle(&app, &topic, &payload).await {
            app.metrics.mqtt_rejected.fetch_add(1, Ordering::Relaxed);
            warn!(%topic, %reason, "ignored MQTT message");
        }
    }
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
        "have" => {
            let h: Have = secret.open(topic, payload)?;
            if h.added.len() + h.removed.len() > control::HAVE_BATCH_MAX {
                anyhow::bail!(
                    "have delta of {} changes is over the batch limit",
                    h.added.len() + h.removed.len()
                );
            }
            let row = app
                .db
                .node(&node)
                .await?
                .ok_or_else(|| anyhow::anyhow!("node {node} vanished"))?;
            let gap = row.boot_id != Some(h.boot_id as i64) || h.seq as i64 != row.have_seq + 1;
            app.db.apply_have(&row, h.seq as i64, gap, &h.added, &h.removed).await?;
            app.metrics
                .have_changes
                .fetch_add((h.added.len() + h.removed.len()) as u64, Ordering::Relaxed);
            if gap {
                debug!(%node, seq = h.seq, last = row.have_seq, "have sequence gap: will pull the inventory");
                app.wake_inventory.notify_one();
            }
            app.touch_chunks(h.added.iter().chain(&h.removed).copied());
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
