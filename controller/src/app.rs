//! The controller's shared state and the few operations every part needs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::Notify;
use trove_common::control::{self, Command, NodeSecret, Order};
use trove_common::grant::SigningKey;
use trove_common::{ChunkId, NodeId};

use crate::db::Db;
use crate::metrics::Metrics;

pub struct App {
    pub db: Db,
    pub key: SigningKey,
    pub mqtt: AsyncClient,
    /// What appliances should dial to reach the broker (goes into join tokens).
    pub broker_for_nodes: String,
    pub grace_s: i64,
    pub boot_id: u64,
    pub metrics: Metrics,
    pub repair: Mutex<RepairState>,
    /// What repair should look at next (see [`Dirty`]).
    pub dirty: Mutex<Dirty>,
    /// Something changed that repair should look at soon.
    pub wake_repair: Notify,
    /// Nodes whose inventory should be pulled.
    pub wake_inventory: Notify,
    /// Failed logins, for rate limiting.
    pub logins: crate::accounts::LoginLimiter,
    /// Chunks whose files' availability must be recomputed (see `availability.rs`).
    pub availability_dirty: Mutex<HashSet<ChunkId>>,
    /// MQTT messages received and not yet applied: repair waits a little while this is not 0.
    pub ingest_queued: AtomicUsize,
    /// Where browser uploads are spooled (`DATA/uploads`), emptied at start-up: a file left
    /// there by a crash belongs to an upload nobody is waiting for any more.
    pub uploads_dir: std::path::PathBuf,
    /// How long a browser session's token is good for, from its login (see
    /// [`crate::accounts::SESSION_LABEL`]).
    pub session_lifetime_s: i64,
    /// Free space a browser upload must leave on the uploads directory's disk.
    pub upload_reserve_bytes: u64,
    /// What the appliances last said is moving over their connections (the fleet view).
    pub live: crate::live::Live,
    secrets: Mutex<HashMap<NodeId, NodeSecret>>,
    last_command_id: AtomicU64,
}

/// Work for the repair loop. Changes to single chunks (a `have` delta) mark those chunks;
/// changes that touch many (a node going on- or offline, a new inventory, a share) ask for
/// a full pass, now or at a given time (when an offline node's grace period runs out). So a
/// busy announce path costs repair only the chunks it touched.
#[derive(Default)]
pub struct Dirty {
    pub chunks: HashSet<ChunkId>,
    pub all: bool,
    pub all_at: Option<i64>,
}

/// An order sent for (chunk, node) and not yet seen through.
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    pub command_id: u64,
    pub issued_at: i64,
    /// A deletion (else a copy).
    pub delete: bool,
    /// For a copy, the data address it is copied from (the fleet view draws it).
    pub from_addr: Option<std::net::SocketAddr>,
}

/// Orders sent and not yet seen through, and what became of the others.
#[derive(Default)]
pub struct RepairState {
    /// Ordered by chunk, so one chunk's orders are a range.
    pub in_flight: BTreeMap<(ChunkId, NodeId), InFlight>,
    /// Chunks that need work a pass had no room to order: later passes take them a slice at a
    /// time, so a big repair costs each pass a bounded lookup instead of a full one.
    pub backlog: Backlog,
    pub done: u64,
    pub failed: u64,
    pub under_replicated: u64,
    pub over_replicated: u64,
    pub unavailable: u64,
}

const BACKLOG_MAX: usize = 1 << 16;

/// A queue of chunks without repeats, at most [`BACKLOG_MAX`] long.
#[derive(Default)]
pub struct Backlog {
    queue: VecDeque<ChunkId>,
    queued: HashSet<ChunkId>,
}

impl Backlog {
    pub fn push(&mut self, chunk: ChunkId) {
        // Past this, the next full pass finds the rest again: memory stays bounded.
        if self.queue.len() >= BACKLOG_MAX {
            return;
        }
        if self.queued.insert(chunk) {
            self.queue.push_back(chunk);
        }
    }

