//! Data-plane end-to-end tests: real `troved` nodes and the real `trove` CLI on 127.0.0.1.
//!
//! Build the binaries first: `cargo build --workspace --bins && cargo test --workspace`.
//! Every wait polls with a deadline; no test asserts on timing.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use trove_common::limits::{CHUNK_BYTES_DEFAULT, HEADER_BYTES_MAX};
use trove_common::net::NetError;
use trove_common::wire::{self, ErrorCode};
use trove_common::{ChunkId, Manifest};
use trove_tests::*;

const CHUNK: u64 = CHUNK_BYTES_DEFAULT as u64;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trove-e2e-")
        .tempdir()
        .expect("tempdir")
}

/// Asserts that chunk i of `m` is held by exactly the nodes at (i + k) mod n, k < replicas.
async fn check_placement(m: &Manifest, nodes: &[Node], replicas: usize) {
    let chunks: Vec<ChunkId> = m.chunks().collect();
    let mut held = Vec::new();
    for node in nodes {
        let mut c = node.client().await;
        held.push(c.has(&chunks).await.expect("has"));
    }
    let n = nodes.len();
    for i in 0..chunks.len() {
        let actual: BTreeSet<usize> = held
            .iter()
            .enumerate()
            .filter(|(_, have)| have[i])
            .map(|(j, _)| j)
            .collect();
        let expected: BTreeSet<usize> = (0..replicas.min(n)).map(|k| (i + k) % n).collect();
        assert_eq!(
            actual,
            expected,
            "chunk {i} of {} should sit on nodes {expected:?} (positions (i + k) mod {n})",
            chunks.len()
        );
    }
}

/// The one JSON line `trove fetch --json` prints.
fn json_line(stdout: &str) -> String {
    stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in fetch output: {stdout:?}"))
        .to_owned()
}

fn field(json: &str, key: &str) -> u64 {
    json_u64(json, key).unwrap_or_else(|| panic!("no numeric {key:?} in {json}"))
}

fn assert_no_leftovers(out: &Path) {
    for suffix in [".trove-part", ".trove-state"] {
        let p = with_suffix(out, suffix);
        assert!(!p.exists(), "{} is left behind after a finished download", p.display());
    }
}

#[tokio::test]
async fn put_places_three_replicas_and_fetch_returns_the_exact_bytes() {
    // Pins: put puts each chunk on exactly 3 of 4 nodes, and fetch from all 4 gives back b3sum-identical bytes.
    let key = TestKey::new("roundtrip-64mib");
    let nodes: Vec<Node> = (0..4).map(|_| Node::start(&key)).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let dir = tempdir();
    let src = dir.path().join("big.bin");
    random_file(&src, 64 * MIB, 1);
    let manifest = dir.path().join("big.manifest");
    let id = trove_put(&src, &key, &refs, 3, &manifest);
    assert_eq!(id, b3sum(&src), "the file ID is the file's plain BLAKE3 hash");
    let m = manifest_of(&src, CHUNK_BYTES_DEFAULT);
    assert_eq!(m.n_chunks(), 64);
    check_placement(&m, &nodes, 3).await;
    let mut total = 0;
    for node in &nodes {
        total += node.client().await.stats().await.expect("stats").chunks;
    }
    assert_eq!(total, 3 * 64, "no node holds anything extra");

    let out = dir.path().join("big.out");
    run_trove_ok(fetch_args(&manifest, &refs, &out));
    assert_eq!(b3sum(&out), id);
    assert_no_leftovers(&out);
}

