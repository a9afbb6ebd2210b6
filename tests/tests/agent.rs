//! troved's MQTT agent, end to end: a real `troved` joined (with a join token made here) to a
//! real Mosquitto, and the test playing the controller with its own MQTT client.
//!
//! Build the binaries first: `cargo build --workspace --bins`. Needs `mosquitto` installed
//! (`apt-get install -y mosquitto`); these tests fail rather than skip without it.
//! Every wait polls with a deadline; nothing asserts on timing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use trove_common::control::{
    Command, ControllerState, Have, JoinToken, NodeEvent, NodeInfo, NodeSecret, NodeState, Order, Outcome,
    controller_state_topic, node_topic,
};
use trove_common::{ChunkId, Manifest, NodeId};
use trove_tests::*;

/// How long an MQTT message the node owes us may take (a reconnect backoff is at most 5 s).
const MQTT_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The test's own MQTT client: sees everything under trove/v1/ and can publish.

#[derive(Clone, Debug)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
}

/// An MQTT client on its own thread (so the blocking harness can wait freely), subscribed to
/// `trove/v1/#` (again after every reconnect), recording every message it receives.
struct Watcher {
    client: AsyncClient,
    msgs: Arc<Mutex<Vec<Msg>>>,
    /// How many SUBACKs it has had (one per connection).
    subscribed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn start(port: u16) -> Watcher {
        let id = format!("test-controller-{}", std::process::id());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, m, s, st) = (client.clone(), msgs.clone(), subscribed.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                while !st.load(Ordering::Relaxed) {
                    let polled = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
                    match polled {
                        Err(_) => {}
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            c.try_subscribe("trove/v1/#", QoS::AtLeastOnce)
                                .expect("queue subscribe");
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            s.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => m.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                        }),
                        Ok(Ok(_)) => {}
                        // The broker is away (a restart under test): try again soon.
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
        });
        let w = Watcher {
            client,
            msgs,
            subscribed,
            stop,
        };
        w.wait_subscribed(1);
        w
    }

    fn wait_subscribed(&self, n: u64) {
        wait_until(MQTT_DEADLINE, "the test's MQTT client to subscribe", || {
            self.subscribed.load(Ordering::SeqCst) >= n
        });
    }

    /// How many messages so far: a cursor for "after this point".
    fn mark(&self) -> usize {
        self.msgs.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<Msg> {
        self.msgs.lock().unwrap()[from..].to_vec()
    }

    /// Waits for the first message at or after `from` for which `f` says `Some`; returns
    /// that and the cursor just past it.
    fn wait_for<T>(&self, from: usize, what: &str, mut f: impl FnMut(&Msg) -> Option<T>) -> (T, usize) {
        let mut at = from;
        wait_for(MQTT_DEADLINE, what, || {
            let msgs = self.msgs.lock().unwrap();
            while at < msgs.len() {
                at += 1;
                if let Some(v) = f(&msgs[at - 1]) {
                    return Some((v, at));
                }
            }
            None
        })
    }

    fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("queueing a publish");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet as the test's "controller" sees it

/// 32 bytes nobody else will pick (tests in parallel, runs after runs).
fn fresh_bytes(label: &str) -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    *blake3::hash(format!("{label} {} {nanos} {n}", std::process::id()).as_bytes()).as_bytes()
}

struct Fleet {
    key: TestKey,
    token: JoinToken,
}

impl Fleet {
    fn new(broker_port: u16, name: &str) -> Fleet {
        let key = TestKey::new(name);
        let id: [u8; 16] = fresh_bytes("node id")[..16].try_into().unwrap();
        let token = JoinToken {
            broker: format!("127.0.0.1:{broker_port}"),
            node_id: NodeId(id),
            secret: NodeSecret(fresh_bytes("node secret")),
            controller_key: key.key.public().to_bytes(),
        };
        Fleet { key, token }
    }

    fn topic(&self, leaf: &str) -> String {
        node_topic(&self.token.node_id, leaf)
    }

    /// `msg` opened as a `T` if it is on this node's `leaf` topic; panics if it does not verify
    /// (only the node, with its secret, publishes there in these tests).
    fn open<T: serde::de::DeserializeOwned>(&self, msg: &Msg, leaf: &str) -> Option<T> {
        let topic = self.topic(leaf);
        if msg.topic != topic {
            return None;
        }
        Some(
            self.token
                .secret
                .open(&topic, &msg.payload)
                .unwrap_or_else(|e| panic!("a message on {topic} does not verify: {e}")),
        )
    }

