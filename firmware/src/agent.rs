//! The MQTT agent: how a joined `troved` takes part in the fleet (the control plane of
//! SPEC.md). Only runs with a join token; a standalone node has no agent.
//!
//! - **Presence.** Connects as its node ID with its secret as password; the Last Will (set at
//!   every connect) is a retained, sealed `offline` for this boot. On every connection it
//!   publishes a retained `online` and `info`, subscribes to its `cmd` topic and to
//!   `controller/state`, and sends a `Have` resync marker. `info` is republished every
//!   [`INFO_INTERVAL`]. On SIGTERM it publishes `offline` itself and disconnects cleanly.
//! - **Deltas.** The store reports every chunk it gains or loses ([`watch_store`]); the
//!   [`HaveBatcher`] turns them into `Have` messages with consecutive sequence numbers, and
//!   every loss (change queue overflow, a publish that could not be queued, a dropped broker
//!   connection) becomes a skipped sequence number, which makes the controller pull the full
//!   inventory over TCP. So deltas may be lost but never silently.
//! - **Commands.** Sealed with the node's secret, checked by [`CommandGate`] (fresh, not
//!   replayed), then run: replications fetch a verified chunk from a peer and store it (the
//!   order is authenticated, so no grant is needed), bounded in number and sharing the
//!   server's body-memory budget; each result goes back on `events`.
//! - **Transfers.** While the chunk server has connections open, every
//!   [`TRANSFERS_INTERVAL`] it publishes what each moved (`traffic.rs` counts), and once more,
//!   empty, when the last has closed: the fleet view's live picture. QoS 0 and not retained:
//!   a lost one is a blink in a picture, nothing more.
//! - **Controller restarts.** A controller boot not seen before on `controller/state` makes
//!   the node re-announce everything (the controller may have lost retained messages, e.g.
//!   with an embedded broker that keeps them in memory only).
//!
//! Shape: one task drives rumqttc's event loop (it must be polled all the time, and
//! reconnects with capped exponential backoff) and forwards what matters to the agent task,
//! which owns all state and never waits on the event loop: it queues publishes with
//! `try_publish`, so a dead broker cannot stall it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter,
};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use trove_common::control::{
    Command, ControllerState, JoinToken, Link, NodeEvent, NodeInfo, NodeSecret, NodeState, Order, Outcome, PeerTraffic,
    Transfers, controller_state_topic, node_topic,
};
use trove_common::wire::ByteRange;
use trove_common::{ChunkId, NodeId, PublicKey};

use crate::agent_state::{CommandGate, ControllerWatch, HaveBatcher};
use crate::limits::{
    CHANGE_QUEUE_MAX, COMMAND_FUTURE_SKEW_S, HAVE_FLUSH_DELAY, INFO_INTERVAL, MQTT_KEEP_ALIVE, MQTT_PACKET_BYTES_MAX,
    MQTT_RECONNECT_BACKOFF_MAX, MQTT_RECONNECT_BACKOFF_MIN, MQTT_REQUESTS_MAX, MQTT_SHUTDOWN_TIMEOUT,
    REPLICATE_TIMEOUT, REPLICATIONS_CONCURRENT_MAX, REPLICATIONS_QUEUED_MAX, TRANSFERS_INTERVAL,
};
use crate::server;
use crate::store::{Change, Store};
use crate::traffic::{Peer, Taken};

/// The port of a broker address given without one.
pub const MQTT_DEFAULT_PORT: u16 = 1883;

/// What the agent needs besides the node itself.
pub struct AgentConfig {
    pub token: JoinToken,
    /// The address the chunk server is bound to.
    pub listen: SocketAddr,
    /// `--advertise`, if given.
    pub advertise: Option<SocketAddr>,
    pub board: String,
}

