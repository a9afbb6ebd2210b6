//! The embedded MQTT broker (rumqttd), so one command runs a whole Trove.
//!
//! Clients authenticate with a username and password: the controller with its own, each
//! appliance with its node ID and enrollment secret (looked up in the database, so tokens
//! made by another process work too). rumqttd has no topic ACLs, which is why every node
//! message also carries a MAC (see `trove_common::control`).

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use trove_common::NodeId;
use trove_common::control::{NodeSecret, PAYLOAD_BYTES_MAX};

use crate::db::Db;

pub const CONTROLLER_USERNAME: &str = "trove-controller";

pub fn start(
    listen: SocketAddr,
    db: Db,
    controller_password: String,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    // rumqttd reports a busy port only in its logs and carries on: check it ourselves.
    std::net::TcpListener::bind(listen).with_context(|| format!("MQTT port {listen} is not free"))?;
    let mut settings = rumqttd::ServerSettings {
        name: "trove".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: PAYLOAD_BYTES_MAX + 4096,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    settings.set_auth_handler(move |_client_id: String, username: String, password: String| {
        let db = db.clone();
        let controller_password = controller_password.clone();
        let runtime = runtime.clone();
        async move {
            if username == CONTROLLER_USERNAME {
                return password == controller_password;
            }
            let Ok(node) = username.parse::<NodeId>() else {
                tracing::warn!(%username, "MQTT login refused: unknown user");
                return false;
            };
            // rumqttd runs its own runtimes; the pool belongs to ours.
            let secret = runtime.spawn(async move { db.node_secret(&node).await }).await;
            match secret {
                Ok(Ok(Some(secret))) if NodeSecret(secret).password() == password => true,
                _ => {
                    tracing::warn!(%username, "MQTT login refused: bad node credentials");
                    false
                }
            }
        }
    });
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 64 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), settings)])),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("starting the broker thread")?;
    Ok(())
}
