//! Fleet end-to-end tests (issue 3): a real `trove-controller`, real `troved` appliances
//! joined to it, the real `trove` CLI, real brokers and databases, all on 127.0.0.1.
//!
//! Most scenarios run twice, on the two stacks a deployment may use: the embedded broker
//! with SQLite (the default), and Mosquitto with PostgreSQL (`--mqtt-url`,
//! `--database-url`). Each scenario is one function taking the [`StackKind`]; the tests
//! below only pick the stack. Mosquitto and PostgreSQL must be installed: those tests fail,
//! never skip, without them.
//!
//! Build the binaries first: `cargo build --workspace --bins`. Every wait polls with a
//! deadline; no test asserts on timing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use trove_common::api::{ApiErrorBody, FileStatus, NodeView, ShareRequest, ShareResponse};
use trove_common::control::{self, Have, JoinToken, NodeInfo, NodeSecret, NodeState};
use trove_common::limits::{CHUNK_BYTES_DEFAULT, HAS_CHUNKS_MAX};
use trove_common::net::NetError;
use trove_common::wire::ErrorCode;
use trove_common::{Grant, Manifest};
use trove_tests::*;

/// Seconds an appliance may stay offline before its chunks are copied elsewhere.
const GRACE_SECS: u64 = 2;
/// Appliances joining and announcing themselves online.
const ONLINE_DEADLINE: Duration = Duration::from_secs(45);
/// The Last Will turning a killed appliance offline.
const OFFLINE_DEADLINE: Duration = Duration::from_secs(30);
/// Copies made or trimmed until every chunk is on exactly three appliances.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(120);
/// The controller processing (and logging) a message it ignores.
const INGEST_DEADLINE: Duration = Duration::from_secs(20);
/// How often the fleet's state is polled.
const FLEET_POLL: Duration = Duration::from_millis(150);
const REPLICAS: usize = trove_common::api::REPLICAS_TARGET as usize;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trove-fleet-")
        .tempdir()
        .expect("tempdir")
}

/// A stack of `kind` with `n` appliances joined and online.
fn start(kind: StackKind, n: usize) -> Stack {
    let s = Stack::start(kind, Controller::builder().grace_secs(GRACE_SECS), n);
    s.wait_online(n, ONLINE_DEADLINE);
    s
}

// ---------------------------------------------------------------------------------------------
// The CLI, as a user runs it

/// What `trove share --json` prints.
#[derive(Debug, Deserialize)]
struct ShareReport {
    file_id: String,
    size: u64,
    n_chunks: u64,
    new_file: bool,
    chunks_uploaded: u64,
    bytes_uploaded: u64,
}

/// What `trove get --json` prints.
#[derive(Debug, Deserialize)]
struct GetReport {
    file_id: String,
    size: u64,
    chunks_total: u64,
    chunks_fetched: u64,
    sources: Vec<GetSource>,
}

#[derive(Debug, Deserialize)]
struct GetSource {
    addr: Option<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, stdout: &str) -> T {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(['{', '[']))
        .unwrap_or_else(|| panic!("no JSON in the output of {what}: {stdout:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed unexpected JSON ({e}): {line}"))
}

/// What the CLI helpers run against: a stack, or a bare controller (`--local-nodes`). Either
/// way a failure shows the logs.
trait Fleet {
    fn controller(&self) -> &Controller;
    fn logs(&self) -> String;

    /// Runs `trove ARGS` against the controller; panics with its output and the logs unless
    /// it succeeds. Returns stdout.
    fn trove_ok(&self, args: Vec<OsString>) -> String {
        let out = self.controller().trove(&args);
        if !out.status.success() {
            panic!(
                "`trove {}` failed ({}):\nstderr:\n{}\nstdout:\n{}\n{}",
                args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
                self.logs()
            );
        }
        String::from_utf8(out.stdout).expect("trove prints UTF-8")
    }
}

impl Fleet for Stack {
    fn controller(&self) -> &Controller {
        &self.controller
    }
    fn logs(&self) -> String {
        Stack::logs(self)
    }
}