/// The store's changes, on their way to the agent.
pub struct ChangeFeed {
    rx: mpsc::Receiver<Change>,
    /// Set when a change did not fit in the queue (it is lost: the agent declares a gap).
    overflowed: Arc<AtomicBool>,
}

/// Registers the agent's observer on `store`. Call before anything can change the store
/// (the scrubber, the server), so that no change goes unreported.
pub fn watch_store(store: &Store) -> ChangeFeed {
    watch_store_bounded(store, CHANGE_QUEUE_MAX)
}

fn watch_store_bounded(store: &Store, queue_max: usize) -> ChangeFeed {
    let (tx, rx) = mpsc::channel(queue_max);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    // The observer runs on store threads and must never block: a full queue loses the change
    // and raises the flag instead.
    let registered = store.set_observer(Box::new(move |change| {
        if tx.try_send(change).is_err() {
            flag.store(true, Ordering::Release);
        }
    }));
    assert!(registered, "the store already has an observer");
    ChangeFeed { rx, overflowed }
}

/// A running agent.
pub struct Agent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Agent {
    pub fn spawn(config: AgentConfig, node: Arc<server::Node>, feed: ChangeFeed) -> anyhow::Result<Agent> {
        let token = &config.token;
        let (host, port) = split_host_port(&token.broker)?;
        let boot_id = getrandom::u64().map_err(|e| anyhow!("no randomness for a boot ID: {e}"))?;
        let id = token.node_id;
        let topics = Topics::new(&id);
        let mut options = MqttOptions::new(id.to_string(), host, port);
        options
            .set_credentials(id.to_string(), token.secret.password())
            .set_keep_alive(MQTT_KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MQTT_PACKET_BYTES_MAX, MQTT_PACKET_BYTES_MAX)
            .set_last_will(LastWill::new(
                topics.state.clone(),
                token.secret.seal(&topics.state, &NodeState::Offline { boot_id }),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, eventloop) = AsyncClient::new(options, MQTT_REQUESTS_MAX);
        let (loop_tx, loop_rx) = mpsc::channel(64);
        tokio::spawn(drive(eventloop, loop_tx, token.broker.clone()));
        let (outcomes_tx, outcomes_rx) = mpsc::channel(REPLICATIONS_QUEUED_MAX);
        let (stop, stop_rx) = oneshot::channel();
        info!(node = %id, boot_id, broker = %token.broker, "joining the fleet over MQTT");
        let agent = Run {
            boot_id,
            secret: token.secret.clone(),
            controller_key: token.controller_key(),
            broker: token.broker.clone(),
            listen: config.listen,
            advertise: config.advertise,
            data_addr: config.advertise.unwrap_or(config.listen),
            board: config.board,
            topics,
            client,
            node,
            connected: false,
            transfers_reported: false,
            transfers_since: Instant::now(),
            batcher: HaveBatcher::new(boot_id, HAVE_FLUSH_DELAY),
            gate: CommandGate::new(COMMAND_FUTURE_SKEW_S),
            watch: ControllerWatch::default(),
            replication_slots: Arc::new(Semaphore::new(REPLICATIONS_CONCURRENT_MAX)),
            replications_queued: Arc::new(Semaphore::new(REPLICATIONS_QUEUED_MAX)),
            outcomes_tx,
        };
        // The agent takes the counters every second from now on.
        agent.node.traffic.enable();
        let task = tokio::spawn(agent.run(loop_rx, feed, outcomes_rx, stop_rx));
        Ok(Agent { stop, task })
    }

    /// Announces `offline` and disconnects cleanly (so the broker does not publish the Will),
    /// waiting at most about [`MQTT_SHUTDOWN_TIMEOUT`].
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(MQTT_SHUTDOWN_TIMEOUT + Duration::from_millis(200), self.task).await;
    }
}

/// What the event-loop task tells the agent.
enum LoopEvent {
    Connected,
    Lost,
    Message(Publish),
    DisconnectSent,
}