#[tokio::test]
async fn empty_tiny_and_just_over_a_chunk_files_round_trip() {
    // Pins: the edge sizes (0 bytes, 1 byte, 1 MiB + 1) survive hash, put, placement and fetch byte-exact.
    let key = TestKey::new("roundtrip-small");
    let nodes: Vec<Node> = (0..4).map(|_| Node::start(&key)).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let dir = tempdir();
    for (n, size) in [0, 1, MIB + 1].into_iter().enumerate() {
        let src = dir.path().join(format!("f{size}.bin"));
        random_file(&src, size, 10 + n as u64);
        let expected = b3sum(&src);
        let hashed = run_trove_ok(["hash".as_ref(), src.as_os_str()]);
        assert_eq!(
            hashed.trim_end(),
            format!("{expected}  {}", src.display()),
            "`trove hash` prints what b3sum prints"
        );

        let manifest = dir.path().join(format!("f{size}.manifest"));
        let id = trove_put(&src, &key, &refs, 3, &manifest);
        assert_eq!(id, expected, "file ID of a {size}-byte file");
        check_placement(&manifest_of(&src, CHUNK_BYTES_DEFAULT), &nodes, 3).await;

        let out = dir.path().join(format!("f{size}.out"));
        run_trove_ok(fetch_args(&manifest, &refs, &out));
        assert_eq!(std::fs::metadata(&out).expect("fetched file exists").len(), size);
        assert_eq!(b3sum(&out), expected, "fetched {size}-byte file");
        assert_no_leftovers(&out);
    }
    // More replicas than nodes: every node gets every chunk.
    let src = dir.path().join("capped.bin");
    random_file(&src, 2 * MIB + 1, 19);
    let manifest = dir.path().join("capped.manifest");
    trove_put(&src, &key, &refs, 9, &manifest);
    check_placement(&manifest_of(&src, CHUNK_BYTES_DEFAULT), &nodes, 9).await;

    // `trove stats --json` reports what the node itself reports.
    let stats = run_trove_ok(["stats", "--node", &nodes[0].addr_arg(), "--json"]);
    let own = nodes[0].client().await.stats().await.expect("stats");
    assert_eq!(json_u64(&stats, "chunks"), Some(own.chunks), "{stats}");
    assert_eq!(json_u64(&stats, "used_bytes"), Some(own.used_bytes), "{stats}");
    assert_eq!(json_str(&stats, "node_id"), Some(own.node_id.to_string()), "{stats}");
}

#[test]
fn download_survives_a_holder_killed_midway() {
    // Pins: SIGKILL of one holder mid-download costs nothing: the other holders serve its chunks and the bytes are exact.
    let key = TestKey::new("kill-holder");
    let mut nodes: Vec<Node> = (0..4).map(|_| Node::start(&key)).collect();
    let dir = tempdir();
    let src = dir.path().join("src.bin");
    random_file(&src, 32 * MIB, 2);
    let manifest = dir.path().join("src.manifest");
    let id = {
        let refs: Vec<&Node> = nodes.iter().collect();
        trove_put(&src, &key, &refs, 3, &manifest)
    };
    let out = dir.path().join("out.bin");
    let mut args = fetch_args(&manifest, &nodes.iter().collect::<Vec<_>>(), &out);
    args.extend(["--limit-rate".into(), (8 * MIB).to_string().into(), "--json".into()]);
    let mut fetch = Spawned::spawn(trove_command(&args));

    let state = with_suffix(&out, ".trove-state");
    wait_until(Duration::from_secs(60), "the download to finish a few chunks", || {
        if let Some(status) = fetch.try_wait() {
            panic!(
                "fetch ended ({status}) before a node could be killed mid-download; stderr:\n{}",
                fetch.stderr()
            );
        }
        ResumeState::read(&state).is_some_and(|s| s.n_done() >= 4)
    });
    nodes[0].kill();

    let status = fetch.wait(Duration::from_secs(120), "the download to finish without node 0");
    assert!(
        status.success(),
        "fetch failed after a holder died ({status}):\n{}",
        fetch.stderr()
    );
    assert_eq!(b3sum(&out), id);
    let json = json_line(&fetch.stdout());
    eprintln!("fetch report: {json}");
    assert_eq!(field(&json, "chunks_total"), 32, "{json}");
    assert_eq!(field(&json, "size"), 32 * MIB, "{json}");
    assert_no_leftovers(&out);
}

