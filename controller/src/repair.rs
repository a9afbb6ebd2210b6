//! The two background loops that keep the fleet right: pulling inventories and repairing.
//!
//! Both sleep until woken (by ingest or a state change) or a tick, so an idle fleet costs
//! nothing, and both are rate limited per tick.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};
use trove_common::ChunkId;
use trove_common::control::Order;
use trove_common::limits::INVENTORY_PAGE_MAX;
use trove_common::net;

use crate::app::{App, InFlight, now_s};
use crate::plan::{self, Action, NodeFacts};

const REPAIR_TICK: Duration = Duration::from_millis(500);
/// The least time between two repair passes, however often something wakes the loop.
const REPAIR_PASS_GAP: Duration = Duration::from_millis(250);
/// A full pass over every chunk at least this often, whatever was marked.
const FULL_PASS_INTERVAL: Duration = Duration::from_secs(30);
/// Orders sent per repair pass (a pass runs at most every tick or when woken).
pub const REPAIR_ORDERS_PER_PASS: usize = 128;
/// An order not seen through by then counts as failed, and may be given again.
const ORDER_TIMEOUT_S: i64 = 60;
const INVENTORY_TICK: Duration = Duration::from_secs(2);
/// Anti-entropy: every online node's inventory is re-read this often even when nothing
/// suggests a loss, so a lost delta cannot leave the view wrong for long.
const INVENTORY_REFRESH: Duration = Duration::from_secs(600);
const TICKET_TTL_S: u64 = 300;

pub async fn repair_loop(app: Arc<App>) {
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = app.wake_repair.notified() => {}
            _ = tokio::time::sleep(REPAIR_TICK) => {}
        }
        if let Err(e) = repair_pass(&app, &mut last_full).await {
            warn!(error = %e, "repair pass failed");
            app.touch_all();
        }
        // Coalesce bursts of wake-ups (a busy ingest wakes us per message).
        tokio::time::sleep(REPAIR_PASS_GAP).await;
    }
}

pub fn node_facts(rows: &[crate::db::NodeRow]) -> Vec<NodeFacts> {
    rows.iter()
        .map(|n| NodeFacts {
            id: n.id,
            online: n.state == "online",
            offline_since: n.state_since,
            data_addr: n.data_addr.clone(),
            free_bytes: (n.capacity_bytes - n.used_bytes).min(n.disk_free_bytes).max(0) as u64,
        })
        .collect()
}

