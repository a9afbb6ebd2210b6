//! The fleet view's live picture and the admin pages, end to end: a real controller, real
//! `troved` appliances reporting their transfers over MQTT, the real `trove` CLI moving bytes,
//! and the dashboard's pages over HTTP with cookies and forms, as a browser without scripts.
//!
//! Build the binaries first: `cargo build --workspace --bins`. Every wait polls with a
//! deadline; no test asserts on timing.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};
use trove_common::api::{EdgeKind, FleetLive, LiveEdge, LoginResponse, NodeView};
use trove_common::control::{self, JoinToken, Link, NodeSecret, PeerTraffic, Transfers};
use trove_tests::*;

/// Appliances joining and announcing themselves online.
const ONLINE_DEADLINE: Duration = Duration::from_secs(45);
/// Copies made until every chunk is on three appliances.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(120);
/// The Last Will (or its absence) reaching the fleet view.
const OFFLINE_DEADLINE: Duration = Duration::from_secs(30);
/// A download throttled to take several seconds, with room for a slow machine.
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(120);
/// Transfer reports stopping and expiring after the bytes stop.
const QUIET_DEADLINE: Duration = Duration::from_secs(20);
/// The controller processing (and logging) MQTT messages.
const INGEST_DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

fn stack(n: usize) -> Stack {
    let s = Stack::start(StackKind::EmbeddedSqlite, Controller::builder(), n);
    s.wait_online(n, ONLINE_DEADLINE);
    s
}

fn live(c: &Controller) -> FleetLive {
    c.get("/fleet/live")
}

/// Shares 24 MiB of random bytes (from `seed`) as `name` from `dir`, waits for three copies
/// of every chunk and then for their transfers to leave the picture. Returns the file ID.
fn share_24_mib_quietly(c: &Controller, dir: &std::path::Path, name: &str, seed: u64) -> String {
    let src = dir.join(name);
    random_file(&src, 24 * MIB, seed);
    c.trove_ok([
        "share".as_ref(),
        src.as_os_str(),
        "--name".as_ref(),
        name.as_ref(),
        "--no-progress".as_ref(),
    ]);
    let id = b3sum(&src);
    wait_until(REPLICATION_DEADLINE, "three copies of every chunk", || {
        c.file_status(&id).chunks_at_target == 24
    });
    wait_quiet(c);
    id
}

/// Every distinct (from, to, kind) edge of the live picture while `p` runs, polled, and
/// how `p` ended.
fn edges_while(c: &Controller, p: &mut Spawned, what: &str) -> (std::process::ExitStatus, Vec<LiveEdge>) {
    let mut seen: Vec<LiveEdge> = Vec::new();
    let deadline = Deadline::after(DOWNLOAD_DEADLINE);
    loop {
        for e in live(c).edges {
            if !seen
                .iter()
                .any(|s| (&s.from, &s.to, s.kind) == (&e.from, &e.to, e.kind))
            {
                seen.push(e);
            }
        }
        if let Some(status) = p.try_wait() {
            return (status, seen);
        }
        deadline.check(&format!("{what} to finish"));
        std::thread::sleep(POLL);
    }
}

/// Waits until the copies' own transfers have left the picture, so the edges a test sees
/// next are those of what it does (a copy whose dialer went uncounted reads like a client).
/// Reports come once a second and the last copies' bytes may still be on their way when
/// the copies are done, so the picture must stay empty for longer than a report interval.
fn wait_quiet(c: &Controller) {
    let mut empty_since: Option<std::time::Instant> = None;
    wait_until(QUIET_DEADLINE, "the live picture to stay empty for 2.5 s", || {
        if !live(c).edges.is_empty() {
            empty_since = None;
            return false;
        }
        empty_since.get_or_insert_with(std::time::Instant::now).elapsed() >= Duration::from_millis(2500)
    });
}

/// A browser (cookies, forms) logged in with `token` as its session.
fn browser(c: &Controller, token: &str) -> WebClient {
    let mut b = WebClient::new(c.url());
    b.cookies.insert("trove_session".into(), token.to_owned());
    b
}

// ---------------------------------------------------------------------------------------------
// Transfers and state