#[tokio::test]
async fn a_corrupt_copy_is_refused_by_the_client_and_quarantined_by_the_scrubber() {
    // Pins: a flipped byte on disk never reaches the output (the client rejects it and fetches elsewhere), and the scrubber quarantines it.
    let key = TestKey::new("corrupt");
    let mut bad = Node::start(&key);
    let good = Node::start(&key);
    // The first scrub pass runs at start; corrupt only after it, so the client meets the bad copy.
    bad.wait_for_log("scrub pass done", 1, Duration::from_secs(20));
    let dir = tempdir();
    let src = dir.path().join("src.bin");
    random_file(&src, 4 * MIB + 5000, 3);
    let manifest = dir.path().join("src.manifest");
    let id = trove_put(&src, &key, &[&good], 1, &manifest);
    let m = manifest_of(&src, CHUNK_BYTES_DEFAULT);
    let victim = m.chunk(0);
    // `bad` holds only chunk 0, so it is the natural first choice for it (an idle holder).
    let mut c = bad.client().await;
    c.put_chunk(victim, Some(&key.grant(victim)), &chunk_bytes_of(&src, &victim))
        .await
        .expect("put chunk 0 on bad");
    drop(c);
    let path = bad.chunk_path(&victim);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the stored chunk");
    let mid = u64::from(victim.len()) / 2;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, mid).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], mid).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let out = dir.path().join("out.bin");
    let mut args = fetch_args(&manifest, &[&bad, &good], &out);
    args.push("--json".into());
    let stdout = run_trove_ok(&args);
    assert_eq!(b3sum(&out), id, "the corrupt copy must never reach the output");
    let served = bad.client().await.stats().await.expect("stats").bytes_served;
    assert!(
        served > 0,
        "the corrupt node was never asked, so this test proved nothing"
    );
    let json = json_line(&stdout);
    let bad_src = json_sources(&json)
        .into_iter()
        .find(|s| json_str(s, "addr") == Some(bad.addr_arg()))
        .unwrap_or_else(|| panic!("no source entry for {} in {json}", bad.addr()));
    assert_eq!(
        json_u64(&bad_src, "chunks"),
        Some(0),
        "no chunk from the corrupt node is counted as fetched: {json}"
    );
    // The report counts a rejected copy either as a failure or (beyond the fixed fields) as a bad chunk.
    let rejected = json_u64(&bad_src, "failures").unwrap_or(0) + json_u64(&bad_src, "bad_chunks").unwrap_or(0);
    assert!(
        rejected >= 1,
        "the rejected copy should show against its source: {json}"
    );

    // The scrubber finds it at rest.
    bad.set_scrub_pause_secs(1);
    bad.restart();
    let deadline = Deadline::secs(30);
    loop {
        if bad.client().await.stats().await.expect("stats").quarantined == 1 {
            break;
        }
        deadline.check("the scrubber to quarantine the flipped chunk");
        tokio::time::sleep(POLL_STEP).await;
    }
    assert!(
        bad.quarantine_path(&victim).is_file(),
        "the bad chunk is kept in quarantine/"
    );
    assert!(!bad.chunk_path(&victim).exists(), "the bad chunk is out of service");
    let mut c = bad.client().await;
    assert_eq!(c.has(&[victim]).await.unwrap(), vec![false]);
    match c.get_chunk(victim).await {
        Err(NetError::Remote {
            code: ErrorCode::NotFound,
            ..
        }) => {}
        other => panic!("a quarantined chunk must not be served: {other:?}"),
    }
    assert_eq!(c.stats().await.unwrap().chunks, 0);
}

