//! People and findability end to end (issue 4): accounts, what shares say, search ranked by
//! availability, privacy, history and recommendations, against a real controller, real
//! appliances and the real `trove` CLI, on embedded+SQLite and on Mosquitto+PostgreSQL.
//!
//! Build the binaries first: `cargo build --workspace --bins`. Every wait polls with a
//! deadline; no test asserts on timing.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use trove_common::api::{ApiErrorBody, FileView, LoginResponse, MeView, NewToken, Recommendation, SearchResults};
use trove_tests::*;

const ONLINE_DEADLINE: Duration = Duration::from_secs(45);
const AVAILABILITY_DEADLINE: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trove-people-")
        .tempdir()
        .expect("tempdir")
}

/// A stack of `kind` with `n` appliances online.
fn start(kind: StackKind, n: usize) -> Stack {
    let s = Stack::start(kind, Controller::builder().grace_secs(2), n);
    s.wait_online(n, ONLINE_DEADLINE);
    s
}

/// Someone signed up on the stack's controller, with their own config directory.
struct User {
    name: String,
    token: String,
    config: tempfile::TempDir,
}

fn api<T: DeserializeOwned>(s: &Stack, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> T {
    let a = http(method, &format!("{}{path}", s.controller.url()), token, body);
    assert!(
        (200..300).contains(&a.status),
        "{method} {path}: {} {}\n{}",
        a.status,
        a.body,
        s.logs()
    );
    a.json()
}

fn signup(s: &Stack, name: &str) -> User {
    let body = format!(r#"{{"name":"{name}","password":"{PASSWORD}"}}"#);
    let r: LoginResponse = api(s, "POST", "/api/v1/signup", None, Some(&body));
    assert_eq!(r.user.name, name);
    User {
        name: name.into(),
        token: r.token,
        config: tempdir(),
    }
}

/// Runs `trove ARGS` as `user`; the output, success or not.
fn trove_as(s: &Stack, user: &User, args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let mut cmd = trove_command(&args);
    cmd.env("TROVE_CONTROLLER", s.controller.url())
        .env("TROVE_TOKEN", &user.token)
        .env("XDG_CONFIG_HOME", user.config.path());
    cmd.output().expect("running trove")
}

fn trove_ok(s: &Stack, user: &User, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = trove_as(s, user, args);
    assert!(
        out.status.success(),
        "trove {:?} as {} failed:\n{}\n{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        user.name,
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[derive(Deserialize)]
struct ShareReport {
    file_id: String,
}

/// What one share says.
struct Share<'a> {
    title: &'a str,
    kind: &'a str,
    tags: &'a [&'a str],
    private: bool,
}

/// Shares a fresh 64 KiB file (or `path`) with `--wait`; returns its FileId.
fn share(s: &Stack, user: &User, dir: &Path, seed: u64, sh: &Share<'_>) -> String {
    let path = dir.join(format!("file-{seed}.bin"));
    if !path.exists() {
        random_file(&path, 64 << 10, seed);
    }
    share_path(s, user, &path, sh)
}

fn share_path(s: &Stack, user: &User, path: &Path, sh: &Share<'_>) -> String {
    let mut args: Vec<OsString> = ["share".into(), path.into(), "--title".into(), sh.title.into()].to_vec();
    args.extend(["--kind".into(), sh.kind.into()]);
    for t in sh.tags {
        args.extend(["--tag".into(), (*t).into()]);
    }
    if sh.private {
        args.push("--private".into());
    }
    args.extend(["--wait".into(), "--json".into(), "--no-progress".into()]);
    let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
    let out = trove_ok(s, user, &refs);
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("share --json prints JSON");
    serde_json::from_str::<ShareReport>(line).expect("share report").file_id
}

fn search(s: &Stack, user: &User, query: &str) -> SearchResults {
    api(s, "GET", &format!("/api/v1/search?{query}"), Some(&user.token), None)
}

fn titles(r: &SearchResults) -> Vec<String> {
    r.hits.iter().map(|h| h.title.clone()).collect()
}

/// `q` as a query-string value.
fn enc(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

const CATALOGUE: [(&str, &str, &[&str], usize); 20] = [
    ("Big Buck Bunny", "video", &["animation", "open-movie"], 0),
    ("Sintel", "video", &["animation", "fantasy"], 0),
    ("Tears of Steel", "video", &["scifi", "open-movie"], 1),
    ("Elephants Dream", "video", &["animation", "scifi"], 1),
    ("Cosmos Laundromat", "video", &["animation", "fantasy"], 2),
    ("Debian 12 netinst", "software", &["linux", "debian"], 0),
    ("Debian 12 DVD", "software", &["linux", "debian"], 1),
    ("Ubuntu 24.04 desktop", "software", &["linux"], 2),
    ("Moonlight Sonata", "audio", &["classical", "piano"], 0),
    ("Four Seasons", "audio", &["classical", "violin"], 1),
    ("Space Oddity", "audio", &["rock"], 2),
    ("Holiday photos", "image", &["family"], 0),
    ("Mountain panorama", "image", &["landscape"], 1),
    ("Café crème recipes", "document", &["cooking"], 2),
    ("Rust book", "document", &["rust", "programming"], 0),
    ("SICP", "document", &["programming", "lisp"], 1),
    ("Project backup", "archive", &["backup"], 2),
    ("Photos archive", "archive", &["family", "backup"], 0),
    ("Fantasy novel draft", "document", &["fantasy", "writing"], 2),
    ("Animation reel", "video", &["animation"], 1),
];

/// Titles of the catalogue entries picked by `keep`, newest share first (equal relevance and
/// availability rank by age).
fn expect(keep: impl Fn(&(&str, &str, &[&str], usize)) -> bool) -> Vec<String> {
    CATALOGUE
        .iter()
        .rev()
        .filter(|e| keep(e))
        .map(|e| e.0.to_owned())
        .collect()
}

fn search_ranks_by_relevance_and_availability(kind: StackKind) {
    let mut s = start(kind, 5);
    let dir = tempdir();
    let users = [signup(&s, "alice"), signup(&s, "bob"), signup(&s, "carol")];
    let mut ids = Vec::new();
    for (i, (title, k, tags, owner)) in CATALOGUE.iter().enumerate() {
        let sh = Share {
            title,
            kind: k,
            tags,
            private: false,
        };
        ids.push(share(&s, &users[*owner], dir.path(), 100 + i as u64, &sh));
        // Distinct creation seconds make "newest first" a strict order.
        std::thread::sleep(Duration::from_millis(1050));
    }
    let carol = &users[2];
    // Availability is recomputed in the background: wait until every file shows its three.
    wait_until(AVAILABILITY_DEADLINE, "every file available on 3 appliances", || {
        let r = search(&s, carol, "per_page=50");
        r.total == 20 && r.hits.iter().all(|h| h.available && h.availability == 3)
    });
    let all = |q: &str| titles(&search(&s, carol, &format!("{q}&per_page=50")));

    assert_eq!(all("q=debian"), expect(|e| e.0.starts_with("Debian")), "by name");
    assert_eq!(
        all("q=debian-12"),
        expect(|e| e.0.starts_with("Debian")),
        "a dash is a word break"
    );
    assert_eq!(all("q=creme"), ["Café crème recipes"], "accents fold");
    assert_eq!(all("kind=audio"), expect(|e| e.1 == "audio"), "by kind");
    assert_eq!(all("tag=animation"), expect(|e| e.2.contains(&"animation")), "by tag");
    assert_eq!(
        all("tag=animation&tag=scifi"),
        ["Elephants Dream"],
        "tags combine with AND"
    );
    assert_eq!(
        all("kind=video&tag=fantasy"),
        expect(|e| e.1 == "video" && e.2.contains(&"fantasy")),
        "kind and tag"
    );
    assert_eq!(
        all("kind=video&owner=bob"),
        expect(|e| e.1 == "video" && e.3 == 1),
        "kind and owner"
    );
    assert_eq!(all("q=fantasy&kind=document"), ["Fantasy novel draft"], "text and kind");
    let page1 = search(&s, carol, "tag=animation&per_page=2&page=1");
    let page2 = search(&s, carol, "tag=animation&per_page=2&page=2");
    assert_eq!(page1.total, 5);
    assert_eq!(
        [titles(&page1), titles(&page2)].concat(),
        expect(|e| e.2.contains(&"animation"))[..4].to_vec(),
        "pages follow on"
    );
    let everything = search(&s, carol, "per_page=50");
    assert_eq!(everything.total, 20);
    assert!(
        everything
            .hits
            .iter()
            .all(|h| h.available && h.availability == 3 && h.relevance == 1.0)
    );

    // Stop every holder of Sintel: it cannot be downloaded now, so it sinks, marked.
    let sintel = &ids[1];
    let status: trove_common::api::FileStatus = api(
        &s,
        "GET",
        &format!("/api/v1/files/{sintel}/status"),
        Some(&carol.token),
        None,
    );
    let holders: BTreeSet<String> = status.chunks.iter().flat_map(|c| c.online.clone()).collect();
    assert_eq!(holders.len(), 3, "a one-chunk file on three appliances");
    for node in s.nodes.iter_mut() {
        if holders.contains(&node.node_id().to_string()) {
            node.kill();
        }
    }
    let r = wait_for(AVAILABILITY_DEADLINE, "Sintel to show as unavailable", || {
        let r = search(&s, carol, "tag=animation&per_page=50");
        r.hits.iter().any(|h| h.title == "Sintel" && !h.available).then_some(r)
    });
    assert_eq!(r.hits.len(), 5);
    let unavailable: Vec<&str> = r
        .hits
        .iter()
        .filter(|h| !h.available)
        .map(|h| h.title.as_str())
        .collect();
    assert!(unavailable.contains(&"Sintel"));
    let first_unavailable = r.hits.iter().position(|h| !h.available).expect("one is unavailable");
    assert!(
        r.hits[first_unavailable..]
            .iter()
            .all(|h| !h.available && h.availability == 0),
        "unavailable files sink below every available one: {:?}",
        r.hits
    );
    let scores: Vec<f64> = r.hits[..first_unavailable].iter().map(|h| h.score).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "available ones by score: {:?}",
        r.hits
    );
    for h in &r.hits {
        let expected = (0.5 + 0.5 * f64::from(h.availability.min(3)) / 3.0) * h.relevance;
        assert!((h.score - expected).abs() < 1e-9, "score formula for {h:?}");
    }
}

#[test]
fn search_ranks_by_relevance_and_availability_embedded_sqlite() {
    search_ranks_by_relevance_and_availability(StackKind::EmbeddedSqlite);
}

#[test]
fn search_ranks_by_relevance_and_availability_mosquitto_postgres() {
    search_ranks_by_relevance_and_availability(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------

fn same_bytes_private_files_and_download_counts(kind: StackKind) {
    let s = start(kind, 3);
    let dir = tempdir();
    let (alice, bob, carol) = (signup(&s, "alice"), signup(&s, "bob"), signup(&s, "carol"));

    // The same bytes from two people: one file, two sharers, found by either title.
    let path = dir.path().join("rome.mp4");
    random_file(&path, 200 << 10, 1);
    let rome = |title| Share {
        title,
        kind: "video",
        tags: &["travel"],
        private: false,
    };
    let a = share_path(&s, &alice, &path, &rome("Holiday in Rome"));
    let b = share_path(&s, &bob, &path, &rome("Roma trip"));
    assert_eq!(a, b, "one FileId");
    for q in ["q=rome", "q=roma", "tag=travel"] {
        let r = search(&s, &carol, q);
        assert_eq!(r.hits.len(), 1, "{q}: {r:?}");
        assert_eq!(r.hits[0].file_id, a);
        let owners: BTreeSet<&str> = r.hits[0].owners.iter().map(String::as_str).collect();
        assert_eq!(owners, BTreeSet::from(["alice", "bob"]), "{q}");
    }
    let view: FileView = api(&s, "GET", &format!("/api/v1/files/{a}"), Some(&carol.token), None);
    let titles: BTreeSet<&str> = view.shares.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(titles, BTreeSet::from(["Holiday in Rome", "Roma trip"]));

    // A private file: invisible to everyone but its sharer.
    let secret = share(
        &s,
        &carol,
        dir.path(),
        7,
        &Share {
            title: "Tax return",
            kind: "document",
            tags: &["finance"],
            private: true,
        },
    );
    for q in ["q=tax", "tag=finance", "owner=carol", "kind=document"] {
        assert!(search(&s, &bob, q).hits.is_empty(), "{q} finds another's private file");
        assert_eq!(search(&s, &carol, q).hits.len(), 1, "{q}: the sharer finds it");
    }
    let url = |p: &str| format!("{}{p}", s.controller.url());
    for (method, path, body) in [
        ("GET", format!("/api/v1/files/{secret}"), None),
        ("GET", format!("/api/v1/files/{secret}/status"), None),
        (
            "POST",
            format!("/api/v1/files/{secret}/events"),
            Some(r#"{"kind":"download"}"#),
        ),
        ("DELETE", format!("/api/v1/files/{secret}"), None),
    ] {
        let answer = http(method, &url(&path), Some(&bob.token), body);
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
    }
    let out = trove_as(
        &s,
        &bob,
        &[&"get", &secret, &"-o", &dir.path().join("stolen"), &"--no-progress"],
    );
    assert!(!out.status.success(), "bob downloaded carol's private file");
    assert!(!dir.path().join("stolen").exists());
    let mine = dir.path().join("mine");
    trove_ok(&s, &carol, &[&"get", &secret, &"-o", &mine, &"--no-progress"]);
    assert_eq!(b3sum(&mine), secret);

    // Downloads: bob twice, carol once: two people.
    for (who, n) in [(&bob, 2), (&carol, 1)] {
        for i in 0..n {
            let out = dir.path().join(format!("rome-{}-{i}", who.name));
            trove_ok(&s, who, &[&"get", &a, &"-o", &out, &"--no-progress"]);
            assert_eq!(b3sum(&out), a);
        }
    }
    let me: MeView = api(&s, "GET", "/api/v1/me", Some(&alice.token), None);
    assert_eq!(me.shares.len(), 1);
    assert_eq!(me.shares[0].downloaders, 2, "{me:?}");
    assert_eq!(me.shared_bytes, 200 << 10);
    let me_json = trove_ok(&s, &alice, &[&"me", &"--json"]);
    let cli_me: MeView = serde_json::from_str(me_json.lines().rev().find(|l| l.starts_with('{')).expect("JSON"))
        .expect("trove me --json");
    assert_eq!(cli_me.shares[0].downloaders, 2);
    let bob_me: MeView = api(&s, "GET", "/api/v1/me", Some(&bob.token), None);
    assert_eq!(
        bob_me
            .history
            .iter()
            .filter(|e| e.kind == "download" && e.file_id == a)
            .count(),
        2,
        "bob's history has both downloads"
    );
}

#[test]
fn same_bytes_private_files_and_download_counts_embedded_sqlite() {
    same_bytes_private_files_and_download_counts(StackKind::EmbeddedSqlite);
}

#[test]
fn same_bytes_private_files_and_download_counts_mosquitto_postgres() {
    same_bytes_private_files_and_download_counts(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------

fn recommendations_follow_co_downloads(kind: StackKind) {
    let s = start(kind, 3);
    let dir = tempdir();
    let [dave, bob, carol, erin] = ["dave", "bob", "carol", "erin"].map(|n| signup(&s, n));
    let file = |who: &User, seed, title, kind, tags, private| {
        share(
            &s,
            who,
            dir.path(),
            seed,
            &Share {
                title,
                kind,
                tags,
                private,
            },
        )
    };
    let a = file(&erin, 1, "Alien", "video", &["scifi"][..], false);
    let b = file(&erin, 2, "Blade Runner", "video", &["scifi"][..], false);
    let c = file(&erin, 3, "Casablanca", "video", &["classic"][..], false);
    let d = file(&erin, 4, "Dune", "document", &["scifi"][..], false);
    let mine = file(&dave, 5, "Dave's own", "video", &["scifi"][..], false);
    let private = file(&bob, 6, "Bob's diary", "document", &[][..], true);
    let event = |who: &User, f: &str| {
        let _: serde_json::Value = {
            let r = http(
                "POST",
                &format!("{}/api/v1/files/{f}/events", s.controller.url()),
                Some(&who.token),
                Some(r#"{"kind":"download"}"#),
            );
            assert_eq!(r.status, 204, "{}", r.body);
            serde_json::Value::Null
        };
    };
    // Dave got Alien. Bob and carol got Alien and Blade Runner; bob also Casablanca, his
    // private diary and Dave's own file. Erin got Dune only.
    event(&dave, &a);
    for f in [&a, &b, &c, &private, &mine] {
        event(&bob, f);
    }
    for f in [&a, &b] {
        event(&carol, f);
    }
    event(&erin, &d);

    let recs: Vec<Recommendation> = api(&s, "GET", "/api/v1/recommendations", Some(&dave.token), None);
    let ids: Vec<&str> = recs.iter().map(|r| r.hit.file_id.as_str()).collect();
    assert_eq!(
        ids.first(),
        Some(&b.as_str()),
        "two people got Blade Runner with Alien: {recs:#?}"
    );
    assert_eq!(recs[0].reason, "people who got \"Alien\" also got this");
    assert_eq!(ids.get(1), Some(&c.as_str()), "then Casablanca (one person)");
    for (f, what) in [
        (&a, "already got"),
        (&mine, "his own"),
        (&private, "someone's private file"),
    ] {
        assert!(!ids.contains(&f.as_str()), "{what} recommended: {recs:#?}");
    }
    let cli = trove_ok(&s, &dave, &[&"recommend"]);
    assert!(cli.contains("Blade Runner") && cli.contains("people who got"), "{cli}");

    // No history: what most people got.
    let newbie = signup(&s, "newbie");
    let recs: Vec<Recommendation> = api(&s, "GET", "/api/v1/recommendations", Some(&newbie.token), None);
    assert_eq!(
        recs.first().map(|r| r.hit.file_id.as_str()),
        Some(a.as_str()),
        "Alien: 3 people"
    );
    assert!(recs.iter().all(|r| r.hit.file_id != private));
}

#[test]
fn recommendations_follow_co_downloads_embedded_sqlite() {
    recommendations_follow_co_downloads(StackKind::EmbeddedSqlite);
}

#[test]
fn recommendations_follow_co_downloads_mosquitto_postgres() {
    recommendations_follow_co_downloads(StackKind::MosquittoPostgres);
}

// ---------------------------------------------------------------------------------------------

/// Everything people can see, to compare before and after an attack.
fn fingerprint(s: &Stack, users: &[&User]) -> String {
    let mut out = String::new();
    for u in users {
        let me = http(
            "GET",
            &format!("{}/api/v1/me", s.controller.url()),
            Some(&u.token),
            None,
        );
        let all = http(
            "GET",
            &format!("{}/api/v1/search?per_page=200", s.controller.url()),
            Some(&u.token),
            None,
        );
        out += &format!("{}\n{}\n{}\n", u.name, me.body, all.body);
    }
    out
}

fn bad_input_is_refused_and_changes_nothing(kind: StackKind) {
    let s = start(kind, 3);
    let dir = tempdir();
    let (alice, bob) = (signup(&s, "alice"), signup(&s, "bob"));
    share(
        &s,
        &alice,
        dir.path(),
        1,
        &Share {
            title: "Debian 12 netinst",
            kind: "software",
            tags: &["linux"],
            private: false,
        },
    );
    share(
        &s,
        &bob,
        dir.path(),
        2,
        &Share {
            title: "Secret plans",
            kind: "document",
            tags: &[],
            private: true,
        },
    );
    let url = |p: &str| format!("{}{p}", s.controller.url());
    // Availability settles in the background; compare only once it has.
    wait_until(AVAILABILITY_DEADLINE, "both files available on 3 appliances", || {
        let r = search(&s, &bob, "");
        r.total == 2 && r.hits.iter().all(|h| h.availability == 3)
    });
    let before = fingerprint(&s, &[&alice, &bob]);

    // Sign-up: bad names, a short password, a taken name.
    for body in [
        r#"{"name":"","password":"long enough pw"}"#,
        r#"{"name":"a b","password":"long enough pw"}"#,
        r#"{"name":"../etc","password":"long enough pw"}"#,
        r#"{"name":"robert'); DROP TABLE users;--","password":"long enough pw"}"#,
        r#"{"name":"short","password":"pw"}"#,
        r#"{"name":"x","password":1}"#,
        "not json",
    ] {
        let r = http("POST", &url("/api/v1/signup"), None, Some(body));
        assert!((400..500).contains(&r.status), "{body}: {} {}", r.status, r.body);
    }
    let taken = http(
        "POST",
        &url("/api/v1/signup"),
        None,
        Some(&format!(r#"{{"name":"alice","password":"{PASSWORD}"}}"#)),
    );
    assert_eq!(taken.status, 409, "{}", taken.body);

    // Searches people type: answers, never a 500, never another's private file.
    let garbage: String = (0..1024).map(|i| char::from(b' ' + (i * 7 % 95) as u8)).collect();
    for q in [
        "\"",
        "debian-12",
        "*",
        "NOT",
        "OR",
        "AND",
        "NEAR(",
        "-",
        "'",
        "\\",
        "%",
        "_",
        "😀",
        "ünïcödé",
        "'; DROP TABLE shares; --",
        "\" OR 1=1 --",
        "secret",
        "plans",
        garbage.as_str(),
    ] {
        let r = http(
            "GET",
            &url(&format!("/api/v1/search?q={}", enc(q))),
            Some(&alice.token),
            None,
        );
        assert_eq!(r.status, 200, "search {q:?}: {}", r.body);
        let found: SearchResults = r.json();
        assert!(
            found.hits.iter().all(|h| h.title != "Secret plans"),
            "{q:?} found bob's private file"
        );
    }
    let debian: SearchResults = search(&s, &alice, &format!("q={}", enc("debian-12")));
    assert_eq!(titles(&debian), ["Debian 12 netinst"]);
    for q in ["kind=movie", "min_size=-1", "page=x", "since=yesterday"] {
        let r = http("GET", &url(&format!("/api/v1/search?{q}")), Some(&alice.token), None);
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        let e: ApiErrorBody = r.json();
        assert_eq!(e.error, "bad_request");
    }

    // Tokens: a revoked one stops working at once; one never issued never did.
    let t: NewToken = api(
        &s,
        "POST",
        "/api/v1/tokens",
        Some(&alice.token),
        Some(r#"{"label":"laptop"}"#),
    );
    assert_eq!(http("GET", &url("/api/v1/me"), Some(&t.token), None).status, 200);
    assert_eq!(
        http(
            "DELETE",
            &url(&format!("/api/v1/tokens/{}", t.id)),
            Some(&alice.token),
            None
        )
        .status,
        204
    );
    assert_eq!(
        http("GET", &url("/api/v1/me"), Some(&t.token), None).status,
        401,
        "revoked token"
    );
    assert_eq!(
        http("GET", &url("/api/v1/me"), Some("trove_not_a_token"), None).status,
        401
    );
    assert_eq!(
        http("DELETE", &url("/api/v1/tokens/abcdef012345"), Some(&bob.token), None).status,
        404
    );

    // A disabled user's tokens stop working; only an admin may disable.
    assert_eq!(
        http("POST", &url("/api/v1/users/alice/disable"), Some(&bob.token), None).status,
        403
    );
    let eve = signup(&s, "eve");
    let admin = s.controller.admin_token();
    assert_eq!(
        http("POST", &url("/api/v1/users/eve/disable"), Some(&admin), None).status,
        200
    );
    assert_eq!(
        http("GET", &url("/api/v1/me"), Some(&eve.token), None).status,
        401,
        "disabled"
    );
    let login = |name: &str, pw: &str| {
        http(
            "POST",
            &url("/api/v1/login"),
            None,
            Some(&format!(r#"{{"name":"{name}","password":"{pw}"}}"#)),
        )
    };
    assert_eq!(login("eve", PASSWORD).status, 401, "a disabled user cannot log in");

    // Passwords: the right one works, a wrong one is refused, many in a row are rate limited
    // (even the right one, until the window has passed).
    let ok = login("alice", PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let wrong = login("alice", "wrong password");
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json::<ApiErrorBody>().error, "unauthorized");
    let statuses: Vec<u16> = (0..6).map(|_| login("alice", "wrong password").status).collect();
    assert!(
        statuses.contains(&429),
        "no rate limit after many failures: {statuses:?}"
    );
    assert_eq!(login("alice", PASSWORD).status, 429, "locked out for now");

    assert_eq!(
        fingerprint(&s, &[&alice, &bob]),
        before,
        "bad input changed what people see"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing_embedded_sqlite() {
    bad_input_is_refused_and_changes_nothing(StackKind::EmbeddedSqlite);
}

#[test]
fn bad_input_is_refused_and_changes_nothing_mosquitto_postgres() {
    bad_input_is_refused_and_changes_nothing(StackKind::MosquittoPostgres);
}
