//! The two background loops that keep the fleet right: pulling inventories and repairing.
//!
//! Both sleep until woken (by ingest or a state change) or a tick, so an idle fleet costs
//! nothing, and both are rate limited per tick.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};
use trove_common::control::Order;
use trove_common::limits::INVENTORY_PAGE_MAX;
use trove_common::net;
use trove_common::{ChunkId, NodeId};

use crate::app::{App, InFlight, now_s};
use crate::db::ChunkState;
use crate::plan::{self, Action, NodeFacts};

const REPAIR_TICK: Duration = Duration::from_millis(500);
/// The least time between two repair passes, however often something wakes the loop.
const REPAIR_PASS_GAP: Duration = Duration::from_millis(250);
/// The longest a pass waits for queued ingest to be applied.
const REPAIR_DEFER_MAX: Duration = Duration::from_secs(2);
const REPAIR_DEFER_POLL: Duration = Duration::from_millis(20);
/// A full pass over every chunk at least this often, whatever was marked.
const FULL_PASS_INTERVAL: Duration = Duration::from_secs(30);
/// Orders sent per repair pass (a pass runs at most every tick or when woken).
pub const REPAIR_ORDERS_PER_PASS: usize = 128;
/// Backlogged chunks an incremental pass looks at: enough for a full pass's worth of orders
/// (a chunk needs one or two).
const BACKLOG_PER_PASS: usize = 4 * REPAIR_ORDERS_PER_PASS;
/// Chunks per page of a full pass.
const FULL_PASS_PAGE: usize = 4096;
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
        // During an announce storm every holder's `have` marks the same chunks in turn, and a
        // pass in between sees a chunk with some of its holders not yet recorded (and orders
        // copies they already have): while ingest has messages queued, let it catch up first,
        // for a bounded time so repair is never held off for long.
        let deferred = tokio::time::Instant::now();
        while app.ingest_queued.load(Ordering::Relaxed) > 0 && deferred.elapsed() < REPAIR_DEFER_MAX {
            tokio::time::sleep(REPAIR_DEFER_POLL).await;
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
    let nodes = node_facts(&app.db.nodes().await?);
    retire_expired_orders(app, now);
    let mut pass = Pass {
        budget: REPAIR_ORDERS_PER_PASS,
        ..Pass::default()
    };
    if full {
        *last_full = tokio::time::Instant::now();
        // A page at a time, so memory stays flat however big the fleet.
        let mut after = 0;
        loop {
            let page = app.db.chunk_states_page(after, FULL_PASS_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            pass.plan(app, &nodes, &page, now);
        }
    } else {
        // What changed (an order seen through shows as a change, in the node's next `have`)
        // and a slice of the backlog.
        let mut keys = marked;
        keys.extend(app.repair.lock().expect("repair lock").backlog.take(BACKLOG_PER_PASS));
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<ChunkId> = keys.into_iter().collect();
        pass.plan(app, &nodes, &app.db.chunk_states(&keys).await?, now);
    }
    {
        let mut repair = app.repair.lock().expect("repair lock");
        if full {
            // Counts describe the whole fleet only after a full pass, and its deferrals are
            // the whole backlog.
            repair.under_replicated = pass.counts.under_replicated;
            repair.over_replicated = pass.counts.over_replicated;
            repair.unavailable = pass.counts.unavailable;
            repair.backlog.clear();
        }
        for chunk in pass.deferred {
            repair.backlog.push(chunk);
        }
        if !repair.backlog.is_empty() {
            app.wake_repair.notify_one();
        }
    }
    for action in pass.actions {
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
                    from_addr: match &order {
                        Order::Replicate { from, .. } => from.parse().ok(),
                        _ => None,
                    },
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

/// Orders not seen through in time have failed; their chunks are looked at again.
fn retire_expired_orders(app: &App, now: i64) {
    let mut expired = Vec::new();
    app.repair
        .lock()
        .expect("repair lock")
        .in_flight
        .retain(|(chunk, _), order| {
            let alive = now - order.issued_at < ORDER_TIMEOUT_S;
            if !alive {
                expired.push(*chunk);
            }
            alive
        });
    if !expired.is_empty() {
        app.repair.lock().expect("repair lock").failed += expired.len() as u64;
        app.dirty.lock().expect("dirty lock").chunks.extend(expired);
    }
}

/// One repair pass's work, gathered over one or more batches of chunks.
#[derive(Default)]
struct Pass {
    budget: usize,
    actions: Vec<Action>,
    deferred: Vec<ChunkId>,
    counts: plan::Plan,
}

impl Pass {
    /// Settles the orders these chunks' holdings show done, then plans for them within what is
    /// left of the budget.
    fn plan(&mut self, app: &App, nodes: &[NodeFacts], states: &[ChunkState], now: i64) {
        let holdings: HashMap<ChunkId, Vec<NodeId>> = states
            .iter()
            .filter(|s| !s.holders.is_empty())
            .map(|s| (s.chunk, s.holders.clone()))
            .collect();
        let referenced: Vec<ChunkId> = states.iter().filter(|s| s.referenced).map(|s| s.chunk).collect();
        let in_flight: HashSet<(ChunkId, NodeId)> = {
            let mut repair = app.repair.lock().expect("repair lock");
            let mut seen_through = 0;
            for s in states {
                let orders = repair
                    .in_flight
                    .range((s.chunk, NodeId([0; 16]))..=(s.chunk, NodeId([0xff; 16])))
                    .map(|(k, o)| (*k, o.delete))
                    .collect::<Vec<_>>();
                for ((chunk, node), delete) in orders {
                    if s.holders.contains(&node) != delete {
                        repair.in_flight.remove(&(chunk, node));
                        seen_through += 1;
                    }
                }
            }
            repair.done += seen_through;
            repair.in_flight.keys().copied().collect()
        };
        let fleet = plan::Fleet {
            nodes,
            holdings: &holdings,
            referenced: &referenced,
            in_flight: &in_flight,
        };
        let p = plan::plan(&fleet, now, app.grace_s, self.budget - self.actions.len());
        self.counts.under_replicated += p.under_replicated;
        self.counts.over_replicated += p.over_replicated;
        self.counts.unavailable += p.unavailable;
        self.actions.extend(p.actions);
        self.deferred.extend(p.deferred);
    }
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