#[tokio::test]
async fn a_node_killed_mid_put_restarts_with_only_whole_verified_chunks() {
    // Pins: SIGKILL during a put never leaves a partial or wrong chunk in service, and tmp/ is cleaned at restart.
    let key = TestKey::new("kill-mid-put");
    let mut node = Node::start(&key);
    let dir = tempdir();
    let src = dir.path().join("src.bin");
    random_file(&src, 64 * MIB, 4);
    let manifest = dir.path().join("src.manifest");
    let m = manifest_of(&src, CHUNK_BYTES_DEFAULT);
    let mut put = Spawned::spawn(trove_command([
        "put".as_ref(),
        src.as_os_str(),
        "--key".as_ref(),
        key.secret_path().as_os_str(),
        "--node".as_ref(),
        node.addr_arg().as_ref(),
        "--replicas".as_ref(),
        "1".as_ref(),
        "--manifest-out".as_ref(),
        manifest.as_os_str(),
    ]));
    // Kill while a chunk is being written if we can catch one, else once a few chunks are in.
    let deadline = Deadline::secs(60);
    loop {
        if let Some(status) = put.try_wait() {
            panic!(
                "put ended ({status}) before the node could be killed; stderr:\n{}",
                put.stderr()
            );
        }
        let n = node.chunk_files().len();
        if (n >= 2 && !node.tmp_files().is_empty()) || n >= 16 {
            break;
        }
        deadline.check("the put to be under way");
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "killing the node with {} chunk files and tmp/ {:?}",
        node.chunk_files().len(),
        node.tmp_files()
    );
    node.kill();
    let status = put.wait(Duration::from_secs(60), "put to give up on the dead node");
    assert!(!status.success(), "a put whose only node died must not report success");

    node.restart();
    assert_eq!(
        node.tmp_files(),
        Vec::<String>::new(),
        "unfinished writes are removed at start"
    );
    let on_disk = node.chunk_files();
    let manifest_chunks: BTreeSet<ChunkId> = m.chunks().collect();
    for (name, len) in &on_disk {
        let chunk: ChunkId = name
            .parse()
            .unwrap_or_else(|e| panic!("stray file {name} in chunks/: {e:?}"));
        assert_eq!(*len, u64::from(chunk.len()), "{name} has a wrong length");
        assert!(manifest_chunks.contains(&chunk), "{name} is not a chunk of the file");
    }

    let mut c = node.client().await;
    let ticket = key.key.inventory_ticket(node.node_id(), now_s() + 600);
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = c.inventory(&ticket, after, 7).await.expect("inventory");
        listed.extend(page.iter().copied());
        after = page.last().copied();
        if !more {
            break;
        }
    }
    assert!(!listed.is_empty(), "some chunks were stored before the kill");
    let names: Vec<String> = listed.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        on_disk.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "inventory lists exactly what is on disk"
    );
    assert_eq!(c.stats().await.unwrap().chunks, listed.len() as u64);
    for chunk in &listed {
        let bytes = c
            .get_chunk(*chunk)
            .await
            .unwrap_or_else(|e| panic!("chunk {chunk} listed but does not verify: {e}"));
        assert_eq!(bytes, chunk_bytes_of(&src, chunk));
    }
    drop(c);

    // Putting again completes the file.
    let id = trove_put(&src, &key, &[&node], 1, &manifest);
    assert_eq!(node.client().await.stats().await.unwrap().chunks, 64);
    let out = dir.path().join("out.bin");
    run_trove_ok(fetch_args(&manifest, &[&node], &out));
    assert_eq!(b3sum(&out), id);
}

/// What a raw TCP session saw: our local address (the node logs it as the peer) and every
/// byte the node sent before closing.
struct RawSession {
    local: SocketAddr,
    received: Vec<u8>,
}

/// Sends `bytes` on a fresh connection (then half-closes if `shutdown`), and reads until the
/// node closes it. Panics if the node keeps it open.
fn raw_session(addr: SocketAddr, bytes: &[u8], shutdown: bool, case: &str) -> RawSession {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let local = s.local_addr().unwrap();
    // The node may close before taking everything; a failed write is then expected.
    let _ = s.write_all(bytes);
    if shutdown {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{case}: the node did not close the connection: {e}"),
        }
    }
    RawSession { local, received }
}

fn hello_with_version(v: u16) -> Vec<u8> {
    let mut h = wire::MAGIC.to_vec();
    h.extend_from_slice(&v.to_le_bytes());
    h
}