#[test]
fn a_download_shows_as_client_download_edges_and_a_killed_appliance_as_offline() {
    // Pins: appliances report the bytes they serve (node/<id>/transfers), the controller
    // turns them into edges from each appliance to the client while `trove get` runs, and
    // drops them once it is over; a SIGKILLed appliance reads `offline` in the live feed and
    // on the server-rendered page.
    let mut s = stack(3);
    let c = &s.controller;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = share_24_mib_quietly(c, dir.path(), "film.bin", 51);
    let ids: Vec<String> = s.nodes.iter().map(|n| n.node_id().to_string()).collect();
    let out = dir.path().join("film.out");
    // About 8 s at this rate: many one-second reports while it runs.
    let mut get = Spawned::spawn(c.trove_command([
        "get".as_ref(),
        id.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        "--limit-rate".as_ref(),
        "3MiB".as_ref(),
        "--no-progress".as_ref(),
    ]));
    let (status, edges) = edges_while(c, &mut get, "trove get");
    let seen: Vec<_> = edges
        .into_iter()
        .filter(|e| e.kind == EdgeKind::ClientDownload)
        .collect();
    assert!(status.success(), "trove get failed: {}\n{}", get.stderr(), s.logs());
    assert_eq!(b3sum(&out), id, "trove get returns the exact bytes");
    assert!(
        !seen.is_empty(),
        "no client-download edge was seen while trove get ran\n{}",
        s.logs()
    );
    for e in &seen {
        assert!(ids.contains(&e.from), "a download edge comes from an appliance: {e:?}");
        assert_eq!(e.to, "client 127.0.0.1", "the client is named by its address: {e:?}");
        assert!(e.bytes_per_s > 0, "a download edge moves bytes: {e:?}");
    }
    wait_until(QUIET_DEADLINE, "the download edges to go once it is over", || {
        live(c).edges.iter().all(|e| e.kind != EdgeKind::ClientDownload)
    });

    // Killed without a word: the broker publishes its Last Will.
    let victim = s.nodes[1].node_id().to_string();
    s.nodes[1].kill();
    let c = &s.controller;
    wait_until(OFFLINE_DEADLINE, "the killed appliance to read offline", || {
        live(c).nodes.iter().any(|n| n.id == victim && n.state == "offline")
    });
    let after = live(c);
    for n in &after.nodes {
        let want = if n.id == victim { "offline" } else { "online" };
        assert_eq!(n.state, want, "{n:?}");
        assert!(n.since <= after.now_s, "{n:?}");
    }
    let page = browser(c, &c.admin_token()).get("/fleet");
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let row = html
        .split("<tr class=\"node\"")
        .find(|r| r.contains(&format!("data-node-id=\"{victim}\"")))
        .unwrap_or_else(|| panic!("no row for the killed appliance: {html}"));
    assert!(
        row.contains("<td class=\"state offline\">offline</td>") && row.contains("offline for "),
        "the page shows it offline: {row}"
    );
    drop(s);
}

#[test]
fn a_gateway_stream_is_drawn_as_the_gateway_fetching_not_as_a_client_download() {
    // Pins: the appliances report the gateway's connections as accepted ones like any
    // other; the live feed draws those bytes once, as gateway edges (appliance to
    // controller), and not also as downloads by a client on the controller's address.
    let s = stack(3);
    let c = &s.controller;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = share_24_mib_quietly(c, dir.path(), "talk.mp4", 52);

    // A player reading slowly: the gateway fetches a few chunks ahead of it all along.
    let out = dir.path().join("talk.out");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-S", "-f", "--limit-rate", "3M", "-o"])
        .arg(&out)
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", c.admin_token()))
        .arg(format!("{}/api/v1/files/{id}/content", c.url()));
    let mut curl = Spawned::spawn(cmd);
    let (status, seen) = edges_while(c, &mut curl, "curl");
    assert!(status.success(), "curl failed: {}\n{}", curl.stderr(), s.logs());
    assert_eq!(b3sum(&out), id, "the gateway returns the exact bytes");
    assert!(
        seen.iter().any(|e| e.kind == EdgeKind::Gateway && e.to == "controller"),
        "no gateway edge was seen while the stream ran: {seen:?}"
    );
    assert!(
        seen.iter().all(|e| e.kind != EdgeKind::ClientDownload),
        "the gateway's fetches were drawn again as client downloads: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Forged reports

async fn mqtt_publish(broker: SocketAddr, login: (String, String), msgs: &[(String, Vec<u8>)]) {
    let mut opts = MqttOptions::new("intruder-live", broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_credentials(login.0, login.1);
    let (client, mut events) = AsyncClient::new(opts, 64);
    tokio::time::timeout(INGEST_DEADLINE, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(ack.code, ConnectReturnCode::Success, "broker login");
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("connecting to the broker: {e}"),
            }
        }
    })
    .await
    .expect("the broker answers");
    publish_all(&client, &mut events, msgs, false, INGEST_DEADLINE).await;
}

