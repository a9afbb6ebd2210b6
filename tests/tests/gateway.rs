//! The streaming gateway end to end (issue 5, feature 13): `GET|HEAD
//! /api/v1/files/{id}/content` against a real controller and real appliances, asked with the
//! real `curl -r` and with a raw socket where a test must stop reading mid-body.
//!
//! Build the binaries first: `cargo build --workspace --bins`. SQLite only: the gateway reads
//! the database through the same calls as `GET /api/v1/files/{id}`. Every wait polls with a
//! deadline; no test asserts on timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use trove_common::api::{LoginResponse, MeView};
use trove_tests::*;

const ONLINE_DEADLINE: Duration = Duration::from_secs(45);
const PASSWORD: &str = "correct horse battery";
/// What the gateway may have fetched ahead of what a reader took (its read-ahead, 8 chunks,
/// plus what fits in the two sockets' buffers on loopback: the reader's is capped at
/// [`READER_RCVBUF_BYTES`], the sender's autotunes up to 4 MiB), in 1 MiB chunks.
const READ_AHEAD_BOUND_CHUNKS: u64 = 8 + 8;
/// The stalled reader's socket receive buffer (fixed, so the kernel does not grow it).
const READER_RCVBUF_BYTES: i32 = 256 << 10;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trove-gateway-")
        .tempdir()
        .expect("tempdir")
}

fn start(n: usize) -> Stack {
    let s = Stack::start(StackKind::EmbeddedSqlite, Controller::builder().grace_secs(2), n);
    s.wait_online(n, ONLINE_DEADLINE);
    s
}

struct User {
    token: String,
    config: tempfile::TempDir,
}