fn frame_prefix(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

#[tokio::test]
async fn malformed_input_closes_the_connection_with_a_logged_reason() {
    // Pins: garbage, oversize or truncated frames and a wrong version each close just that connection with a logged reason.
    let key = TestKey::new("malformed");
    let node = Node::start(&key);
    let hello = wire::client_hello().to_vec();
    let mut stats_frame = Vec::new();
    wire::encode_request(&wire::Request::Stats { req: 4 }, &mut stats_frame);
    let with_trailing = [&frame_prefix(3)[..], &stats_frame[4..], &[0]].concat();
    // (case, bytes, half-close after sending, node answers with its hello first, reason in the log)
    let cases: Vec<(&str, Vec<u8>, bool, bool, String)> = vec![
        (
            "garbage instead of a hello",
            b"GET / HTTP/1.1\r\nHost: trove\r\n\r\n".to_vec(),
            false,
            false,
            "bad magic".into(),
        ),
        (
            "header length over the limit",
            [&hello[..], &frame_prefix(HEADER_BYTES_MAX + 1)].concat(),
            false,
            true,
            format!(
                "header of {} bytes is over the {HEADER_BYTES_MAX} byte limit",
                HEADER_BYTES_MAX + 1
            ),
        ),
        (
            "header length u32::MAX",
            [&hello[..], &frame_prefix(u32::MAX)].concat(),
            false,
            true,
            format!("header of {} bytes", u32::MAX),
        ),
        (
            "empty header",
            [&hello[..], &frame_prefix(0)].concat(),
            false,
            true,
            "empty header".into(),
        ),
        (
            "protocol version 2",
            hello_with_version(2),
            false,
            true,
            "peer speaks protocol v2, we speak v1".into(),
        ),
        (
            "truncated frame",
            [&hello[..], &frame_prefix(100), &[7u8; 10]].concat(),
            true,
            true,
            "peer closed the connection".into(),
        ),
        (
            "undecodable header",
            [&hello[..], &frame_prefix(3), &[0xff, 0xff, 0xff]].concat(),
            false,
            true,
            "malformed header".into(),
        ),
        (
            "unknown message",
            [&hello[..], &frame_prefix(2), &[0x09, 0x01]].concat(),
            false,
            true,
            "malformed header".into(),
        ),
        (
            "trailing header bytes",
            [&hello[..], &with_trailing].concat(),
            false,
            true,
            "1 trailing bytes after the header".into(),
        ),
    ];
    let node_id = node.node_id();
    for (case, bytes, shutdown, answers, reason) in cases {
        let session = raw_session(node.addr(), &bytes, shutdown, case);
        if answers {
            assert_eq!(
                session.received,
                wire::server_hello(node_id).to_vec(),
                "{case}: the node sends its v1 hello, then closes"
            );
        } else {
            assert!(
                session.received.is_empty(),
                "{case}: nothing is sent to a stranger, got {:?}",
                session.received
            );
        }
        let lines = wait_for(
            Duration::from_secs(20),
            &format!("{case}: a `closing connection` log line"),
            || {
                let lines = node.closing_lines_for(session.local);
                (!lines.is_empty()).then_some(lines)
            },
        );
        assert!(
            lines.iter().any(|l| l.contains(&reason)),
            "{case}: expected reason {reason:?} in {lines:?}"
        );
    }
    // The node still serves everyone else.
    let stats = node
        .client()
        .await
        .stats()
        .await
        .expect("stats after the malformed connections");
    assert_eq!(stats.node_id, node_id);
    assert!(!node.log().contains("panicked"), "troved panicked:\n{}", node.log());
}

#[tokio::test]
async fn hostile_connections_keep_memory_bounded_and_the_node_serving() {
    // Pins: many half-sent maximal frames, one connection over the limit and 200 garbage connections neither grow memory without bound nor stop the node.
    let key = TestKey::new("memory");
    let node = Node::start(&key);
    node.client().await.stats().await.expect("stats");
    let before = node.rss_bytes();
    const BOUND: u64 = 64 * MIB;

    // Fill every connection slot (64) with a frame that announces a maximal header and stops.
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(node.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&[&wire::client_hello()[..], &frame_prefix(HEADER_BYTES_MAX), &[0u8; 1000]].concat())
            .unwrap();
        let mut hello = [0u8; wire::SERVER_HELLO_BYTES];
        s.read_exact(&mut hello).expect("server hello on a held connection");
        held.push(s);
    }
    // One more is over the limit: closed at once, with a log line.
    let extra = raw_session(node.addr(), &wire::client_hello(), false, "connection over the limit");
    assert!(extra.received.is_empty(), "a connection over the limit gets no hello");
    node.wait_for_log("too many connections", 1, Duration::from_secs(20));
    let peak = node.rss_bytes();
    assert!(
        peak < before + BOUND,
        "64 half-sent maximal headers took {} MiB (from {} MiB)",
        (peak - before) / MIB,
        before / MIB
    );
    drop(held);

    // Slots come back: a client gets served again.
    let deadline = Deadline::secs(20);
    loop {
        if let Ok(mut c) = trove_common::net::connect(node.addr()).await
            && c.stats().await.is_ok()
        {
            break;
        }
        deadline.check("a connection slot to free up after the held connections closed");
        tokio::time::sleep(POLL_STEP).await;
    }

    let hello = wire::client_hello();
    for i in 0..200u32 {
        let bytes = match i % 4 {
            0 => random_bytes(64 + i as usize, u64::from(i)),
            1 => [&hello[..], &frame_prefix(u32::MAX - i)].concat(),
            2 => [
                &hello[..],
                &frame_prefix(HEADER_BYTES_MAX),
                &random_bytes(4096, u64::from(i)),
            ]
            .concat(),
            _ => [&hello[..], &frame_prefix(40), &random_bytes(40, u64::from(i))].concat(),
        };
        // Kind 2 is a frame cut short: half-close so the node sees the end of it.
        raw_session(node.addr(), &bytes, i % 4 == 2, "garbage connection");
    }
    let after = node.rss_bytes();
    eprintln!(
        "troved RSS: {} KiB at start, {} KiB with every slot held, {} KiB after the garbage",
        before >> 10,
        peak >> 10,
        after >> 10
    );
    assert!(
        after < before + BOUND,
        "200 garbage connections left RSS at {} MiB (from {} MiB)",
        after / MIB,
        before / MIB
    );
    let stats = node.client().await.stats().await.expect("stats after the garbage");
    assert_eq!(stats.chunks, 0);
    assert!(!node.log().contains("panicked"), "troved panicked:\n{}", node.log());
}