async fn repair_pass(app: &App, last_full: &mut tokio::time::Instant) -> anyhow::Result<()> {
    let now = now_s();
    let (marked, full) = {
        let mut d = app.dirty.lock().expect("dirty lock");
        let due = d.all_at.is_some_and(|t| now >= t);
        if due {
            d.all_at = None;
        }
        let full = std::mem::take(&mut d.all) || due || last_full.elapsed() >= FULL_PASS_INTERVAL;
        (std::mem::take(&mut d.chunks), full)
    };
    let (holdings, referenced) = if full {
        *last_full = tokio::time::Instant::now();
        (app.db.holdings().await?, app.db.referenced_chunks().await?)
    } else {
        // Only what changed, plus what orders under way are waiting for.
        let mut keys = marked;
        keys.extend(
            app.repair
                .lock()
                .expect("repair lock")
                .in_flight
                .keys()
                .map(|(c, _)| *c),
        );
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<_> = keys.into_iter().collect();
        (
            app.db.holdings_of_chunks(&keys).await?,
            app.db.referenced_among(&keys).await?,
        )
    };
    let looked_at: Vec<ChunkId> = if full {
        Vec::new()
    } else {
        holdings.keys().chain(&referenced).copied().collect()
    };
    let nodes = node_facts(&app.db.nodes().await?);
    let in_flight: HashSet<_> = {
        let mut repair = app.repair.lock().expect("repair lock");
        // Orders whose effect is already visible are done; old ones have failed.
        let before = repair.in_flight.len();
        let mut seen_through = 0;
        let mut timed_out = 0;
        repair.in_flight.retain(|(chunk, node), order| {
            let holds = holdings.get(chunk).is_some_and(|h| h.contains(node));
            if holds != order.delete {
                seen_through += 1;
                false
            } else if now - order.issued_at >= ORDER_TIMEOUT_S {
                timed_out += 1;
                false
            } else {
                true
            }
        });
        debug_assert!(repair.in_flight.len() + seen_through + timed_out == before);
        repair.done += seen_through as u64;
        repair.failed += timed_out as u64;
        repair.in_flight.keys().copied().collect()
    };
    let fleet = plan::Fleet {
        nodes: &nodes,
        holdings: &holdings,
        referenced: &referenced,
        in_flight: &in_flight,
    };
    let p = plan::plan(&fleet, now, app.grace_s, REPAIR_ORDERS_PER_PASS);
    if full {
        // The counts describe the whole fleet only after a full pass.
        let mut repair = app.repair.lock().expect("repair lock");
        repair.under_replicated = p.under_replicated;
        repair.over_replicated = p.over_replicated;
        repair.unavailable = p.unavailable;
    }
    if p.actions.len() >= REPAIR_ORDERS_PER_PASS {
        // Capped: there is more to do than one pass may order; look at the same again.
        let mut d = app.dirty.lock().expect("dirty lock");
        if full {
            d.all = true;
        } else {
            d.chunks.extend(looked_at);
        }
    }
    for action in p.actions {
        let (node, chunk, order, delete) = match action {
            Action::Replicate { chunk, to, from_addr } => {
                (to, chunk, Order::Replicate { chunk, from: from_addr }, false)
            }
            Action::Delete { chunk, from } => (from, chunk, Order::Delete { chunk }, true),
        };
        match app.command(&node, order.clone()).await {
            Ok(id) => {
                info!(%node, chunk = %chunk, ?order, "order sent");
                let order = InFlight {
                    command_id: id,
                    issued_at: now,
                    delete,
                };
                app.repair
                    .lock()
                    .expect("repair lock")
                    .in_flight
                    .insert((chunk, node), order);
            }
            Err(e) => warn!(%node, error = %e, "could not send order"),
        }
    }
    Ok(())
}

/// Pulls the full inventory of every online node whose holdings are in doubt (first contact,
/// a new boot, a gap in its `have` sequence), over the data plane with a signed ticket.
pub async fn inventory_loop(app: Arc<App>) {
    let mut last_pull: std::collections::HashMap<trove_common::NodeId, tokio::time::Instant> = Default::default();
    loop {
        tokio::select! {
            _ = app.wake_inventory.notified() => {}
            _ = tokio::time::sleep(INVENTORY_TICK) => {}
        }
        let nodes = match app.db.nodes().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "listing nodes failed");
                continue;
            }
        };
        let stale = |id| {
            last_pull
                .get(id)
                .is_none_or(|t: &tokio::time::Instant| t.elapsed() >= INVENTORY_REFRESH)
        };
        let due: Vec<_> = nodes
            .iter()
            .filter(|n| n.state == "online" && (n.needs_inventory || stale(&n.id)))
            .collect();
        for n in due {
            let Some(addr) = n.data_addr.as_deref().and_then(|a| a.parse().ok()) else {
                continue;
            };
            match pull_inventory(&app, n.id, addr).await {
                Ok(count) => {
                    last_pull.insert(n.id, tokio::time::Instant::now());
                    app.metrics.inventory_pulls.fetch_add(1, Ordering::Relaxed);
                    info!(node = %n.id, chunks = count, "inventory pulled");
                    app.touch_all();
                }
                Err(e) => warn!(node = %n.id, error = %e, "inventory pull failed; will retry"),
            }
        }
    }
}

async fn pull_inventory(app: &App, node: trove_common::NodeId, addr: std::net::SocketAddr) -> anyhow::Result<usize> {
    let ticket = app.key.inventory_ticket(node, now_s() as u64 + TICKET_TTL_S);
    let mut client = net::connect(addr).await?;
    if client.node_id() != node {
        anyhow::bail!("{addr} is node {}, not {node}", client.node_id());
    }
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = client.inventory(&ticket, after, INVENTORY_PAGE_MAX).await?;
        after = page.last().copied();
        all.extend(page);
        if !more {
            break;
        }
    }
    app.db.replace_holdings(&node, &all).await?;
    Ok(all.len())
}