/// Polls rumqttc's event loop forever: it sends what the agent queued, answers pings,
/// and reconnects (with capped exponential backoff) when the broker goes away.
async fn drive(mut eventloop: EventLoop, tx: mpsc::Sender<LoopEvent>, broker: String) {
    let mut backoff = MQTT_RECONNECT_BACKOFF_MIN;
    let mut connected = false;
    let mut failures: u64 = 0;
    loop {
        let event = match eventloop.poll().await {
            // rumqttc reports a refused CONNECT as an error, so a ConnAck here is a success.
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                backoff = MQTT_RECONNECT_BACKOFF_MIN;
                failures = 0;
                LoopEvent::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => LoopEvent::Message(p),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx.send(LoopEvent::DisconnectSent).await;
                return;
            }
            Ok(_) => continue,
            // Every client handle is gone: the agent has ended.
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                failures += 1;
                if connected {
                    warn!(%broker, error = %e, "lost the MQTT broker; reconnecting");
                } else if failures <= 2 || failures.is_multiple_of(60) {
                    // The first failed attempt (after losing the broker, too), then about
                    // every five minutes at the capped backoff: enough to see in a journal
                    // without filling an SD card.
                    warn!(%broker, error = %e, failures, "cannot connect to the MQTT broker; retrying");
                } else {
                    debug!(%broker, error = %e, failures, "cannot connect to the MQTT broker");
                }
                if std::mem::replace(&mut connected, false) && tx.send(LoopEvent::Lost).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MQTT_RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

struct Topics {
    state: String,
    info: String,
    have: String,
    events: String,
    transfers: String,
    cmd: String,
    controller: String,
}

impl Topics {
    fn new(id: &NodeId) -> Topics {
        Topics {
            state: node_topic(id, "state"),
            info: node_topic(id, "info"),
            have: node_topic(id, "have"),
            events: node_topic(id, "events"),
            transfers: node_topic(id, "transfers"),
            cmd: node_topic(id, "cmd"),
            controller: controller_state_topic(),
        }
    }
}

/// The agent task's state.
struct Run {
    boot_id: u64,
    secret: NodeSecret,
    controller_key: PublicKey,
    broker: String,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    /// What `info` says others should dial (worked out again at every connection).
    data_addr: SocketAddr,
    board: String,
    topics: Topics,
    client: AsyncClient,
    node: Arc<server::Node>,
    connected: bool,
    /// The last `transfers` listed peers (so one empty one follows when they are gone).
    transfers_reported: bool,
    /// When the traffic counters were last taken.
    transfers_since: Instant,
    batcher: HaveBatcher,
    gate: CommandGate,
    watch: ControllerWatch,
    replication_slots: Arc<Semaphore>,
    replications_queued: Arc<Semaphore>,
    outcomes_tx: mpsc::Sender<(u64, Outcome)>,
}

impl Run {
    async fn run(
        mut self,
        mut loop_rx: mpsc::Receiver<LoopEvent>,
        mut feed: ChangeFeed,
        mut outcomes_rx: mpsc::Receiver<(u64, Outcome)>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut info_tick = tokio::time::interval(INFO_INTERVAL);
        info_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info_tick.tick().await; // the first tick is immediate; info goes out on connecting
        let mut transfers_tick = tokio::time::interval(TRANSFERS_INTERVAL);
        transfers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = Vec::with_capacity(256);
        // The store's observer holds the sender for the life of the process; should it ever
        // go, stop asking (an empty closed channel answers at once, forever).
        let mut store_feed_open = true;
        loop {
            let flush_at = if self.connected {
                self.batcher.poll_timeout()
            } else {
                None
            };
            let flush_sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                flush_at.unwrap_or_else(|| Instant::now() + INFO_INTERVAL),
            ));
            tokio::select! {
                _ = &mut stop => {
                    self.shutdown(&mut loop_rx).await;
                    return;
                }
                event = loop_rx.recv() => match event {
                    Some(LoopEvent::Connected) => self.on_connected().await,
                    Some(LoopEvent::Lost) => self.connected = false,
                    Some(LoopEvent::Message(p)) => self.on_message(&p),
                    Some(LoopEvent::DisconnectSent) | None => {
                        warn!("the MQTT event loop ended; the agent stops");
                        return;
                    }
                },
                n = feed.rx.recv_many(&mut changes, 256), if store_feed_open => {
                    store_feed_open = n > 0;
                    // A change lost to a full queue happened before any change received after
                    // it: account for the loss before reporting those.
                    self.check_overflow(&feed);
                    for change in changes.drain(..n) {
                        self.batcher.handle_change(Instant::now(), change);
                        if self.connected {
                            self.flush_haves(); // a full delta leaves before the next change
                        }
                    }
                }
                Some((command_id, outcome)) = outcomes_rx.recv() => self.publish_event(command_id, outcome),
                _ = info_tick.tick() => if self.connected {
                    self.publish_info();
                },
                _ = transfers_tick.tick() => self.report_transfers(),
                _ = flush_sleep, if flush_at.is_some() => {}
            }
            self.check_overflow(&feed);
            if self.connected {
                self.flush_haves();
            }
        }
    }

    fn check_overflow(&mut self, feed: &ChangeFeed) {
        if feed.overflowed.swap(false, Ordering::AcqRel) {
            warn!(
                limit = CHANGE_QUEUE_MAX,
                "store changes overflowed their queue; the next Have skips a sequence number \
                 so the controller pulls the full inventory"
            );
            self.batcher.gap();
        }
    }

    async fn on_connected(&mut self) {
        self.connected = true;
        self.data_addr = advertised_addr(self.listen, self.advertise, &self.broker).await;
        info!(broker = %self.broker, data_addr = %self.data_addr, "connected to the MQTT broker");
        // A clean session forgets subscriptions: make them again on every connection.
        let filters =
            [&self.topics.cmd, &self.topics.controller].map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
        if let Err(e) = self.client.try_subscribe_many(filters) {
            warn!(error = %e, "could not queue the MQTT subscriptions");
        }
        // Deltas queued before the connection dropped may never have reached the broker.
        self.announce();
    }

    /// Publishes state and info, and starts a fresh `Have` run (a gap), so that whoever
    /// listens learns everything again.
    fn announce(&mut self) {
        self.publish(&self.topics.state, &NodeState::Online { boot_id: self.boot_id }, true);
        self.publish_info();
        self.batcher.resync(Instant::now());
    }

    fn publish_info(&self) {
        let store = &self.node.store;
        let info = NodeInfo {
            boot_id: self.boot_id,
            data_addr: self.data_addr.to_string(),
            capacity_bytes: store.capacity_bytes(),
            used_bytes: store.used_bytes(),
            disk_free_bytes: store.disk_free_bytes(),
            chunks: store.n_chunks(),
            version: env!("CARGO_PKG_VERSION").into(),
            board: self.board.clone(),
        };
        self.publish(&self.topics.info, &info, true);
    }

    /// Publishes what moved over the data plane since the last call, while connections are
    /// open or something moved, and once more (empty) after that.
    fn report_transfers(&mut self) {
        let now = Instant::now();
        let Taken { open, moved } = self.node.traffic.take();
        let interval = now.duration_since(std::mem::replace(&mut self.transfers_since, now));
        let busy = open > 0 || !moved.is_empty();
        if !self.connected || !(busy || self.transfers_reported) {
            return;
        }
        let msg = Transfers {
            boot_id: self.boot_id,
            interval_ms: (interval.as_millis() as u32).max(1),
            peers: moved
                .into_iter()
                .map(|(peer, sent, received)| PeerTraffic {
                    peer: peer.addr.to_string(),
                    link: match peer.dialed_from {
                        Some(local) => Link::Dialed {
                            local: local.to_string(),
                        },
                        None => Link::Accepted,
                    },
                    sent_bytes: sent,
                    received_bytes: received,
                })
                .collect(),
        };
        self.transfers_reported = !msg.peers.is_empty();
        let payload = self.secret.seal(&self.topics.transfers, &msg);
        // At most once: a lost one costs a blink of the fleet view, and no PUBACK is owed.
        if let Err(e) = self
            .client
            .try_publish(&self.topics.transfers, QoS::AtMostOnce, false, payload)
        {
            debug!(error = %e, "could not queue a transfers report");
        }
    }

    fn flush_haves(&mut self) {
        let now = Instant::now();
        while let Some(have) = self.batcher.poll_flush(now) {
            debug!(
                seq = have.seq,
                added = have.added.len(),
                removed = have.removed.len(),
                "have"
            );
            if !self.publish(&self.topics.have, &have, false) {
                self.batcher.gap();
            }
        }
    }

    fn publish_event(&self, command_id: u64, outcome: Outcome) {
        match &outcome {
            Outcome::Failed { message } => warn!(command = command_id, %message, "command failed"),
            other => info!(command = command_id, outcome = ?other, "command done"),
        }
        let event = NodeEvent {
            boot_id: self.boot_id,
            command_id,
            outcome,
        };
        self.publish(&self.topics.events, &event, false);
    }

    /// Seals and queues a QoS 1 publish; never waits. False if it could not be queued.
    fn publish<T: Serialize>(&self, topic: &str, msg: &T, retain: bool) -> bool {
        let payload = self.secret.seal(topic, msg);
        match self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => true,
            Err(e) => {
                warn!(topic, error = %e, "could not queue an MQTT publish");
                false
            }
        }
    }

    fn on_message(&mut self, p: &Publish) {
        if p.topic == self.topics.cmd {
            self.on_command(&p.payload);
        } else if p.topic == self.topics.controller {
            self.on_controller_state(&p.payload);
        } else {
            debug!(topic = %p.topic, "ignoring a message on a topic we did not ask for");
        }
    }

    fn on_controller_state(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return; // a cleared retained message: nothing to learn
        }
        match ControllerState::verify(payload, &self.controller_key) {
            Ok(state) => {
                if self.watch.observe(&state) {
                    info!(controller_boot = state.boot_id, "controller online; announcing again");
                    self.announce();
                }
            }
            Err(e) => warn!(reason = %e, "ignoring a controller state that does not verify"),
        }
    }

    fn on_command(&mut self, payload: &[u8]) {
        let cmd: Command = match self.secret.open(&self.topics.cmd, payload) {
            Ok(cmd) => cmd,
            Err(e) => {
                warn!(reason = %e, "command dropped");
                return;
            }
        };
        if let Err(refusal) = self.gate.admit(&cmd, now_s()) {
            warn!(command = cmd.id, reason = %refusal, "command dropped");
            return;
        }
        match cmd.order {
            Order::Replicate { chunk, from } => {
                info!(command = cmd.id, %chunk, %from, "replicate");
                self.start_replication(cmd.id, chunk, from);
            }
            Order::Delete { chunk } => {
                info!(command = cmd.id, %chunk, "delete");
                let store = self.node.store.clone();
                let tx = self.outcomes_tx.clone();
                tokio::spawn(async move {
                    let outcome = match tokio::task::spawn_blocking(move || store.remove(&chunk)).await {
                        Ok(Ok(_was_held)) => Outcome::Deleted { chunk },
                        Ok(Err(e)) => Outcome::Failed {
                            message: format!("deleting {chunk}: {e}"),
                        },
                        Err(e) => Outcome::Failed {
                            message: format!("deleting {chunk}: {e}"),
                        },
                    };
                    let _ = tx.send((cmd.id, outcome)).await;
                });
            }
            Order::Reannounce => {
                info!(command = cmd.id, "reannounce");
                self.announce();
            }
        }
    }

    fn start_replication(&self, command_id: u64, chunk: ChunkId, from: String) {
        let Ok(queued) = self.replications_queued.clone().try_acquire_owned() else {
            self.publish_event(
                command_id,
                Outcome::Failed {
                    message: format!("busy: {REPLICATIONS_QUEUED_MAX} replications already queued"),
                },
            );
            return;
        };
        let slots = self.replication_slots.clone();
        let node = self.node.clone();
        let tx = self.outcomes_tx.clone();
        tokio::spawn(async move {
            let _queued = queued;
            let _slot = slots.acquire_owned().await.expect("the slots are never closed");
            let outcome = match replicate(&node, chunk, &from).await {
                Ok(bytes) => Outcome::Replicated { chunk, from, bytes },
                Err(e) => Outcome::Failed {
                    message: format!("replicating {chunk} from {from}: {e:#}"),
                },
            };
            let _ = tx.send((command_id, outcome)).await;
        });
    }

    async fn shutdown(&mut self, loop_rx: &mut mpsc::Receiver<LoopEvent>) {
        if !self.connected {
            return; // the broker has already published our Will, or never knew us
        }
        // The same message as the Will: if it cannot go out in time, the Will says it anyway.
        self.publish(&self.topics.state, &NodeState::Offline { boot_id: self.boot_id }, true);
        if let Err(e) = self.client.try_disconnect() {
            warn!(error = %e, "could not queue the MQTT disconnect; the broker will publish our Will");
            return;
        }
        // Requests leave in order, so once the DISCONNECT is out, so is `offline`.
        let sent = tokio::time::timeout(MQTT_SHUTDOWN_TIMEOUT, async {
            while let Some(event) = loop_rx.recv().await {
                match event {
                    LoopEvent::DisconnectSent => return true,
                    LoopEvent::Lost => return false,
                    _ => {}
                }
            }
            false
        })
        .await;
        if sent == Ok(true) {
            info!("announced offline and disconnected from the MQTT broker");
        } else {
            warn!("could not disconnect in time; the broker will publish our Will");
        }
    }
}

