//! An external Mosquitto that lets in only whom the controller says (`--mosquitto-auth`):
//! the controller keeps Mosquitto's password and ACL files, each appliance logs in with its
//! own credentials and may publish only under its own topics and read only its own
//! commands. Real Mosquitto (reloaded with SIGHUP, as the systemd path unit does), real
//! PostgreSQL, real appliances, all on 127.0.0.1.
//!
//! Build the binaries first: `cargo build --workspace --bins`. Needs `mosquitto` and
//! `postgresql` installed; fails rather than skips without them.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use trove_common::control::{JoinToken, node_topic};
use trove_tests::*;

const ONLINE_DEADLINE: Duration = Duration::from_secs(60);
const MQTT_DEADLINE: Duration = Duration::from_secs(20);
const CONTROLLER_USER: &str = "trove-controller";
const CONTROLLER_PASSWORD: &str = "controller password for this test";

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// An MQTT client logged in as `user`: `Err` with the reason when the broker refuses.
async fn login(port: u16, id: &str, user: Option<(&str, &str)>) -> Result<(AsyncClient, EventLoop), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    mqtt_connect(addr, MQTT_DEADLINE, id, user.map(|(u, p)| (u.to_owned(), p.to_owned()))).await
}

/// Subscribes to `topics` and waits for the SUBACK.
async fn subscribe(client: &AsyncClient, events: &mut EventLoop, topics: &[String]) {
    for t in topics {
        client
            .subscribe(t.clone(), QoS::AtLeastOnce)
            .await
            .expect("subscribing");
    }
    let mut acked = 0;
    tokio::time::timeout(MQTT_DEADLINE, async {
        while acked < topics.len() {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("MQTT connection") {
                acked += 1;
            }
        }
    })
    .await
    .expect("SUBACK");
}

/// For a failure message: topics and payload sizes.
fn shown(seen: &[(String, Vec<u8>)]) -> Vec<String> {
    seen.iter().map(|(t, p)| format!("{t} ({} bytes)", p.len())).collect()
}

/// The (topic, payload) of the publishes `events` delivers (retained ones too) until one on
/// `last` arrives.
async fn received_until(events: &mut EventLoop, last: &str) -> Vec<(String, Vec<u8>)> {
    let mut seen = Vec::new();
    tokio::time::timeout(MQTT_DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("MQTT connection") {
                let done = p.topic == last;
                seen.push((p.topic, p.payload.to_vec()));
                if done {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no message on {last}; got {:?}", shown(&seen)));
    seen
}

#[test]
fn appliances_log_in_with_their_own_credentials_and_reach_only_their_own_topics() {
    let auth = tempfile::Builder::new()
        .prefix("trove-mosquitto-auth-")
        .tempdir()
        .unwrap();
    let mosquitto = Mosquitto::start_with_auth(auth.path());
    let postgres = Postgres::start();
    let controller = Controller::builder()
        .mqtt_url(&mosquitto.url())
        .database_url(&postgres.url())
        .arg("--mqtt-username")
        .arg(CONTROLLER_USER)
        .arg("--mqtt-password")
        .arg(CONTROLLER_PASSWORD)
        .arg("--mosquitto-auth")
        .arg(auth.path().to_str().unwrap())
        .start();
    // The controller wrote its files before it answered; Mosquitto reads them on SIGHUP.
    let passwd = auth.path().join("trove.passwd");
    assert_eq!(lines(&passwd), 1, "only the controller's user yet");
    mosquitto.reload();

    // Three appliances: the file gains their lines within a few seconds of the enrollments.
    let tokens: Vec<String> = (0..3).map(|_| controller.enroll()).collect();
    wait_until(
        Duration::from_secs(20),
        "the password file to name 3 appliances",
        || lines(&passwd) == 4,
    );
    mosquitto.reload();
    let nodes: Vec<Node> = tokens.iter().map(|t| Node::joining(t).start()).collect();
    let s = Stack {
        kind: StackKind::MosquittoPostgres,
        nodes,
        controller,
        mosquitto: Some(mosquitto),
        postgres: Some(postgres),
    };
    s.wait_online(3, ONLINE_DEADLINE);

    // The fleet works through it: a share is placed on the three and comes back exact.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("through-mosquitto.bin");
    random_file(&src, 3 * 1024 * 1024 + 77, 91);
    let id = s.share_as(&s.controller.admin_token(), dir.path(), &src, &[]);
    let out = dir.path().join("back.bin");
    let got = s
        .controller
        .trove_command([
            OsStr::new("get"),
            OsStr::new(&id),
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new("--no-progress"),
        ])
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "trove get: {}\n{}",
        String::from_utf8_lossy(&got.stderr),
        s.logs()
    );
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap(),
        "the bytes differ"
    );

    let port = s.mosquitto.as_ref().unwrap().port();
    let a = JoinToken::decode(&tokens[0]).unwrap();
    let b = JoinToken::decode(&tokens[1]).unwrap();
    let (a_user, a_password) = (a.node_id.to_string(), a.secret.password());
    block_on(async {
        // Nobody gets in without credentials, or with another's password.
        let refused = |r: Result<_, String>| r.err().is_some_and(|e| e.starts_with("refused"));
        assert!(
            refused(login(port, "test-anonymous", None).await),
            "an anonymous client got in"
        );
        let b_password = b.secret.password();
        let wrong = login(port, "test-wrong", Some((&a_user, &b_password))).await;
        assert!(refused(wrong), "node A got in with node B's password");

        // The controller's user sees everything under trove/v1/.
        let (watcher, mut watched) = login(port, "test-watcher", Some((CONTROLLER_USER, CONTROLLER_PASSWORD)))
            .await
            .expect("the controller's credentials");
        subscribe(&watcher, &mut watched, &["trove/v1/#".to_owned()]).await;

        // Node A's credentials (a second session beside the real troved A).
        let (a_client, mut a_events) = login(port, "test-as-node-a", Some((&a_user, &a_password)))
            .await
            .expect("node A's own credentials");

        // Publishing: what A sends as B is dropped by the broker; its own topic goes through.
        // Same client, QoS 1, in order: once the second arrives, the first would have too.
        let forged = node_topic(&b.node_id, "info");
        let own = node_topic(&a.node_id, "events");
        publish_all(
            &a_client,
            &mut a_events,
            &[(forged.clone(), b"forged".to_vec()), (own.clone(), b"own".to_vec())],
            false,
            MQTT_DEADLINE,
        )
        .await;
        let seen = received_until(&mut watched, &own).await;
        assert!(
            !seen.iter().any(|(t, p)| *t == forged && p == b"forged"),
            "node A published as node B: {:?}",
            shown(&seen)
        );

        // Reading: A may read its own commands, not B's.
        let (a_cmd, b_cmd) = (node_topic(&a.node_id, "cmd"), node_topic(&b.node_id, "cmd"));
        subscribe(&a_client, &mut a_events, &[b_cmd.clone(), a_cmd.clone()]).await;
        publish_all(
            &watcher,
            &mut watched,
            &[(b_cmd.clone(), b"for B".to_vec()), (a_cmd.clone(), b"for A".to_vec())],
            false,
            MQTT_DEADLINE,
        )
        .await;
        let seen = received_until(&mut a_events, &a_cmd).await;
        assert!(
            !seen.iter().any(|(t, _)| *t == b_cmd),
            "node A read node B's commands: {:?}",
            shown(&seen)
        );
    });
    // The controller and the appliances ignored what the test sent (bad MACs) and carried on.
    s.wait_online(3, ONLINE_DEADLINE);
}