    pub fn take(&mut self, n: usize) -> Vec<ChunkId> {
        let n = n.min(self.queue.len());
        let out: Vec<ChunkId> = self.queue.drain(..n).collect();
        for c in &out {
            self.queued.remove(c);
        }
        out
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl App {
    pub fn new(
        db: Db,
        key: SigningKey,
        mqtt: AsyncClient,
        broker_for_nodes: String,
        grace_s: i64,
        boot_id: u64,
        uploads_dir: std::path::PathBuf,
    ) -> App {
        App {
            db,
            key,
            mqtt,
            broker_for_nodes,
            grace_s,
            boot_id,
            metrics: Metrics::default(),
            repair: Mutex::new(RepairState::default()),
            dirty: Mutex::new(Dirty {
                all: true,
                ..Dirty::default()
            }),
            wake_repair: Notify::new(),
            wake_inventory: Notify::new(),
            logins: crate::accounts::LoginLimiter::default(),
            availability_dirty: Mutex::new(HashSet::new()),
            ingest_queued: AtomicUsize::new(0),
            uploads_dir,
            session_lifetime_s: crate::accounts::SESSION_LIFETIME_S,
            upload_reserve_bytes: crate::web::UPLOAD_RESERVE_BYTES,
            live: crate::live::Live::default(),
            secrets: Mutex::new(HashMap::new()),
            // Strictly increasing across restarts too: nodes ignore IDs they have passed.
            last_command_id: AtomicU64::new(now_ms() * 1000),
        }
    }

    /// A node's secret, from the cache or the database.
    pub async fn secret(&self, node: &NodeId) -> anyhow::Result<Option<NodeSecret>> {
        if let Some(s) = self.secrets.lock().expect("secrets lock").get(node) {
            return Ok(Some(s.clone()));
        }
        let Some(bytes) = self.db.node_secret(node).await? else {
            return Ok(None);
        };
        let secret = NodeSecret(bytes);
        self.secrets.lock().expect("secrets lock").insert(*node, secret.clone());
        Ok(Some(secret))
    }

    pub fn touch_chunks(&self, chunks: impl IntoIterator<Item = ChunkId>) {
        let chunks: Vec<ChunkId> = chunks.into_iter().collect();
        // What repair looks at, availability looks at too.
        self.availability_dirty
            .lock()
            .expect("availability lock")
            .extend(chunks.iter().copied());
        self.dirty.lock().expect("dirty lock").chunks.extend(chunks);
        self.wake_repair.notify_one();
    }

    pub fn touch_all(&self) {
        self.dirty.lock().expect("dirty lock").all = true;
        self.wake_repair.notify_one();
    }

    /// Asks for a full repair pass at Unix second `at`.
    pub fn touch_all_at(&self, at: i64) {
        let mut d = self.dirty.lock().expect("dirty lock");
        d.all_at = Some(d.all_at.map_or(at, |t| t.min(at)));
    }

    /// Nodes that have been told to delete `chunk` and may not have done it yet: their copy
    /// must not be counted on, nor chosen to receive the chunk again.
    pub fn pending_deletes(&self, chunk: &ChunkId) -> HashSet<NodeId> {
        let repair = self.repair.lock().expect("repair lock");
        repair
            .in_flight
            .range((*chunk, NodeId([0; 16]))..=(*chunk, NodeId([0xff; 16])))
            .filter(|(_, o)| o.delete)
            .map(|((_, n), _)| *n)
            .collect()
    }

    /// Seals and publishes an order to one node; returns its command ID.
    pub async fn command(&self, node: &NodeId, order: Order) -> anyhow::Result<u64> {
        let secret = self
            .secret(node)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no secret for node {node}"))?;
        let id = self.last_command_id.fetch_add(1, Ordering::Relaxed) + 1;
        let topic = control::node_topic(node, "cmd");
        let payload = secret.seal(
            &topic,
            &Command {
                id,
                issued_at_s: now_s() as u64,
                order,
            },
        );
        self.mqtt.publish(topic, QoS::AtLeastOnce, false, payload).await?;
        self.metrics.commands_sent.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }
}