/// Fetches `chunk` from the node serving at `from` and stores it once it verifies. Returns the
/// bytes moved: 0 if the chunk was already held (then nothing is fetched).
async fn replicate(node: &server::Node, chunk: ChunkId, from: &str) -> anyhow::Result<u32> {
    let store = node.store.clone();
    if tokio::task::spawn_blocking(move || store.contains(&chunk)).await? {
        return Ok(0);
    }
    let addr = resolve(from).await?;
    // Bodies held in memory count against the same budget as puts from clients.
    let _budget = node.hold_body(u64::from(chunk.len())).await;
    let bytes = tokio::time::timeout(REPLICATE_TIMEOUT, async {
        let mut peer = trove_common::net::connect(addr).await?;
        let meter = node.traffic.open(Peer {
            addr,
            dialed_from: Some(peer.local_addr()),
        });
        // Not verified here on purpose: `store.put` hashes the bytes before it writes them
        // (and refuses a mismatch), so checking here too would hash every copy twice.
        let whole = ByteRange::new(0, chunk.len()).expect("chunks are never empty");
        let bytes = peer.danger_unverified_get_range(chunk, whole).await?;
        meter.received(bytes.len() as u64);
        Ok::<_, trove_common::net::NetError>(bytes)
    })
    .await
    .map_err(|_| anyhow!("no chunk after {}s", REPLICATE_TIMEOUT.as_secs()))??;
    let len = chunk.len();
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || store.put(&chunk, &bytes)).await??;
    node.bytes_stored
        .fetch_add(u64::from(len), std::sync::atomic::Ordering::Relaxed);
    Ok(len)
}