fn report(client: &str) -> Transfers {
    Transfers {
        boot_id: 1,
        interval_ms: 1000,
        peers: vec![PeerTraffic {
            peer: format!("{client}:4000"),
            link: Link::Accepted,
            sent_bytes: 1 << 20,
            received_bytes: 0,
        }],
    }
}

fn edges_to(c: &Controller, client: &str) -> Vec<trove_common::api::LiveEdge> {
    live(c)
        .edges
        .into_iter()
        .filter(|e| e.to == format!("client {client}"))
        .collect()
}

#[test]
fn forged_transfer_reports_are_ignored() {
    // Pins: a transfers report counts only under its own node's topic with that node's MAC,
    // even from a client the broker let in with a node's stolen credentials.
    let s = stack(2);
    let c = &s.controller;
    let (a, b) = (&s.nodes[0], &s.nodes[1]);
    let token = JoinToken::decode(a.join_token().expect("joined")).expect("a valid join token");
    let topic_a = control::node_topic(&a.node_id(), "transfers");
    let topic_b = control::node_topic(&b.node_id(), "transfers");
    let forger = NodeSecret([0x5a; 32]);
    let forged = vec![
        // A's topic, a MAC from a key that is not A's.
        (topic_a.clone(), forger.seal(&topic_a, &report("10.99.0.1"))),
        // B's topic, sealed with A's key (for B's topic): B's key does not open it.
        (topic_b.clone(), token.secret.seal(&topic_b, &report("10.99.0.2"))),
        // A's own report, moved to B's topic.
        (topic_b.clone(), token.secret.seal(&topic_a, &report("10.99.0.3"))),
        // Cut short.
        (topic_a.clone(), b"short".to_vec()),
    ];
    let broker = c.mqtt_addr().expect("the embedded broker writes DATA/mqtt.addr");
    let login = (a.node_id().to_string(), token.secret.password());
    let ignored = |c: &Controller| {
        c.log()
            .lines()
            .filter(|l| l.contains("ignored MQTT message") && l.contains("/transfers"))
            .count()
    };
    let before = ignored(c);
    block_on(mqtt_publish(broker, login.clone(), &forged));
    wait_until(INGEST_DEADLINE, "the controller to ignore the forged reports", || {
        ignored(c) >= before + forged.len()
    });
    assert!(c.log().contains("MAC does not verify"), "{}", tail(&c.log(), 30));
    for client in ["10.99.0.1", "10.99.0.2", "10.99.0.3"] {
        assert!(
            edges_to(c, client).is_empty(),
            "a forged report drew an edge to {client}"
        );
    }

    // The same path with A's own key on A's topic is drawn: what stopped the others was
    // their MAC.
    let genuine = vec![(topic_a.clone(), token.secret.seal(&topic_a, &report("10.99.0.4")))];
    block_on(mqtt_publish(broker, login, &genuine));
    let drawn = wait_for(INGEST_DEADLINE, "the genuine report's edge", || {
        let e = edges_to(c, "10.99.0.4");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(drawn[0].from, a.node_id().to_string());
    assert_eq!(
        (drawn[0].kind, drawn[0].bytes_per_s),
        (EdgeKind::ClientDownload, 1 << 20)
    );
    for client in ["10.99.0.1", "10.99.0.2", "10.99.0.3"] {
        assert!(
            edges_to(c, client).is_empty(),
            "a forged report drew an edge to {client}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Admin pages

fn signup(c: &Controller, name: &str) -> String {
    let body = format!(r#"{{"name":"{name}","password":"correct horse battery"}}"#);
    let a = c.api("POST", "/signup", None, Some(&body));
    assert_eq!(a.status, 200, "signing up {name}: {}", a.body);
    let r: LoginResponse = a.json();
    r.token
}

/// The `<tr class="user..." data-name="NAME">` row of the admin page, as written.
fn user_row(html: &str, name: &str) -> String {
    html.split("<tr class=\"user")
        .skip(1)
        .find(|r| r.contains(&format!("data-name=\"{name}\"")))
        .map(|r| r.split("</tr>").next().unwrap_or(r).to_owned())
        .unwrap_or_else(|| panic!("no row for {name} on the admin page: {html}"))
}

#[test]
fn admin_pages_are_for_admins_and_their_forms_need_the_csrf_token() {
    // Pins: /admin and its forms answer 403 to anyone but an admin; disabling a user takes
    // effect at once and only with the session's CSRF token; enabling undoes it; the enroll
    // form hands out a join token an appliance can really join with.
    let s = stack(0);
    let c = &s.controller;
    let bob = signup(c, "bob");
    let me = |token: &str| c.api("GET", "/me", Some(token), None).status;
    assert_eq!(me(&bob), 200);

    // Bob is no admin: the page and every form are refused, even with his own CSRF token.
    let mut as_bob = browser(c, &bob);
    let fleet = as_bob.get("/fleet");
    assert_eq!(fleet.status, 200, "any user sees the fleet: {}", fleet.text());
    let csp = fleet.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
        "the fleet page runs no inline script: {csp:?}"
    );
    let bob_csrf = html_input_value(&fleet.text(), "csrf").expect("a CSRF token on bob's page");
    let refused = as_bob.get("/admin");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!refused.text().contains("id=\"users\""), "{}", refused.text());
    let a = as_bob.post_form("/admin/users/admin/disable", &[("csrf", &bob_csrf)]);
    assert_eq!(a.status, 403, "{}", a.text());
    let a = as_bob.post_form("/admin/enroll", &[("csrf", &bob_csrf), ("name", "bobs-pi")]);
    assert_eq!(a.status, 403, "{}", a.text());
    let admin_token = c.admin_token();
    assert_eq!(me(&admin_token), 200, "bob could not disable the admin");

    let mut as_admin = browser(c, &admin_token);
    let page = as_admin.get("/admin");
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let row = user_row(&html, "bob");
    assert!(
        row.contains("<td class=\"disabled\">no</td>") && row.contains("<td class=\"admin\">no</td>"),
        "{row}"
    );
    assert!(row.contains("/admin/users/bob/disable"), "{row}");
    assert!(
        user_row(&html, "admin").contains("<td class=\"admin\">yes</td>"),
        "{html}"
    );
    let csrf = html_input_value(&html, "csrf").expect("a CSRF token on the admin page");

    // Without the token, or with another session's: refused, and bob is untouched.
    let a = as_admin.post_form("/admin/users/bob/disable", &[]);
    assert_eq!(a.status, 403, "{}", a.text());
    let a = as_admin.post_form("/admin/users/bob/disable", &[("csrf", &bob_csrf)]);
    assert_eq!(a.status, 403, "{}", a.text());
    assert_eq!(me(&bob), 200, "a form without the CSRF token disabled bob");

    // With it: done, and bob's token stops working at once.
    let a = as_admin.post_form("/admin/users/bob/disable", &[("csrf", &csrf)]);
    assert_eq!((a.status, a.header("location")), (303, Some("/admin")), "{}", a.text());
    assert_eq!(me(&bob), 401, "a disabled user's token still works");
    let row = user_row(&as_admin.get("/admin").text(), "bob");
    assert!(row.contains("<td class=\"disabled\">yes</td>"), "{row}");
    assert!(row.contains("/admin/users/bob/enable"), "{row}");
    let a = as_admin.post_form("/admin/users/nobody/disable", &[("csrf", &csrf)]);
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(a.text().contains("class=\"error\""), "{}", a.text());
    let a = as_admin.post_form("/admin/users/bob/enable", &[("csrf", &csrf)]);
    assert_eq!(a.status, 303, "{}", a.text());
    assert_eq!(me(&bob), 200, "enabled again");

    // Enrolling: the token is shown once with the shell equivalent, and it works.
    let nodes_before = c.nodes().len();
    let a = as_admin.post_form("/admin/enroll", &[("name", "garage-pi"), ("board", "rpi4")]);
    assert_eq!(a.status, 403, "enrolling without the CSRF token: {}", a.text());
    let a = as_admin.post_form(
        "/admin/enroll",
        &[("csrf", &csrf), ("name", "garage-pi"), ("board", "nope")],
    );
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(c.nodes().len(), nodes_before, "refused enrollments made no node");
    let a = as_admin.post_form(
        "/admin/enroll",
        &[("csrf", &csrf), ("name", "garage-pi"), ("board", "rpi4")],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let html = a.text();
    assert!(
        html.contains("trove-controller enroll --name garage-pi --board rpi4"),
        "the shell equivalent: {html}"
    );
    let token: String = html
        .split("trove1-")
        .nth(1)
        .map(|t| {
            format!(
                "trove1-{}",
                t.chars().take_while(char::is_ascii_hexdigit).collect::<String>()
            )
        })
        .unwrap_or_else(|| panic!("no join token on the page: {html}"));
    let node = Node::joining(&token).start();
    let id = node.node_id().to_string();
    let joined: NodeView = wait_for(ONLINE_DEADLINE, "the enrolled appliance online", || {
        c.nodes().into_iter().find(|n| n.id == id && n.state == "online")
    });
    assert_eq!(joined.name.as_deref(), Some("garage-pi"));
    wait_until(ONLINE_DEADLINE, "the live feed to show it", || {
        live(c).nodes.iter().any(|n| n.id == id && n.state == "online")
    });
}