fn signup(s: &Stack, name: &str) -> User {
    let body = format!(r#"{{"name":"{name}","password":"{PASSWORD}"}}"#);
    let a = http(
        "POST",
        &format!("{}/api/v1/signup", s.controller.url()),
        None,
        Some(&body),
    );
    assert_eq!(a.status, 200, "signup: {}", a.body);
    let r: LoginResponse = a.json();
    User {
        token: r.token,
        config: tempdir(),
    }
}

/// Shares `path` as `user` and waits (`--wait`) until every chunk has its copies; returns
/// the FileId.
/// A random file of `size` bytes (from `seed`) written to `dir` as `name` and shared by
/// `user` as `kind`: its bytes and its file ID.
fn share_random(
    s: &Stack,
    user: &User,
    dir: &tempfile::TempDir,
    name: &str,
    size: u64,
    seed: u64,
    kind: &str,
) -> (Vec<u8>, String) {
    let path = dir.path().join(name);
    random_file(&path, size, seed);
    (std::fs::read(&path).unwrap(), share(s, user, &path, kind, false))
}

fn share(s: &Stack, user: &User, path: &Path, kind: &str, private: bool) -> String {
    let mut args = vec!["--kind", kind];
    if private {
        args.push("--private");
    }
    s.share_as(&user.token, user.config.path(), path, &args)
}

/// What curl got: status, headers (names lowercased), body.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `curl` with `args` (e.g. `-r 0-9`, `-I`) and the token, if any, on the content URL.
fn curl(s: &Stack, token: Option<&str>, file_id: &str, query: &str, args: &[&str]) -> Got {
    let dir = tempdir();
    let (hdr, body) = (dir.path().join("headers"), dir.path().join("body"));
    let url = format!("{}/api/v1/files/{file_id}/content{query}", s.controller.url());
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-D"])
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.arg(&url).output().expect("running curl (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    let text = std::fs::read_to_string(&hdr).unwrap_or_default();
    Got {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("curl printed the status"),
        headers: text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// A counter from the controller's `/metrics`.
fn metric(s: &Stack, name: &str) -> u64 {
    let m = http("GET", &format!("{}/metrics", s.controller.url()), None, None);
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", m.body))
}

/// A GET on a raw socket: sends it, reads the status line and headers, and hands back the
/// reader positioned at the body with the body's length.
fn raw_get(s: &Stack, token: &str, file_id: &str, range: Option<&str>) -> (BufReader<TcpStream>, u16, u64) {
    let host = s.controller.url().strip_prefix("http://").unwrap().to_owned();
    let mut stream = TcpStream::connect(&host).expect("connect");
    set_rcvbuf(&stream, READER_RCVBUF_BYTES);
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "GET /api/v1/files/{file_id}/content HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
    );
    if let Some(r) = range {
        req.push_str(&format!("Range: {r}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    (r, status, len)
}

fn set_rcvbuf(stream: &TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to an i32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

fn events(s: &Stack, user: &User, file_id: &str, kind: &str) -> usize {
    let a = http(
        "GET",
        &format!("{}/api/v1/me", s.controller.url()),
        Some(&user.token),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let me: MeView = a.json();
    me.history
        .iter()
        .filter(|e| e.file_id == file_id && e.kind == kind)
        .count()
}

/// Pins: requests that want the same cold chunks at once (a player's overlapping ranges,
/// several viewers of one file) share one fetch of each chunk, whether a request meets it
/// first (block path) or further on (whole chunk). Without that each would ask an
/// appliance for it again; with the cache as well, the count below is exact whatever the
/// timing.
#[test]
fn concurrent_requests_for_the_same_chunks_fetch_each_once() {
    let s = start(3);
    let alice = signup(&s, "alice");
    let dir = tempdir();
    let (bytes, id) = share_random(&s, &alice, &dir, "talk.mp4", 12 * MIB, 53, "video");
    let before = metric(&s, "trove_gateway_chunks_fetched_total");
    // Six requests over chunks 2..8, starting in different chunks and at different places.
    let ranges: Vec<(u64, u64)> = (0..6u64)
        .map(|i| (2 * MIB + i * (MIB / 2) + 77, 8 * MIB - 1 - i * 1000))
        .collect();
    let go = std::sync::Barrier::new(ranges.len());
    std::thread::scope(|scope| {
        for &(a, b) in &ranges {
            let (s, go, id, token) = (&s, &go, &id, alice.token.as_str());
            let bytes = &bytes;
            scope.spawn(move || {
                go.wait();
                let g = curl(s, Some(token), id, "", &["-r", &format!("{a}-{b}")]);
                assert_eq!(g.status, 206);
                assert!(
                    g.body == bytes[a as usize..=b as usize],
                    "range {a}-{b}: the bytes differ"
                );
            });
        }
    });
    assert_eq!(
        metric(&s, "trove_gateway_chunks_fetched_total") - before,
        6,
        "chunks 2..8 fetched once each"
    );
}

/// Every kind of single range, checked byte for byte against the file; the headers a player
/// needs; and the proof that a range costs only the chunks under it (and a bounded few more
/// when the reader stops reading).
#[test]
fn ranges_are_exact_and_fetch_only_the_chunks_they_cover() {
    let s = start(3);
    let alice = signup(&s, "alice");
    let dir = tempdir();
    let size = 40 * MIB + 123;
    let (bytes, id) = share_random(&s, &alice, &dir, "clip.mp4", size, 51, "video");
    let t = Some(alice.token.as_str());
    let n_chunks = size.div_ceil(MIB);

    // One byte in the middle of a chunk nobody asked for yet: exactly one chunk fetched.
    let before = metric(&s, "trove_gateway_chunks_fetched_total");
    let mid = 17 * MIB + 4321;
    let g = curl(&s, t, &id, "", &["-r", &format!("{mid}-{mid}")]);
    assert_eq!(g.status, 206);
    assert_eq!(g.body, &bytes[mid as usize..=mid as usize]);
    assert_eq!(metric(&s, "trove_gateway_chunks_fetched_total") - before, 1);
    // The same range again comes from the cache.
    let hits = metric(&s, "trove_gateway_cache_hits_total");
    curl(&s, t, &id, "", &["-r", &format!("{}-{}", mid - 10, mid + 10)]);
    assert_eq!(metric(&s, "trove_gateway_chunks_fetched_total") - before, 1);
    assert_eq!(metric(&s, "trove_gateway_cache_hits_total") - hits, 1);

    // Start, middle across chunk boundaries, end, open-ended, suffix, past the end.
    let cases: [(String, u64, u64); 7] = [
        ("0-99".into(), 0, 99),
        (format!("{}-{}", 3 * MIB - 5, 6 * MIB + 5), 3 * MIB - 5, 6 * MIB + 5),
        (format!("{}-{}", size - 10, size - 1), size - 10, size - 1),
        (format!("{}-", 35 * MIB + 7), 35 * MIB + 7, size - 1),
        ("-1000".into(), size - 1000, size - 1),
        (format!("{}-{}", size - 2, size + 100), size - 2, size - 1),
        (format!("{}-{}", MIB, 2 * MIB - 1), MIB, 2 * MIB - 1),
    ];
    for (r, a, b) in &cases {
        let g = curl(&s, t, &id, "", &["-r", r]);
        assert_eq!(g.status, 206, "range {r}");
        assert_eq!(
            g.header("content-range"),
            Some(format!("bytes {a}-{b}/{size}").as_str()),
            "range {r}"
        );
        assert_eq!(g.header("content-length"), Some((b - a + 1).to_string().as_str()));
        assert_eq!(g.header("accept-ranges"), Some("bytes"));
        assert!(
            g.body == bytes[*a as usize..=*b as usize],
            "range {r}: the bytes differ"
        );
    }
    let g = curl(&s, t, &id, "", &["-r", &format!("{size}-")]);
    assert_eq!(g.status, 416);
    assert_eq!(g.header("content-range"), Some(format!("bytes */{size}").as_str()));

    // The whole file, and its headers.
    let g = curl(&s, t, &id, "", &[]);
    assert_eq!(g.status, 200);
    assert!(g.body == bytes, "the whole file differs");
    assert_eq!(g.header("content-type"), Some("video/mp4"));
    assert_eq!(g.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(g.header("accept-ranges"), Some("bytes"));
    let etag = format!("\"{id}\"");
    assert_eq!(g.header("etag"), Some(etag.as_str()));
    assert!(g.header("content-disposition").unwrap().starts_with("inline;"));
    assert!(g.header("content-security-policy").unwrap().contains("sandbox"));

    // HEAD: the headers, and no fetching (curl -I writes the headers as its output).
    let fetched = metric(&s, "trove_gateway_chunks_fetched_total");
    let sent = metric(&s, "trove_gateway_bytes_sent_total");
    let g = curl(&s, t, &id, "", &["-I"]);
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-length"), Some(size.to_string().as_str()));
    let g = curl(&s, t, &id, "", &["-I", "-r", "10-19"]);
    assert_eq!(g.status, 206);
    assert_eq!(g.header("content-range"), Some(format!("bytes 10-19/{size}").as_str()));
    assert_eq!(metric(&s, "trove_gateway_chunks_fetched_total"), fetched);
    assert_eq!(metric(&s, "trove_gateway_bytes_sent_total"), sent);

    // Validators: a current copy is 304; If-Range with our tag keeps the range, with another
    // drops it (the whole file, 200).
    let g = curl(&s, t, &id, "", &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!(g.status, 304);
    assert!(g.body.is_empty());
    let g = curl(&s, t, &id, "", &["-r", "5-9", "-H", &format!("If-Range: {etag}")]);
    assert_eq!((g.status, g.body.as_slice()), (206, &bytes[5..10]));
    let g = curl(&s, t, &id, "", &["-r", "5-9", "-H", "If-Range: \"stale\""]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body.len() as u64, size);

    // Downloading names the file.
    let g = curl(&s, t, &id, "?download=1", &["-r", "0-0"]);
    assert_eq!(
        g.header("content-disposition"),
        Some("attachment; filename=\"clip.mp4\"; filename*=UTF-8''clip.mp4")
    );

    // Read-ahead is bounded: a reader that takes one chunk's worth of `bytes=0-` and then
    // stops reading leaves the gateway fetching a few chunks ahead, not the whole file. A
    // fresh controller starts with an empty cache.
    let mut s = s;
    s.controller.restart();
    s.wait_online(3, ONLINE_DEADLINE);
    let (mut r, status, len) = raw_get(&s, &alice.token, &id, Some("bytes=0-"));
    assert_eq!((status, len), (206, size));
    let mut first = vec![0u8; MIB as usize];
    r.read_exact(&mut first).unwrap();
    assert!(first == bytes[..MIB as usize]);
    let deadline = Deadline::after(Duration::from_secs(60));
    let fetched = loop {
        let f = metric(&s, "trove_gateway_chunks_fetched_total");
        if f >= 1 && metric(&s, "trove_gateway_fetches_in_flight") == 0 {
            break f;
        }
        deadline.check("the gateway's read-ahead to settle");
        std::thread::sleep(POLL_STEP);
    };
    assert!(
        fetched <= 1 + READ_AHEAD_BOUND_CHUNKS && fetched < n_chunks,
        "a stalled reader of chunk 1 made the gateway fetch {fetched} of {n_chunks} chunks"
    );
    // Dropping the connection stops it altogether.
    drop(r);
    let deadline = Deadline::after(Duration::from_secs(30));
    while metric(&s, "trove_gateway_fetches_in_flight") != 0 {
        deadline.check("fetches to stop");
        std::thread::sleep(POLL_STEP);
    }
    assert!(metric(&s, "trove_gateway_chunks_fetched_total") <= 1 + READ_AHEAD_BOUND_CHUNKS);
}

/// Who may read what, and what reading leaves in the history.
#[test]
fn privacy_auth_and_history() {
    let s = start(3);
    let (alice, bob) = (signup(&s, "alice"), signup(&s, "bob"));
    let dir = tempdir();
    let (public, private) = (dir.path().join("song.mp3"), dir.path().join("diary.txt"));
    random_file(&public, 3 * MIB + 17, 52);
    random_file(&private, 100_000, 53);
    let pub_id = share(&s, &alice, &public, "audio", false);
    let priv_id = share(&s, &alice, &private, "document", true);
    let pub_bytes = std::fs::read(&public).unwrap();

    // No token: 401. A bad one: 401. A private file: 404 to bob (like an unknown ID), 200 to
    // alice.
    assert_eq!(curl(&s, None, &pub_id, "", &[]).status, 401);
    assert_eq!(curl(&s, Some("nope"), &pub_id, "", &[]).status, 401);
    assert_eq!(curl(&s, Some(&bob.token), &priv_id, "", &[]).status, 404);
    assert_eq!(curl(&s, Some(&bob.token), &priv_id, "", &["-I"]).status, 404);
    assert_eq!(curl(&s, Some(&bob.token), &"0".repeat(64), "", &[]).status, 404);
    assert_eq!(curl(&s, Some(&bob.token), "not-an-id", "", &[]).status, 400);
    let g = curl(&s, Some(&alice.token), &priv_id, "", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(g.body == std::fs::read(&private).unwrap());

    // Bob plays the song twice from the start, seeks, and HEADs: one view.
    let g = curl(&s, Some(&bob.token), &pub_id, "", &[]);
    assert_eq!(g.status, 200);
    assert!(g.body == pub_bytes);
    assert_eq!(g.header("content-type"), Some("audio/mpeg"));
    curl(&s, Some(&bob.token), &pub_id, "", &["-r", "0-"]);
    curl(&s, Some(&bob.token), &pub_id, "", &["-r", "1000-2000"]);
    curl(&s, Some(&bob.token), &pub_id, "", &["-I"]);
    let deadline = Deadline::after(Duration::from_secs(10));
    while events(&s, &bob, &pub_id, "view") == 0 {
        deadline.check("bob's view to be recorded");
        std::thread::sleep(POLL_STEP);
    }
    assert_eq!(events(&s, &bob, &pub_id, "view"), 1);
    assert_eq!(events(&s, &bob, &pub_id, "download"), 0);

    // A partial download records nothing; a whole one records a download.
    curl(&s, Some(&bob.token), &pub_id, "?download=1", &["-r", "0-99"]);
    assert_eq!(events(&s, &bob, &pub_id, "download"), 0);
    let g = curl(&s, Some(&bob.token), &pub_id, "?download=1", &[]);
    assert!(g.body == pub_bytes);
    assert!(g.header("content-disposition").unwrap().starts_with("attachment;"));
    let deadline = Deadline::after(Duration::from_secs(10));
    while events(&s, &bob, &pub_id, "download") == 0 {
        deadline.check("bob's download to be recorded");
        std::thread::sleep(POLL_STEP);
    }
    assert_eq!(events(&s, &bob, &pub_id, "download"), 1);
    assert_eq!(events(&s, &bob, &pub_id, "view"), 1);
    assert_eq!(events(&s, &alice, &pub_id, "view"), 0);

    // A foreign page that links a logged-in browser here gets the bytes but writes no
    // history (browsers say `Sec-Fetch-Site: cross-site`); the same from the dashboard does.
    let carol = signup(&s, "carol");
    let foreign = ["-H", "Sec-Fetch-Site: cross-site"];
    assert!(curl(&s, Some(&carol.token), &pub_id, "", &foreign).body == pub_bytes);
    assert!(curl(&s, Some(&carol.token), &pub_id, "?download=1", &foreign).body == pub_bytes);
    curl(
        &s,
        Some(&carol.token),
        &pub_id,
        "?download=1",
        &["-H", "Sec-Fetch-Site: same-origin"],
    );
    let deadline = Deadline::after(Duration::from_secs(10));
    while events(&s, &carol, &pub_id, "download") == 0 {
        deadline.check("carol's own download to be recorded");
        std::thread::sleep(POLL_STEP);
    }
    assert_eq!(
        events(&s, &carol, &pub_id, "download"),
        1,
        "the cross-site download is not history"
    );
    assert_eq!(
        events(&s, &carol, &pub_id, "view"),
        0,
        "the cross-site play is not history"
    );
}

/// An appliance killed while the gateway streams a file from it: the rest of the file comes
/// from the other holders, every byte right.
#[test]
fn a_holder_killed_mid_stream_is_replaced_by_another() {
    let mut s = start(3);
    let alice = signup(&s, "alice");
    let dir = tempdir();
    let size = 30 * MIB + 5;
    let (bytes, id) = share_random(&s, &alice, &dir, "film.mkv", size, 54, "video");

    let (mut r, status, len) = raw_get(&s, &alice.token, &id, None);
    assert_eq!((status, len), (200, size));
    let mut got = vec![0u8; size as usize];
    r.read_exact(&mut got[..2 * MIB as usize]).unwrap();
    s.nodes[0].kill();
    r.read_exact(&mut got[2 * MIB as usize..]).unwrap();
    assert!(got == bytes, "the bytes streamed across the kill differ");
    assert!(
        s.controller.log_count("gateway: holder failed") > 0,
        "the killed holder was never tried, so the test proved nothing:\n{}",
        s.logs()
    );
    // And a new request after the kill is whole too.
    let g = curl(&s, Some(&alice.token), &id, "", &["-r", &format!("{}-", 20 * MIB)]);
    assert_eq!(g.status, 206);
    assert!(g.body == bytes[20 * MIB as usize..]);
}

/// A block of the block path (`trove_common::limits::BLOCK_BYTES`).
const BLOCK: u64 = 16 * 1024;

/// The first chunk of a cold response comes through the block path (verified 16 KiB blocks
/// from where the range starts): ranges starting at block and chunk boundaries and beside
/// them, inside the short last block of the short last chunk, and in one-chunk files, are
/// byte-exact; each cold chunk counts as exactly one fetched chunk and is cached whole.
#[test]
fn ranges_starting_anywhere_in_a_cold_first_chunk_are_exact() {
    let s = start(3);
    let alice = signup(&s, "alice");
    let dir = tempdir();
    let t = Some(alice.token.as_str());

    // 24 whole chunks, then a last chunk of 2 blocks and 123 bytes.
    let size = 24 * MIB + 2 * BLOCK + 123;
    let (bytes, id) = share_random(&s, &alice, &dir, "big.bin", size, 61, "other");
    // (chunk, offset within it, bytes wanted or None for open-ended). Each chunk is asked
    // once, so each request meets a cold first chunk.
    let cases: &[(u64, u64, Option<u64>)] = &[
        (0, 0, Some(1)),
        (1, 1, Some(10)),
        (2, BLOCK - 1, Some(2)),
        (3, BLOCK, Some(BLOCK)),
        (4, BLOCK + 1, Some(3 * BLOCK)),
        (5, 63 * BLOCK, Some(BLOCK)),
        (6, 63 * BLOCK + 5, Some(MIB)), // on into chunk 7
        (8, MIB - 1, Some(2)),          // chunk 8's last byte and chunk 9's first
        (10, 12345, Some(65536)),       // what the benchmark asks
        (11, 40 * BLOCK + 7, Some(5 * MIB)),
        (17, MIB - BLOCK, Some(BLOCK)),
        (18, 2 * BLOCK, None), // open-ended, to the short last chunk
    ];
    for &(chunk, within, len) in cases {
        let a = chunk * MIB + within;
        let b = len.map_or(size - 1, |n| (a + n - 1).min(size - 1));
        let before = metric(&s, "trove_gateway_chunks_fetched_total");
        let g = curl(&s, t, &id, "", &["-r", &format!("{a}-{b}")]);
        assert_eq!(g.status, 206, "range {a}-{b}");
        assert_eq!(
            g.header("content-range"),
            Some(format!("bytes {a}-{b}/{size}").as_str())
        );
        assert!(
            g.body == bytes[a as usize..=b as usize],
            "range {a}-{b}: the bytes differ"
        );
        // Every chunk under the range was cold: each counts once, block path or not.
        assert_eq!(
            metric(&s, "trove_gateway_chunks_fetched_total") - before,
            b / MIB - a / MIB + 1,
            "range {a}-{b}"
        );
    }
    // Inside the last chunk's short last block, cold again after a restart empties the cache.
    let mut s = s;
    s.controller.restart();
    s.wait_online(3, ONLINE_DEADLINE);
    let t = Some(alice.token.as_str());
    for (a, b) in [
        (size - 100, size - 1),
        (size - 123, size - 123),
        (24 * MIB + 2 * BLOCK, size - 1),
    ] {
        let g = curl(&s, t, &id, "", &["-r", &format!("{a}-{b}")]);
        assert_eq!(g.status, 206);
        assert!(
            g.body == bytes[a as usize..=b as usize],
            "range {a}-{b}: the bytes differ"
        );
    }
    // The first request was cold, the others found the chunk cached whole.
    assert_eq!(metric(&s, "trove_gateway_chunks_fetched_total"), 1);
    assert_eq!(metric(&s, "trove_gateway_cache_hits_total"), 2);

    // One-chunk files (their chunk is the root): a few blocks, under a block, one byte.
    for (n, len) in [(0u64, 3 * BLOCK + 7), (1, BLOCK - 1), (2, 1)] {
        let path = dir.path().join(format!("small{n}.bin"));
        random_file(&path, len, 70 + n);
        let small = std::fs::read(&path).unwrap();
        let id = share(&s, &alice, &path, "other", false);
        let a = len / 2;
        let g = curl(&s, t, &id, "", &["-r", &format!("{a}-")]);
        assert_eq!(g.status, 206);
        assert!(
            g.body == small[a as usize..],
            "{len}-byte file from {a}: the bytes differ"
        );
        let g = curl(&s, t, &id, "", &[]);
        assert!(g.body == small, "{len}-byte file whole: the bytes differ");
    }
    assert_eq!(
        s.controller.log_count("block path"),
        0,
        "no holder should have failed:\n{}",
        s.logs()
    );
}

/// Pins: a holder whose stored copy is damaged never gets a bad byte to the browser. troved
/// sends the blocks against the CVs it stored with the chunk, so the gateway refuses the
/// damaged block itself; it then fetches the chunk whole, rejects the damaged copy from that
/// holder by its hash, and takes another holder's.
#[test]
fn a_damaged_copy_never_reaches_the_browser() {
    use std::os::unix::fs::FileExt;
    let s = start(3);
    let alice = signup(&s, "alice");
    let dir = tempdir();
    let size = 6 * MIB + 999;
    let (bytes, id) = share_random(&s, &alice, &dir, "film.mp4", size, 62, "video");
    let m = manifest_of(&dir.path().join("film.mp4"), trove_common::limits::CHUNK_BYTES_DEFAULT);
    // Chunks 0..3 damaged on two of the three holders, one block in the middle of each. The
    // gateway spreads consecutive chunks over the holders, so for some of them a damaged
    // copy is the first asked.
    for k in 0..3 {
        let chunk = m.chunk(k);
        for node in &s.nodes[..2] {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(node.chunk_path(&chunk))
                .expect("open the stored chunk");
            let at = 20 * BLOCK + 100;
            let mut byte = [0u8; 1];
            f.read_exact_at(&mut byte, at).unwrap();
            f.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
            f.sync_all().unwrap();
        }
    }
    for k in 0..3u64 {
        // From inside the damaged block, and from before it across it.
        for (a, b) in [
            (k * MIB + 20 * BLOCK + 50, k * MIB + 21 * BLOCK),
            (k * MIB + 3, k * MIB + MIB - 1),
        ] {
            let g = curl(&s, Some(&alice.token), &id, "", &["-r", &format!("{a}-{b}")]);
            assert_eq!(g.status, 206);
            assert!(
                g.body == bytes[a as usize..=b as usize],
                "range {a}-{b}: the bytes differ"
            );
        }
    }
    let whole = curl(&s, Some(&alice.token), &id, "", &[]);
    assert!(whole.body == bytes, "the whole file differs");
    // troved sends the blocks of a copy it stored whole with their stored chaining values,
    // unread: the gateway refuses the damaged block itself, on the block path and on the
    // whole-chunk retry alike.
    let refused = |path: &str| {
        s.controller
            .log()
            .lines()
            .filter(|l| l.contains(path) && l.contains("failed verification"))
            .count()
    };
    assert!(
        refused("failed on the block path") > 0,
        "no damaged copy was refused on the block path, so this test proved nothing:\n{}",
        s.logs()
    );
    assert!(
        refused("holder failed, trying the next") > 0,
        "the whole-chunk retry never refused a damaged copy by its hash:\n{}",
        s.logs()
    );
}