/// `host:port` (or `[v6]:port`, or a bare host for the default port) as rumqttc wants it.
pub fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let addr = addr.trim();
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = addr.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok((ip.to_string(), MQTT_DEFAULT_PORT));
    }
    let (host, port) = match addr.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .with_context(|| format!("broker address {addr:?}: bad port"))?,
        ),
        None => (addr, MQTT_DEFAULT_PORT),
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
        bail!("broker address {addr:?}: want host:port");
    }
    Ok((host.to_owned(), port))
}

/// Resolves a peer's data address (an IP address and port, or a host name and port).
async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(sa) = addr.parse() {
        return Ok(sa);
    }
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// The data address to announce: `--advertise` if given; else the listen address if it names
/// one interface; else (a wildcard listen address) the local address the OS would use to
/// reach the broker, with the listen port: the interface that reaches the controller's
/// network is the one peers on that network can dial.
async fn advertised_addr(listen: SocketAddr, advertise: Option<SocketAddr>, broker: &str) -> SocketAddr {
    if let Some(addr) = advertise {
        return addr;
    }
    if !listen.ip().is_unspecified() {
        return listen;
    }
    match local_ip_towards(broker).await {
        Ok(ip) => SocketAddr::new(ip, listen.port()),
        Err(e) => {
            warn!(error = %e, %listen, "cannot tell which local address reaches the broker; pass --advertise");
            listen
        }
    }
}