#[tokio::test]
async fn puts_without_a_valid_grant_are_refused_and_store_nothing() {
    // Pins: a put with no grant, a foreign key's grant, an expired grant or another chunk's grant is refused with its own code and stores nothing.
    let key = TestKey::new("grants");
    let stranger = TestKey::new("grants-stranger");
    let node = Node::start(&key);
    let data = random_bytes(2 * MIB as usize, 5);
    let m = Manifest::of_bytes(&data, CHUNK_BYTES_DEFAULT).unwrap();
    let (chunk, other) = (m.chunk(0), m.chunk(1));
    let bytes = &data[..CHUNK as usize];
    let mut c = node.client().await;

    let expired = key.key.grant(chunk, now_s() - 60);
    let cases = [
        ("no grant", None, ErrorCode::GrantMissing),
        (
            "grant signed by another key",
            Some(stranger.grant(chunk)),
            ErrorCode::GrantInvalid,
        ),
        ("expired grant", Some(expired), ErrorCode::GrantExpired),
        (
            "grant for another chunk",
            Some(key.grant(other)),
            ErrorCode::GrantInvalid,
        ),
    ];
    for (case, grant, code) in cases {
        match c.put_chunk(chunk, grant.as_ref(), bytes).await {
            Err(NetError::Remote { code: got, message }) => {
                assert_eq!(got, code, "{case}: {message}");
                assert!(!message.is_empty(), "{case}: the refusal says why");
            }
            other => panic!("{case}: expected {code:?}, got {other:?}"),
        }
        // Same connection: the refused body was consumed and the connection goes on.
        assert_eq!(
            c.has(&[chunk]).await.expect("has after a refusal"),
            vec![false],
            "{case}: nothing stored"
        );
    }
    // Bytes that do not hash to the chunk are refused even with a good grant.
    let mut wrong = bytes.to_vec();
    wrong[12345] ^= 0x80;
    match c.put_chunk(chunk, Some(&key.grant(chunk)), &wrong).await {
        Err(NetError::Remote {
            code: ErrorCode::HashMismatch,
            ..
        }) => {}
        other => panic!("bad bytes: expected HashMismatch, got {other:?}"),
    }
    let stats = c.stats().await.unwrap();
    assert_eq!((stats.chunks, stats.used_bytes, stats.bytes_stored), (0, 0, 0));
    assert!(
        node.chunk_files().is_empty() && node.tmp_files().is_empty(),
        "no file was left behind"
    );

    // The control: the same put with a good grant is stored.
    c.put_chunk(chunk, Some(&key.grant(chunk)), bytes)
        .await
        .expect("put with a valid grant");
    assert_eq!(c.has(&[chunk, other]).await.unwrap(), vec![true, false]);
}