    fn state(&self, msg: &Msg) -> Option<NodeState> {
        self.open(msg, "state")
    }
    fn info(&self, msg: &Msg) -> Option<NodeInfo> {
        self.open(msg, "info")
    }
    fn have(&self, msg: &Msg) -> Option<Have> {
        self.open(msg, "have")
    }
    fn event(&self, msg: &Msg) -> Option<NodeEvent> {
        self.open(msg, "events")
    }

    fn command(&self, id: u64, issued_at_s: u64, order: Order) -> Vec<u8> {
        self.token
            .secret
            .seal(&self.topic("cmd"), &Command { id, issued_at_s, order })
    }

    fn send(&self, w: &Watcher, id: u64, order: Order) {
        w.publish(&self.topic("cmd"), self.command(id, now_s(), order), false);
    }

    /// Waits for `online` from a boot other than `not`; returns its boot ID.
    fn wait_online(&self, w: &Watcher, from: usize, not: Option<u64>) -> (u64, usize) {
        w.wait_for(from, "the node's retained state `online`", |m| match self.state(m) {
            Some(NodeState::Online { boot_id }) if Some(boot_id) != not => Some(boot_id),
            _ => None,
        })
    }

    fn wait_info(&self, w: &Watcher, from: usize, boot: u64) -> (NodeInfo, usize) {
        w.wait_for(from, "the node's info", |m| self.info(m).filter(|i| i.boot_id == boot))
    }

    fn wait_event(&self, w: &Watcher, from: usize, command_id: u64) -> NodeEvent {
        w.wait_for(from, &format!("the event of command {command_id}"), |m| {
            self.event(m).filter(|e| e.command_id == command_id)
        })
        .0
    }

    /// Every `Have` of `boot` seen at or after `from`, in arrival order.
    fn haves(&self, w: &Watcher, from: usize, boot: u64) -> Vec<Have> {
        w.since(from)
            .iter()
            .filter_map(|m| self.have(m))
            .filter(|h| h.boot_id == boot)
            .collect()
    }

    /// Waits until the `Have`s of `boot` since `from` have listed `chunk` as added (or, with
    /// `removed`, as removed).
    fn wait_have(&self, w: &Watcher, from: usize, boot: u64, chunk: ChunkId, removed: bool) {
        wait_until(
            MQTT_DEADLINE,
            &format!("a Have listing {chunk} (removed: {removed})"),
            || {
                self.haves(w, from, boot)
                    .iter()
                    .any(|h| if removed { &h.removed } else { &h.added }.contains(&chunk))
            },
        );
    }
}