impl Fleet for Controller {
    fn controller(&self) -> &Controller {
        self
    }
    fn logs(&self) -> String {
        format!("=== controller ===\n{}", tail(&self.log(), 80))
    }
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    items.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// `trove share FILE --name NAME --wait --json`.
fn share(f: &impl Fleet, file: &Path, name: &str) -> ShareReport {
    let out = f.trove_ok(args(&[
        &"share",
        &file,
        &"--name",
        &name,
        &"--wait",
        &"--json",
        &"--no-progress",
    ]));
    parse_json("trove share --json", &out)
}

/// `trove get ID -o OUT --json`.
fn get(f: &impl Fleet, id: &str, out: &Path) -> GetReport {
    let stdout = f.trove_ok(args(&[&"get", &id, &"-o", &out, &"--json", &"--no-progress"]));
    let r: GetReport = parse_json("trove get --json", &stdout);
    assert_eq!(r.file_id, id, "get reports the file asked for");
    r
}

/// `trove status ID --json`.
fn cli_status(f: &impl Fleet, id: &str) -> FileStatus {
    parse_json("trove status --json", &f.trove_ok(args(&[&"status", &id, &"--json"])))
}

/// `trove nodes --json`.
fn cli_nodes(f: &impl Fleet) -> Vec<NodeView> {
    parse_json("trove nodes --json", &f.trove_ok(args(&[&"nodes", &"--json"])))
}

/// A random file of `size` bytes in `dir`, and its manifest computed here.
fn make_file(dir: &Path, name: &str, size: u64, seed: u64) -> (std::path::PathBuf, Manifest) {
    let path = dir.join(name);
    random_file(&path, size, seed);
    let m = manifest_of(&path, CHUNK_BYTES_DEFAULT);
    (path, m)
}

// ---------------------------------------------------------------------------------------------
// What the appliances really hold

/// For each chunk of `m`, the IDs of the running `nodes` that hold it, asked over the data
/// plane (`Has`), not the controller.
fn holdings(nodes: &[&Node], m: &Manifest) -> Vec<BTreeSet<String>> {
    let chunks: Vec<_> = m.chunks().collect();
    block_on(async {
        let mut held = vec![BTreeSet::new(); chunks.len()];
        for node in nodes {
            let id = node.node_id().to_string();
            let mut client = node.client().await;
            let mut have = Vec::with_capacity(chunks.len());
            for batch in chunks.chunks(HAS_CHUNKS_MAX) {
                have.extend(client.has(batch).await.expect("has"));
            }
            for (i, h) in have.into_iter().enumerate() {
                if h {
                    held[i].insert(id.clone());
                }
            }
        }
        held
    })
}

fn running(s: &Stack) -> Vec<&Node> {
    s.nodes.iter().filter(|n| n.is_running()).collect()
}

/// Why `status` is not yet "every chunk on exactly three distinct online appliances that
/// really hold it", or `None` when it is. Copies on offline appliances are tolerated only
/// with `allow_offline`.
fn not_three(
    status: &FileStatus,
    online_nodes: &BTreeSet<String>,
    truth: &[BTreeSet<String>],
    allow_offline: bool,
) -> Option<String> {
    if status.chunks.len() != truth.len() || status.n_chunks != truth.len() as u64 {
        return Some(format!(
            "status lists {} chunks (n_chunks {}), the file has {}",
            status.chunks.len(),
            status.n_chunks,
            truth.len()
        ));
    }
    for c in &status.chunks {
        let i = c.chunk_idx as usize;
        let online: BTreeSet<String> = c.online.iter().cloned().collect();
        if online.len() != c.online.len() {
            return Some(format!("chunk {i}: a holder is listed twice: {:?}", c.online));
        }
        if online.len() != REPLICAS {
            return Some(format!("chunk {i}: {} online holders {:?}", online.len(), c.online));
        }
        if !online.is_subset(online_nodes) {
            return Some(format!(
                "chunk {i}: holders {online:?} are not all online ({online_nodes:?})"
            ));
        }
        if !allow_offline && !c.offline.is_empty() {
            return Some(format!("chunk {i}: still counted on offline {:?}", c.offline));
        }
        if truth.get(i) != Some(&online) {
            return Some(format!(
                "chunk {i}: the controller says {online:?}, the appliances say {:?}",
                truth.get(i)
            ));
        }
    }
    if status.chunks_at_target != status.n_chunks {
        return Some(format!(
            "chunks_at_target {} of {}",
            status.chunks_at_target, status.n_chunks
        ));
    }
    None
}

/// Waits until every chunk of `m` is on exactly three distinct online appliances, by the
/// controller's account and by the appliances' own; returns that status.
fn wait_three(s: &Stack, id: &str, m: &Manifest, allow_offline: bool, what: &str) -> FileStatus {
    let deadline = Deadline::after(REPLICATION_DEADLINE);
    loop {
        let status = s.controller.file_status(id);
        let online: BTreeSet<String> = s
            .controller
            .nodes()
            .into_iter()
            .filter(|n| n.state == "online")
            .map(|n| n.id)
            .collect();
        let truth = holdings(&running(s), m);
        match not_three(&status, &online, &truth, allow_offline) {
            None => return status,
            Some(why) if deadline.expired() => panic!(
                "timed out waiting for {what}: {why}\nrepair: {}\n{}",
                s.controller
                    .api("GET", "/repair", Some(&s.controller.admin_token()), None)
                    .body,
                s.logs()
            ),
            Some(_) => std::thread::sleep(FLEET_POLL),
        }
    }
}

fn node_state(f: &impl Fleet, id: &str) -> Option<String> {
    cli_nodes(f).into_iter().find(|n| n.id == id).map(|n| n.state)
}

// ---------------------------------------------------------------------------------------------
// 1. Share and get

fn share_and_get(kind: StackKind) {
    let s = start(kind, 4);
    let c = &s.controller;
    let dir = tempdir();
    let (src, m) = make_file(dir.path(), "big.bin", 40 * MIB, 31);

    let r = share(&s, &src, "big.bin");
    assert_eq!(r.file_id, b3sum(&src), "the FileId is the file's b3sum");
    assert!(r.new_file, "first share of these bytes: {r:?}");
    assert_eq!((r.size, r.n_chunks), (40 * MIB, 40), "{r:?}");
    // The client sends every chunk once; the appliances make the other two copies.
    assert_eq!(r.chunks_uploaded, r.n_chunks, "chunks sent by the client: {r:?}");
    assert_eq!(
        r.bytes_uploaded, r.size,
        "bytes sent by the client (once, not three times): {r:?}"
    );

    wait_three(&s, &r.file_id, &m, false, "every chunk on exactly 3 appliances");
    let status = cli_status(&s, &r.file_id);
    let online: BTreeSet<String> = cli_nodes(c)
        .into_iter()
        .filter(|n| n.state == "online")
        .map(|n| n.id)
        .collect();
    assert_eq!(online.len(), 4);
    if let Some(why) = not_three(&status, &online, &holdings(&running(&s), &m), false) {
        panic!("`trove status --json`: {why}");
    }
    assert_eq!((status.name.as_str(), status.size), ("big.bin", 40 * MIB));
    assert_eq!(status.availability, REPLICAS as u32);

    let out = dir.path().join("big.out");
    let g = get(&s, &r.file_id, &out);
    assert_eq!(b3sum(&out), r.file_id, "`trove get` returns the exact bytes");
    assert_eq!((g.size, g.chunks_total, g.chunks_fetched), (40 * MIB, 40, 40), "{g:?}");
    let sources: BTreeSet<_> = g.sources.iter().filter_map(|s| s.addr.clone()).collect();
    assert_eq!(sources.len(), 4, "get is offered every online holder: {g:?}");

    // Without -o, `get` writes the shared name into the current directory.
    let cwd = tempdir();
    let mut cmd = c.trove_command(["get", &r.file_id, "--no-progress"]);
    let o = cmd.current_dir(cwd.path()).output().expect("running trove get");
    assert!(o.status.success(), "trove get: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(b3sum(&cwd.path().join("big.bin")), r.file_id);
}

#[test]
fn share_places_three_copies_and_get_is_exact_embedded_sqlite() {
    // Pins: a 40 MiB share lands on exactly 3 of 4 appliances per chunk, is sent once by the client, and `trove get` returns it byte-exact.
    share_and_get(StackKind::EmbeddedSqlite);
}

#[test]
fn share_places_three_copies_and_get_is_exact_mosquitto_postgres() {
    // Pins: the same with Mosquitto and PostgreSQL: nothing in share/placement/get depends on the embedded broker or SQLite.
    share_and_get(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------
// 2. An appliance dies and comes back

fn kill_repair_return(kind: StackKind) {
    let mut s = start(kind, 4);
    let dir = tempdir();
    let (src, m) = make_file(dir.path(), "repair.bin", 6 * MIB + 4321, 32);
    let r = share(&s, &src, "repair.bin");
    wait_three(&s, &r.file_id, &m, false, "the first placement");

    // The victim: the appliance holding the most chunks.
    let truth = holdings(&running(&s), &m);
    let victim = (0..s.nodes.len())
        .max_by_key(|&i| {
            let id = s.nodes[i].node_id().to_string();
            truth.iter().filter(|h| h.contains(&id)).count()
        })
        .expect("nodes");
    let victim_id = s.nodes[victim].node_id().to_string();
    s.nodes[victim].kill();

    // Its Last Will turns it offline; nothing is restarted for that.
    let deadline = Deadline::after(OFFLINE_DEADLINE);
    loop {
        if node_state(&s, &victim_id).as_deref() == Some("offline") {
            break;
        }
        if deadline.expired() {
            panic!(
                "killed appliance {victim_id} is not shown offline: {:#?}\n{}",
                cli_nodes(&s.controller),
                s.logs()
            );
        }
        std::thread::sleep(FLEET_POLL);
    }

    // After the grace period, every chunk is back on three live appliances.
    let status = wait_three(&s, &r.file_id, &m, true, "re-replication onto the 3 live appliances");
    assert!(status.chunks.iter().all(|c| !c.online.contains(&victim_id)));
    let out = dir.path().join("repair.out");
    get(&s, &r.file_id, &out);
    assert_eq!(b3sum(&out), r.file_id, "the file still downloads, exact");

    // It comes back (same data, no new join token): surplus copies are trimmed to three.
    s.nodes[victim].restart();
    let deadline = Deadline::after(ONLINE_DEADLINE);
    while node_state(&s, &victim_id).as_deref() != Some("online") {
        deadline.check("the returning appliance to be online again");
        std::thread::sleep(FLEET_POLL);
    }
    wait_three(
        &s,
        &r.file_id,
        &m,
        false,
        "surplus copies trimmed to exactly 3 in total",
    );
    let truth = holdings(&running(&s), &m);
    assert!(truth.iter().all(|h| h.len() == REPLICAS), "{truth:?}");
}

#[test]
fn killed_appliance_goes_offline_is_repaired_and_trimmed_on_return_embedded_sqlite() {
    // Pins: SIGKILL -> Last Will offline; after the grace period every chunk is back on 3 live appliances; on return the surplus is trimmed to 3.
    kill_repair_return(StackKind::EmbeddedSqlite);
}

#[test]
fn killed_appliance_goes_offline_is_repaired_and_trimmed_on_return_mosquitto_postgres() {
    // Pins: the same through Mosquitto's Last Will and PostgreSQL holdings.
    kill_repair_return(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------
// 3. Controller and broker restarts

fn restarts(kind: StackKind) {
    let mut s = start(kind, 4);
    let dir = tempdir();
    let (src, m) = make_file(dir.path(), "restart.bin", 3 * MIB + 77, 33);
    let r = share(&s, &src, "restart.bin");
    let before = wait_three(&s, &r.file_id, &m, false, "the first placement");
    let token = s.controller.admin_token();

    s.controller.restart();
    assert_eq!(s.controller.admin_token(), token, "the admin token survives a restart");
    s.wait_online(4, ONLINE_DEADLINE);
    let after = wait_three(
        &s,
        &r.file_id,
        &m,
        false,
        "holdings to reconverge after a controller restart",
    );
    assert_eq!(
        (&after.file_id, &after.name, after.size, after.n_chunks),
        (&before.file_id, &before.name, before.size, before.n_chunks),
        "the file's record survives a controller restart"
    );
    let out = dir.path().join("restart.out");
    get(&s, &r.file_id, &out);
    assert_eq!(b3sum(&out), r.file_id);

    if let Some(mosquitto) = s.mosquitto.as_mut() {
        // The broker forgets every session and retained message; appliances and controller
        // reconnect, and the control plane works again end to end.
        mosquitto.restart();
        s.wait_online(4, ONLINE_DEADLINE);
        wait_three(&s, &r.file_id, &m, false, "the holdings view after the broker restart");
        let (src2, m2) = make_file(dir.path(), "after-broker.bin", 2 * MIB + 5, 34);
        let r2 = share(&s, &src2, "after-broker.bin");
        assert!(r2.new_file);
        wait_three(&s, &r2.file_id, &m2, false, "a share after the broker restart");
        let out2 = dir.path().join("after-broker.out");
        get(&s, &r2.file_id, &out2);
        assert_eq!(b3sum(&out2), r2.file_id);
        // Appliances registered their Last Will again on reconnecting.
        let victim_id = s.nodes[0].node_id().to_string();
        s.nodes[0].kill();
        let deadline = Deadline::after(OFFLINE_DEADLINE);
        while node_state(&s, &victim_id).as_deref() != Some("offline") {
            if deadline.expired() {
                panic!(
                    "appliance killed after the broker restart is not shown offline\n{}",
                    s.logs()
                );
            }
            std::thread::sleep(FLEET_POLL);
        }
    }
}

#[test]
fn controller_restart_loses_nothing_embedded_sqlite() {
    // Pins: after a controller restart (embedded broker restarts with it) files, holdings and the admin token are intact and appliances re-announce.
    restarts(StackKind::EmbeddedSqlite);
}

#[test]
fn controller_and_broker_restarts_lose_nothing_mosquitto_postgres() {
    // Pins: controller restart on PostgreSQL, then a Mosquitto restart: appliances reconnect (with their Will), shares and repair still work.
    restarts(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------
// 4. Same bytes, same ID

fn dedup(kind: StackKind) {
    let s = start(kind, 3);
    let dir = tempdir();
    let (a, m) = make_file(dir.path(), "a.bin", 2 * MIB + 9, 35);
    let b = dir.path().join("b.bin");
    std::fs::copy(&a, &b).expect("copying");

    let first = share(&s, &a, "first name");
    assert!(first.new_file && first.chunks_uploaded == 3, "{first:?}");
    wait_three(&s, &first.file_id, &m, false, "the first share's copies");

    let out = s.controller.trove(args(&[
        &"share",
        &b,
        &"--name",
        &"second name",
        &"--json",
        &"--no-progress",
    ]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second: ShareReport = parse_json("trove share --json", &String::from_utf8_lossy(&out.stdout));
    assert_eq!(second.file_id, first.file_id, "same bytes, same FileId");
    assert!(!second.new_file, "the second share is of known bytes: {second:?}");
    assert_eq!(
        (second.chunks_uploaded, second.bytes_uploaded),
        (0, 0),
        "nothing is uploaded again"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to upload"),
        "share says it uploads nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Still exactly three copies of each chunk: nothing was stored twice.
    wait_three(&s, &first.file_id, &m, false, "the copies after the second share");
}

#[test]
fn sharing_the_same_bytes_twice_uploads_nothing_embedded_sqlite() {
    // Pins: two shares of one file under two names give one FileId and the second sends no chunk.
    dedup(StackKind::EmbeddedSqlite);
}

#[test]
fn sharing_the_same_bytes_twice_uploads_nothing_mosquitto_postgres() {
    // Pins: the same deduplication on PostgreSQL.
    dedup(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input

/// The fleet's facts that no forged or malformed input may change.
fn fleet_facts(c: &Controller) -> BTreeMap<String, (String, Option<String>, i64)> {
    cli_nodes(c)
        .into_iter()
        .map(|n| (n.id, (n.state, n.data_addr, n.chunks)))
        .collect()
}

fn file_facts(c: &Controller, id: &str) -> (u64, Vec<BTreeSet<String>>) {
    let st = cli_status(c, id);
    let per_chunk = st
        .chunks
        .iter()
        .map(|ch| ch.online.iter().chain(&ch.offline).cloned().collect())
        .collect();
    (st.chunks_at_target, per_chunk)
}

/// Row counts of the controller's tables, read behind its back (PostgreSQL only).
fn table_counts(s: &Stack) -> Option<String> {
    let pg = s.postgres.as_ref()?;
    Some(pg.psql(
        "trove",
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM api_tokens), \
         (SELECT count(*) FROM nodes), (SELECT count(*) FROM files), (SELECT count(*) FROM shares), \
         (SELECT count(*) FROM file_chunks), (SELECT count(*) FROM holdings)",
    ))
}

fn wait_ignored(c: &Controller, topic_part: &str, at_least: usize, what: &str) {
    let count = || {
        c.log()
            .lines()
            .filter(|l| l.contains("ignored MQTT message") && l.contains(topic_part))
            .count()
    };
    let deadline = Deadline::after(INGEST_DEADLINE);
    while count() < at_least {
        if deadline.expired() {
            panic!(
                "the controller did not log ignoring {what} ({} of {at_least} lines for {topic_part}); log:\n{}",
                count(),
                tail(&c.log(), 60)
            );
        }
        std::thread::sleep(FLEET_POLL);
    }
}

fn bad_input(kind: StackKind) {
    let s = start(kind, 3);
    let c = &s.controller;
    let dir = tempdir();
    let (src, m) = make_file(dir.path(), "precious.bin", 3 * MIB, 36);
    let r = share(&s, &src, "precious.bin");
    wait_three(&s, &r.file_id, &m, false, "the first placement");
    let nodes_before = fleet_facts(c);
    let file_before = file_facts(c, &r.file_id);
    let counts_before = table_counts(&s);

    let target = &s.nodes[0];
    let node_id = target.node_id();
    let token = JoinToken::decode(target.join_token().expect("joined")).expect("a valid join token");
    assert_eq!(token.node_id, node_id);
    let broker: SocketAddr = match &s.mosquitto {
        Some(m) => SocketAddr::from(([127, 0, 0, 1], m.port())),
        None => c.mqtt_addr().expect("the embedded broker writes DATA/mqtt.addr"),
    };
    let topic = |leaf: &str| control::node_topic(&node_id, leaf);
    let all_chunks: Vec<_> = m.chunks().collect();
    let forger = NodeSecret([0x5a; 32]);
    let forged = vec![
        (
            topic("state"),
            forger.seal(&topic("state"), &NodeState::Offline { boot_id: 1 }),
        ),
        (
            topic("info"),
            forger.seal(
                &topic("info"),
                &NodeInfo {
                    boot_id: 1,
                    data_addr: "127.0.0.1:9".into(),
                    capacity_bytes: 1,
                    used_bytes: 0,
                    disk_free_bytes: 1,
                    chunks: 0,
                    version: "forged".into(),
                    board: "forged".into(),
                },
            ),
        ),
        (
            topic("have"),
            forger.seal(
                &topic("have"),
                &Have {
                    boot_id: 1,
                    seq: 1,
                    added: vec![],
                    removed: all_chunks.clone(),
                },
            ),
        ),
        (topic("have"), b"short".to_vec()),
    ];
    // Authentic (the node's own MAC) but malformed: garbage for the message, or an info
    // whose data address is not an address.
    let secret = &token.secret;
    let malformed = vec![
        (topic("state"), secret.seal(&topic("state"), &u8::MAX)),
        (topic("have"), secret.seal(&topic("have"), &u8::MAX)),
        (
            topic("info"),
            secret.seal(
                &topic("info"),
                &NodeInfo {
                    boot_id: 1,
                    data_addr: "not an address".into(),
                    capacity_bytes: 1,
                    used_bytes: 0,
                    disk_free_bytes: 1,
                    chunks: 0,
                    version: "x".into(),
                    board: "x".into(),
                },
            ),
        ),
    ];
    let node_prefix = format!("node/{node_id}/");
    let ignored_before = c
        .log()
        .lines()
        .filter(|l| l.contains("ignored MQTT message") && l.contains(&node_prefix))
        .count();

    block_on(async {
        match kind {
            StackKind::EmbeddedSqlite => {
                // No credentials, or the real node's name with a wrong password: refused.
                let anonymous = mqtt_connect(broker, INGEST_DEADLINE, "intruder-anon", None).await;
                assert!(anonymous.is_err(), "the embedded broker let an anonymous client in");
                let wrong = mqtt_connect(
                    broker,
                    INGEST_DEADLINE,
                    "intruder",
                    Some((node_id.to_string(), "00".repeat(32))),
                )
                .await;
                assert!(wrong.is_err(), "the embedded broker let a wrong password in");
                // The node's own credentials (stolen): what it sends must still verify.
                let (client, mut events) = mqtt_connect(
                    broker,
                    INGEST_DEADLINE,
                    "intruder-with-creds",
                    Some((node_id.to_string(), secret.password())),
                )
                .await
                .expect("the node's own credentials log in");
                publish_all(&client, &mut events, &forged, true, INGEST_DEADLINE).await;
                publish_all(&client, &mut events, &malformed, true, INGEST_DEADLINE).await;
            }
            StackKind::MosquittoPostgres => {
                // Anonymous Mosquitto lets anyone publish anywhere: the MAC is the wall.
                let (client, mut events) = mqtt_connect(broker, INGEST_DEADLINE, "intruder-anon", None)
                    .await
                    .expect("anonymous login on the test Mosquitto");
                publish_all(&client, &mut events, &forged, true, INGEST_DEADLINE).await;
                publish_all(&client, &mut events, &malformed, true, INGEST_DEADLINE).await;
            }
        }
    });
    wait_ignored(
        c,
        &node_prefix,
        ignored_before + forged.len() + malformed.len(),
        "forged and malformed announcements",
    );
    let log = c.log();
    assert!(
        log.contains("MAC does not verify"),
        "the reason is logged: {}",
        tail(&log, 30)
    );
    assert!(log.contains("malformed"), "the reason is logged: {}", tail(&log, 30));
    assert_eq!(
        fleet_facts(c),
        nodes_before,
        "forged announcements changed the fleet view"
    );
    assert_eq!(
        file_facts(c, &r.file_id),
        file_before,
        "forged announcements changed holdings"
    );

    // The API without a token, or with a wrong one: 401 with a readable body, nothing done.
    let (m2_path, m2) = make_file(dir.path(), "unwelcome.bin", 2 * MIB + 1, 37);
    let share_body = serde_json::to_string(&ShareRequest {
        manifest: trove_common::hex::encode(&m2.encode()),
        name: "unwelcome".into(),
        ..ShareRequest::default()
    })
    .expect("JSON");
    let calls: [(&str, String, Option<&str>); 4] = [
        ("GET", "/nodes".into(), None),
        ("POST", "/files".into(), Some(&share_body)),
        ("DELETE", format!("/files/{}", r.file_id), None),
        ("POST", "/enrollments".into(), Some("{}")),
    ];
    for (method, path, body) in &calls {
        for token in [None, Some("trove_wrong"), Some("")] {
            let a = c.api(method, path, token, *body);
            assert_eq!(a.status, 401, "{method} {path} with token {token:?}: {}", a.body);
            let e: ApiErrorBody = a.json();
            assert_eq!(e.error, "unauthorized", "{e:?}");
            assert!(!e.message.is_empty());
        }
    }
    let m2_id = m2.file_id().to_string();
    let a = c.api("GET", &format!("/files/{m2_id}"), Some(&c.admin_token()), None);
    assert_eq!(a.status, 404, "an unauthorised share registered a file: {}", a.body);
    assert_eq!(fleet_facts(c), nodes_before, "unauthorised calls changed the fleet");
    assert_eq!(
        file_facts(c, &r.file_id),
        file_before,
        "an unauthorised delete changed the file"
    );
    assert_eq!(
        table_counts(&s),
        counts_before,
        "unauthorised calls changed the database"
    );
    // The CLI says why, and exits non-zero.
    let mut cmd = c.trove_command(["nodes"]);
    let o = cmd.env("TROVE_TOKEN", "trove_wrong").output().expect("running trove");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("trove: ") && err.contains("token"), "{err}");

    // A grant the controller gave for one chunk, used to put another: the appliance refuses.
    let a = c.api("POST", "/files", Some(&c.admin_token()), Some(&share_body));
    assert!((200..300).contains(&a.status), "POST /files: {}", a.body);
    let placed: ShareResponse = a.json();
    let up0 = placed
        .uploads
        .iter()
        .find(|u| u.chunk_idx == 0)
        .expect("an upload for chunk 0");
    let up1 = placed
        .uploads
        .iter()
        .find(|u| u.chunk_idx == 1)
        .expect("an upload for chunk 1");
    let grant0: Grant = postcard::from_bytes(&decode_hex(&up0.grant).expect("hex grant")).expect("a grant");
    assert_eq!(grant0.chunk, m2.chunk(0));
    let chunk1 = m2.chunk(1);
    let bytes1 = chunk_bytes_of(&m2_path, &chunk1);
    let addr1: SocketAddr = up1.addr.parse().expect("a data address");
    block_on(async {
        let mut client = trove_common::net::connect(addr1)
            .await
            .expect("connecting to the appliance");
        match client.put_chunk(chunk1, Some(&grant0), &bytes1).await {
            Err(NetError::Remote {
                code: ErrorCode::GrantInvalid,
                ..
            }) => {}
            other => panic!("a put of chunk 1 with chunk 0's grant should be refused with GrantInvalid, got {other:?}"),
        }
        let mut client = trove_common::net::connect(addr1)
            .await
            .expect("connecting to the appliance");
        assert_eq!(
            client.has(&[chunk1]).await.expect("has"),
            vec![false],
            "the refused chunk was stored"
        );
    });
}

#[test]
fn forged_and_malformed_input_changes_nothing_embedded_sqlite() {
    // Pins: no broker login without valid credentials; forged-MAC and malformed announcements, unauthenticated API calls and a misused grant are refused or ignored and change nothing.
    bad_input(StackKind::EmbeddedSqlite);
}

#[test]
fn forged_and_malformed_input_changes_nothing_mosquitto_postgres() {
    // Pins: with an anonymous Mosquitto anyone can publish under a node's topics; the MAC check alone keeps the fleet view and the PostgreSQL rows unchanged.
    bad_input(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------
// 6. One machine, one command

#[test]
fn local_nodes_make_a_working_single_machine_trove() {
    // Pins: `trove-controller --local-nodes 3` (the README's run command) gives 3 online appliances and a working share/get/rm.
    let c = Controller::builder().grace_secs(GRACE_SECS).local_nodes(3).start();
    let deadline = Deadline::after(ONLINE_DEADLINE);
    loop {
        let nodes = cli_nodes(&c);
        if nodes.iter().filter(|n| n.state == "online").count() == 3 {
            break;
        }
        if deadline.expired() {
            panic!(
                "--local-nodes 3: the controller shows {nodes:#?}\nlog:\n{}",
                tail(&c.log(), 60)
            );
        }
        std::thread::sleep(FLEET_POLL);
    }
    for i in 1..=3 {
        let d = c.data_dir().join("nodes").join(format!("node{i}"));
        assert!(d.is_dir(), "{} holds local appliance {i}", d.display());
    }
    let dir = tempdir();
    let (src, m) = make_file(dir.path(), "local.bin", 2 * MIB + 3, 38);
    let r = share(&c, &src, "local.bin");
    assert_eq!(r.file_id, m.file_id().to_string());
    let st = cli_status(&c, &r.file_id);
    assert_eq!(st.chunks_at_target, st.n_chunks, "{st:?}");
    let out = dir.path().join("local.out");
    get(&c, &r.file_id, &out);
    assert_eq!(b3sum(&out), r.file_id);

    // Removing the only share frees its chunks on every appliance.
    c.trove_ok(["rm", &r.file_id]);
    let a = c.api("GET", &format!("/files/{}", r.file_id), Some(&c.admin_token()), None);
    assert_eq!(a.status, 404, "a removed file is gone: {}", a.body);
    let addrs: Vec<String> = cli_nodes(&c).into_iter().filter_map(|n| n.data_addr).collect();
    assert_eq!(addrs.len(), 3);
    let deadline = Deadline::after(REPLICATION_DEADLINE);
    loop {
        let held: u64 = addrs
            .iter()
            .map(|a| json_u64(&c.trove_ok(["stats", "--node", a, "--json"]), "chunks").expect("chunks"))
            .sum();
        if held == 0 {
            break;
        }
        if deadline.expired() {
            panic!(
                "{held} chunks still held after `trove rm`\nlog:\n{}",
                tail(&c.log(), 60)
            );
        }
        std::thread::sleep(FLEET_POLL);
    }
}

#[test]
fn sharing_again_right_after_rm_stores_the_file() {
    // Pins: a share that follows `trove rm` while its delete orders are still in flight must not count the doomed copies: the file ends on 3 appliances, not 0.
    let s = start(StackKind::EmbeddedSqlite, 3);
    let dir = tempdir();
    let (src, m) = make_file(dir.path(), "again.bin", 3 * MIB + 11, 39);
    let r = share(&s, &src, "first");
    wait_three(&s, &r.file_id, &m, false, "the first share's copies");
    s.trove_ok(args(&[&"rm", &r.file_id]));
    let again = share(&s, &src, "second");
    assert_eq!(again.file_id, r.file_id);
    wait_three(&s, &r.file_id, &m, false, "the re-shared file on 3 appliances");
    let out = dir.path().join("again.out");
    get(&s, &r.file_id, &out);
    assert_eq!(b3sum(&out), r.file_id);
}