async fn local_ip_towards(broker: &str) -> anyhow::Result<IpAddr> {
    let (host, port) = split_host_port(broker)?;
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow!("{broker} resolves to no address"))?;
    let unspecified: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Connecting a UDP socket only asks the routing table; no packet is sent.
    let socket = std::net::UdpSocket::bind(unspecified)?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        let ok = |s: &str| split_host_port(s).unwrap();
        assert_eq!(ok("192.168.1.10:1883"), ("192.168.1.10".into(), 1883));
        assert_eq!(ok("[::1]:8883"), ("::1".into(), 8883));
        assert_eq!(ok("::1"), ("::1".into(), MQTT_DEFAULT_PORT));
        assert_eq!(ok("controller.local:1884"), ("controller.local".into(), 1884));
        assert_eq!(ok("controller.local"), ("controller.local".into(), MQTT_DEFAULT_PORT));
        assert!(split_host_port("host:port").is_err());
        assert!(split_host_port(":1883").is_err());
        assert!(split_host_port("mqtt://host:1883").is_err());
    }

    #[test]
    fn a_full_change_queue_loses_changes_visibly() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 1 << 30, 0).unwrap();
        let mut feed = watch_store_bounded(&store, 2);
        let data = vec![7u8; 3 * 16 * 1024];
        let m = trove_common::Manifest::of_bytes(&data, 16 * 1024).unwrap();
        for c in m.chunks() {
            store.put(&c, &data[c.offset() as usize..][..c.len() as usize]).unwrap();
        }
        assert!(feed.overflowed.load(Ordering::Acquire), "the third change did not fit");
        assert_eq!(feed.rx.try_recv().unwrap(), Change::Added(m.chunk(0)));
        assert_eq!(feed.rx.try_recv().unwrap(), Change::Added(m.chunk(1)));
        assert!(feed.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_advertised_address_is_one_peers_can_dial() {
        let given: SocketAddr = "10.1.2.3:7070".parse().unwrap();
        let wildcard: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let bound: SocketAddr = "127.0.0.1:7071".parse().unwrap();
        assert_eq!(advertised_addr(wildcard, Some(given), "127.0.0.1:1883").await, given);
        assert_eq!(advertised_addr(bound, None, "127.0.0.1:1883").await, bound);
        // A wildcard: the local address towards the broker (loopback here), listen port.
        assert_eq!(
            advertised_addr(wildcard, None, "127.0.0.1:1883").await,
            "127.0.0.1:7070".parse::<SocketAddr>().unwrap()
        );
    }
}