/// Five 16 KiB chunks (the last shorter) and their bytes.
fn test_chunks(seed: u64) -> Vec<(ChunkId, Vec<u8>)> {
    let data = random_bytes(4 * 16 * 1024 + 5000, seed);
    let m = Manifest::of_bytes(&data, 16 * 1024).expect("manifest");
    m.chunks()
        .map(|c| (c, data[c.offset() as usize..][..c.len() as usize].to_vec()))
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn put(node: &Node, key: &TestKey, chunk: &(ChunkId, Vec<u8>)) {
    rt().block_on(async {
        let mut c = node.client().await;
        c.put_chunk(chunk.0, Some(&key.grant(chunk.0)), &chunk.1)
            .await
            .unwrap_or_else(|e| panic!("putting {} into {}: {e}", chunk.0, node.addr()));
    });
}

fn holds(node: &Node, chunks: &[ChunkId]) -> Vec<bool> {
    rt().block_on(async { node.client().await.has(chunks).await.expect("has") })
}

/// The exit status of child `pid` once it has exited, without reaping it (the harness does).
fn exit_status(pid: u32) -> Option<(i32, i32)> {
    // SAFETY: waitid writes only into `info`, which is a valid siginfo_t.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r != 0 || info.si_pid() == 0 {
            return None;
        }
        Some((info.si_code, info.si_status()))
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_joined_node_announces_reports_its_chunks_and_obeys_only_sound_commands() {
    let mosquitto = Mosquitto::start();
    let w = Watcher::start(mosquitto.port());
    let fleet = Fleet::new(mosquitto.port(), "agent-main");
    let chunks = test_chunks(11);
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();

    // Joining: no --trusted-key, the token decides the node ID and the grant key.
    let mut a = Node::joining(&fleet.token.encode()).start();
    assert_eq!(a.node_id(), fleet.token.node_id, "the token names the node");
    let kept = a.data_dir().join("join.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kept).expect("join.token").permissions());
    assert_eq!(mode & 0o777, 0o600, "join.token holds a secret");

    // Presence: retained online and info, sealed with the node's secret.
    let (boot1, _) = fleet.wait_online(&w, 0, None);
    let (info, _) = fleet.wait_info(&w, 0, boot1);
    assert_eq!(
        info.data_addr,
        a.addr().to_string(),
        "info names the address troved serves on"
    );
    assert_eq!(info.board, "generic");
    assert_eq!(info.capacity_bytes, 1 << 30);
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

    // Deltas: puts (with grants from the controller key) show up in Haves with seq 1, 2, ...
    for c in &chunks[..3] {
        put(&a, &fleet.key, c);
    }
    for c in &ids[..3] {
        fleet.wait_have(&w, 0, boot1, *c, false);
    }
    let haves = fleet.haves(&w, 0, boot1);
    let seqs: Vec<u64> = haves.iter().map(|h| h.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "consecutive from 1: {haves:?}"
    );
    let added: Vec<ChunkId> = haves.iter().flat_map(|h| h.added.iter().copied()).collect();
    assert_eq!(added.len(), 3, "each chunk reported once: {haves:?}");
    assert!(haves.iter().all(|h| h.removed.is_empty()));

    // Replicate from a second node that holds the chunk: no grant needed, the order is sealed.
    let b = Node::start(&fleet.key);
    put(&b, &fleet.key, &chunks[3]);
    let from = w.mark();
    fleet.send(
        &w,
        10,
        Order::Replicate {
            chunk: ids[3],
            from: b.addr_arg(),
        },
    );
    let ev = fleet.wait_event(&w, from, 10);
    assert_eq!(ev.boot_id, boot1);
    assert_eq!(
        ev.outcome,
        Outcome::Replicated {
            chunk: ids[3],
            from: b.addr_arg(),
            bytes: ids[3].len()
        }
    );
    assert_eq!(holds(&a, &ids[3..4]), vec![true]);
    fleet.wait_have(&w, from, boot1, ids[3], false);

    // Replicating a chunk the node already has fetches nothing, and still succeeds.
    let from = w.mark();
    fleet.send(
        &w,
        11,
        Order::Replicate {
            chunk: ids[0],
            from: b.addr_arg(),
        },
    );
    assert_eq!(
        fleet.wait_event(&w, from, 11).outcome,
        Outcome::Replicated {
            chunk: ids[0],
            from: b.addr_arg(),
            bytes: 0
        }
    );

    // A replication that cannot work (the source does not hold it) reports a failure.
    let from = w.mark();
    fleet.send(
        &w,
        12,
        Order::Replicate {
            chunk: ids[4],
            from: b.addr_arg(),
        },
    );
    match fleet.wait_event(&w, from, 12).outcome {
        Outcome::Failed { message } => assert!(message.contains(&ids[4].to_string()), "{message}"),
        other => panic!("replicating a chunk nobody has: {other:?}"),
    }

    // Delete.
    let from = w.mark();
    fleet.send(&w, 13, Order::Delete { chunk: ids[0] });
    assert_eq!(
        fleet.wait_event(&w, from, 13).outcome,
        Outcome::Deleted { chunk: ids[0] }
    );
    fleet.wait_have(&w, from, boot1, ids[0], true);
    assert_eq!(holds(&a, &ids[..1]), vec![false]);
    assert!(!a.chunk_path(&ids[0]).exists());

    // Unsound commands change nothing, and the log says why.
    let from = w.mark();
    let forged = NodeSecret(fresh_bytes("not the node's secret")).seal(
        &fleet.topic("cmd"),
        &Command {
            id: 20,
            issued_at_s: now_s(),
            order: Order::Delete { chunk: ids[1] },
        },
    );
    w.publish(&fleet.topic("cmd"), forged, false);
    a.wait_for_log("MAC does not verify", 1, MQTT_DEADLINE);
    w.publish(
        &fleet.topic("cmd"),
        fleet.command(21, now_s() - 3600, Order::Delete { chunk: ids[1] }),
        false,
    );
    a.wait_for_log("stale: issued", 1, MQTT_DEADLINE);
    w.publish(
        &fleet.topic("cmd"),
        fleet.command(13, now_s(), Order::Delete { chunk: ids[1] }),
        false,
    );
    a.wait_for_log("replayed: id 13", 1, MQTT_DEADLINE);
    assert!(a.log_count("command dropped") >= 3, "{}", a.log());
    // A sound command after them: once its event is back, the ones before it were handled.
    fleet.send(&w, 22, Order::Delete { chunk: ids[4] });
    assert_eq!(
        fleet.wait_event(&w, from, 22).outcome,
        Outcome::Deleted { chunk: ids[4] }
    );
    assert_eq!(holds(&a, &ids[1..2]), vec![true], "no unsound command deleted anything");
    let events: Vec<u64> = w
        .since(from)
        .iter()
        .filter_map(|m| fleet.event(m))
        .map(|e| e.command_id)
        .collect();
    assert_eq!(events, vec![22], "only the sound command ran");
    assert!(
        fleet
            .haves(&w, from, boot1)
            .iter()
            .all(|h| !h.removed.contains(&ids[1])),
        "nothing reported removed"
    );

    // SIGKILL: the broker publishes the Last Will, `offline` for that boot.
    let from = w.mark();
    a.kill();
    w.wait_for(from, "the Last Will (offline)", |m| {
        (fleet.state(m)? == NodeState::Offline { boot_id: boot1 }).then_some(())
    });

    // A restart without --join uses the kept token: same node, new boot, chunks still there.
    let from = w.mark();
    a.restart();
    let (boot2, _) = fleet.wait_online(&w, from, Some(boot1));
    assert_ne!(boot2, boot1);
    assert_eq!(a.node_id(), fleet.token.node_id);
    let (info2, _) = fleet.wait_info(&w, from, boot2);
    assert_eq!(info2.data_addr, a.addr().to_string(), "the new port is announced");
    assert_eq!(info2.chunks, 3, "ids 1, 2, 3");
    assert_eq!(holds(&a, &ids[1..4]), vec![true; 3]);
    // On connecting, a node sends a Have at once (empty here), so the controller learns the
    // boot's sequence; a new boot's sequence starts at 1.
    let (first, _) = w.wait_for(from, "the new boot's first Have", |m| {
        fleet.have(m).filter(|h| h.boot_id == boot2)
    });
    assert_eq!((first.seq, first.added.len(), first.removed.len()), (1, 0, 0));

    // A controller boot the node has not seen makes it announce everything again, with a
    // skipped Have sequence number (so that controller pulls the full inventory).
    let from = w.mark();
    let last_seq = fleet.haves(&w, 0, boot2).last().map_or(0, |h| h.seq);
    w.publish(
        &controller_state_topic(),
        ControllerState {
            boot_id: u64::from_le_bytes(fresh_bytes("controller boot")[..8].try_into().unwrap()),
            online: true,
        }
        .sign(&fleet.key.key),
        true,
    );
    fleet.wait_info(&w, from, boot2);
    let (marker, _) = w.wait_for(from, "a Have resync marker", |m| fleet.have(m));
    assert_eq!(marker.seq, last_seq + 2, "one sequence number skipped");
}

#[test]
fn a_joined_node_rides_out_a_broker_restart_and_says_goodbye_on_sigterm() {
    let mut mosquitto = Mosquitto::start();
    let w = Watcher::start(mosquitto.port());
    let fleet = Fleet::new(mosquitto.port(), "agent-restart");
    let chunks = test_chunks(12);
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
    let a = Node::joining(&fleet.token.encode()).start();
    let (boot, _) = fleet.wait_online(&w, 0, None);
    put(&a, &fleet.key, &chunks[0]);
    fleet.wait_have(&w, 0, boot, ids[0], false);
    let seq_before = fleet.haves(&w, 0, boot).last().expect("a Have").seq;

    // The broker goes away (forgetting every retained message); a chunk arrives meanwhile.
    mosquitto.kill();
    put(&a, &fleet.key, &chunks[1]);
    let from = w.mark();
    mosquitto.restart();
    w.wait_subscribed(2);
    // Same boot, announced again: the broker lost the retained state, the node restores it.
    let (again, _) = fleet.wait_online(&w, from, None);
    assert_eq!(again, boot, "the process did not restart");
    fleet.wait_info(&w, from, boot);
    put(&a, &fleet.key, &chunks[2]);
    fleet.wait_have(&w, from, boot, ids[2], false);
    let after: Vec<u64> = fleet.haves(&w, from, boot).iter().map(|h| h.seq).collect();
    assert!(
        after.iter().all(|&s| s > seq_before + 1),
        "a reconnect skips a sequence number (deltas may have been lost): before {seq_before}, after {after:?}"
    );
    assert_eq!(holds(&a, &ids[..3]), vec![true; 3]);

    // SIGTERM: `offline` published by the node itself, a clean disconnect, exit status 0.
    let from = w.mark();
    let pid = a.pid();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    w.wait_for(from, "offline after SIGTERM", |m| {
        (fleet.state(m)? == NodeState::Offline { boot_id: boot }).then_some(())
    });
    let (code, status) = wait_for(MQTT_DEADLINE, "troved to exit after SIGTERM", || exit_status(pid));
    assert_eq!((code, status), (libc::CLD_EXITED, 0), "log:\n{}", a.log());
    assert_eq!(
        a.log_count("announced offline and disconnected"),
        1,
        "log:\n{}",
        a.log()
    );
    let client_id = fleet.token.node_id.to_string();
    wait_until(MQTT_DEADLINE, "mosquitto to log a clean disconnect", || {
        mosquitto
            .log()
            .lines()
            .any(|l| l.contains(&format!("Client {client_id} disconnected")))
    });
}