#[tokio::test]
async fn a_full_node_refuses_cleanly_and_keeps_nothing_partial() {
    // Pins: a put over capacity gets CapacityFull with a clear message and leaves no partial file or leaked reservation.
    let key = TestKey::new("capacity");
    let node = Node::builder(&key).capacity(3 * MIB).start();
    let data = random_bytes((4 * MIB + 100 * 1024) as usize, 6);
    let m = Manifest::of_bytes(&data, CHUNK_BYTES_DEFAULT).unwrap();
    let chunks: Vec<ChunkId> = m.chunks().collect();
    let body = |c: &ChunkId| &data[c.offset() as usize..][..c.len() as usize];
    let mut c = node.client().await;
    let mut stored = 0;
    let refused_at = loop {
        let chunk = chunks[stored];
        match c.put_chunk(chunk, Some(&key.grant(chunk)), body(&chunk)).await {
            Ok(()) => stored += 1,
            Err(NetError::Remote {
                code: ErrorCode::CapacityFull,
                message,
            }) => break (chunk, message),
            Err(e) => panic!("put {stored}: expected success or CapacityFull, got {e}"),
        }
        assert!(
            stored < chunks.len(),
            "a 3 MiB node took all {} MiB",
            data.len() as u64 / MIB
        );
    };
    assert_eq!(stored, 3, "three 1 MiB chunks fit in 3 MiB");
    let (_, message) = &refused_at;
    assert!(
        message.contains("capacity full") && message.contains(&(3 * MIB).to_string()),
        "unclear message: {message}"
    );
    let before = c.stats().await.unwrap();
    assert_eq!((before.chunks, before.used_bytes), (3, 3 * MIB));

    // A smaller chunk does not fit either; the refusals change nothing.
    let last = *chunks.last().unwrap();
    match c.put_chunk(last, Some(&key.grant(last)), body(&last)).await {
        Err(NetError::Remote {
            code: ErrorCode::CapacityFull,
            ..
        }) => {}
        other => panic!("a 100 KiB chunk on a full node: expected CapacityFull, got {other:?}"),
    }
    let after = c.stats().await.unwrap();
    assert_eq!(
        (after.chunks, after.used_bytes, after.bytes_stored),
        (3, 3 * MIB, 3 * MIB)
    );
    assert_eq!(node.tmp_files(), Vec::<String>::new(), "nothing partial in tmp/");
    assert_eq!(node.chunk_files().len(), 3);
    assert_eq!(c.has(&[chunks[3], last]).await.unwrap(), vec![false, false]);
    // A chunk already held is still accepted (nothing new to store).
    c.put_chunk(chunks[0], Some(&key.grant(chunks[0])), body(&chunks[0]))
        .await
        .expect("re-put of a held chunk");
    assert_eq!(c.stats().await.unwrap().used_bytes, 3 * MIB);
}

#[test]
fn an_interrupted_fetch_resumes_with_the_missing_chunks_only() {
    // Pins: killing `trove fetch` keeps its finished chunks; the rerun fetches only the rest and the result is byte-exact.
    let key = TestKey::new("resume");
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&key)).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let dir = tempdir();
    let src = dir.path().join("src.bin");
    random_file(&src, 32 * MIB, 7);
    let manifest = dir.path().join("src.manifest");
    let id = trove_put(&src, &key, &refs, 2, &manifest);
    let m = manifest_of(&src, CHUNK_BYTES_DEFAULT);
    let out = dir.path().join("out.bin");
    let state_path = with_suffix(&out, ".trove-state");
    let part_path = with_suffix(&out, ".trove-part");

    let mut args = fetch_args(&manifest, &refs, &out);
    args.extend(["--limit-rate".into(), (8 * MIB).to_string().into()]);
    let mut fetch = Spawned::spawn(trove_command(&args));
    wait_until(Duration::from_secs(60), "the download to finish a few chunks", || {
        if let Some(status) = fetch.try_wait() {
            panic!(
                "fetch ended ({status}) before it could be interrupted; stderr:\n{}",
                fetch.stderr()
            );
        }
        ResumeState::read(&state_path).is_some_and(|s| s.n_done() >= 4)
    });
    fetch.kill();

    let state = ResumeState::read(&state_path).expect("the state file is whole after SIGKILL (written atomically)");
    assert_eq!(
        (state.file.as_str(), state.size, state.chunk_bytes),
        (id.as_str(), 32 * MIB, CHUNK)
    );
    let done: Vec<usize> = (0..m.n_chunks()).filter(|&i| state.is_done(i)).collect();
    assert!(
        done.len() >= 4 && done.len() < m.n_chunks(),
        "interrupted mid-way: {} of {} done",
        done.len(),
        m.n_chunks()
    );
    assert!(!out.exists(), "OUT appears only when the download is complete");
    for &i in &done {
        let chunk = m.chunk(i);
        assert_eq!(
            chunk_bytes_of(&part_path, &chunk),
            chunk_bytes_of(&src, &chunk),
            "chunk {i} is marked done but its bytes are not in the part file"
        );
    }

    let mut args = fetch_args(&manifest, &refs, &out);
    args.push("--json".into());
    let json = json_line(&run_trove_ok(&args));
    eprintln!("resumed fetch report: {json}");
    assert_eq!(b3sum(&out), id);
    assert_no_leftovers(&out);
    assert_eq!(json_str(&json, "file_id").as_deref(), Some(id.as_str()), "{json}");
    let (total, fetched, resumed) = (
        field(&json, "chunks_total"),
        field(&json, "chunks_fetched"),
        field(&json, "chunks_resumed"),
    );
    assert_eq!(total, m.n_chunks() as u64, "{json}");
    assert_eq!(
        resumed,
        done.len() as u64,
        "every chunk the state file marked done is reused: {json}"
    );
    assert_eq!(fetched + resumed, total, "{json}");
    assert!(fetched < total && resumed > 0, "{json}");
    assert_eq!(field(&json, "bytes_fetched"), fetched * CHUNK, "{json}");
}

#[test]
fn keygen_makes_a_key_troved_accepts() {
    // Pins: `trove keygen` writes a secret that `trove put --key` reads and prints the public key troved trusts.
    let dir = tempdir();
    let secret = dir.path().join("k.secret");
    let public = run_trove_ok(["keygen".as_ref(), "--secret-out".as_ref(), secret.as_os_str()])
        .trim()
        .to_owned();
    assert!(
        is_hex64(&public),
        "keygen prints a 64-hex public key, printed {public:?}"
    );
    let text = std::fs::read_to_string(&secret).expect("secret file");
    let bytes: [u8; 32] = trove_common::hex::decode(text.trim()).expect("the secret file is 64 hex digits");
    let key = TestKey::from_secret(bytes);
    assert_eq!(
        key.public_hex(),
        public,
        "the printed public key belongs to the written secret"
    );
    let node = Node::start(&key);
    let src = dir.path().join("src.bin");
    random_file(&src, MIB + 1, 8);
    let mut args: Vec<std::ffi::OsString> = vec!["put".into(), src.clone().into(), "--key".into(), secret.into()];
    args.extend([
        "--node".into(),
        node.addr_arg().into(),
        "--manifest-out".into(),
        dir.path().join("m").into(),
    ]);
    assert_eq!(run_trove_ok(&args).trim(), b3sum(&src));
}

#[test]
fn a_fetch_nobody_can_finish_fails_naming_the_missing_chunks_and_resumes_later() {
    // Pins: with a chunk's only holder down, fetch exits non-zero naming exactly the missing chunks, keeps its progress, and a later run finishes.
    let key = TestKey::new("unservable");
    let mut nodes: Vec<Node> = (0..2).map(|_| Node::start(&key)).collect();
    let dir = tempdir();
    let src = dir.path().join("src.bin");
    random_file(&src, 4 * MIB, 9);
    let manifest = dir.path().join("src.manifest");
    let id = trove_put(&src, &key, &nodes.iter().collect::<Vec<_>>(), 1, &manifest);
    let m = manifest_of(&src, CHUNK_BYTES_DEFAULT);
    // Chunks 1 and 3 live on node 1 only.
    let live_addr = nodes[0].addr_arg();
    let dead_addr = nodes[1].addr_arg();
    nodes[1].kill();
    let out = dir.path().join("out.bin");
    let args: Vec<std::ffi::OsString> = vec![
        "fetch".into(),
        manifest.clone().into(),
        "--node".into(),
        live_addr.clone().into(),
        "--node".into(),
        dead_addr.into(),
        "-o".into(),
        out.clone().into(),
        "--no-progress".into(),
    ];
    let failed = run_trove(&args);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success(),
        "fetch cannot have completed; stderr:\n{stderr}"
    );
    for i in [1, 3] {
        let hash = m.chunk(i).hash().to_string();
        assert!(
            stderr.contains(&hash),
            "stderr should name missing chunk {i} ({hash}):\n{stderr}"
        );
    }
    for i in [0, 2] {
        let hash = m.chunk(i).hash().to_string();
        assert!(
            !stderr.contains(&hash),
            "chunk {i} was served, yet stderr names it:\n{stderr}"
        );
    }
    assert!(!out.exists(), "no OUT for an incomplete download");
    let state = ResumeState::read(&with_suffix(&out, ".trove-state")).expect("progress is kept for a later run");
    assert!(
        state.is_done(0) && state.is_done(2) && !state.is_done(1) && !state.is_done(3),
        "{state:?}"
    );

    nodes[1].restart();
    let mut args = fetch_args(&manifest, &nodes.iter().collect::<Vec<_>>(), &out);
    args.push("--json".into());
    let json = json_line(&run_trove_ok(&args));
    assert_eq!(b3sum(&out), id);
    assert_eq!(
        (field(&json, "chunks_resumed"), field(&json, "chunks_fetched")),
        (2, 2),
        "{json}"
    );
    assert_no_leftovers(&out);
}
