//! The fleet's live picture (`GET /api/v1/fleet/live`, drawn by the fleet page).
//!
//! Appliances report what moved over their data-plane connections once a second
//! (`node/<id>/transfers`, see `trove_common::control::Transfers`); ingest opens each report
//! with the node's MAC and hands it to [`Live::record`]. Only the latest report per node is
//! kept, in memory, and one older than [`REPORT_TTL`] counts for nothing: a node that died
//! mid-transfer stops drawing lines within seconds. Nothing here is stored or acted on; a
//! controller restart starts with an empty picture.
//!
//! [`edges`] turns the reports into transfers between endpoints (pure, unit-tested): a peer
//! whose address is a known node's data address is that node; a connection one node dialed
//! is counted once, from the dialer's report (the other end sees the same socket as an
//! accepted connection from the dialer's `local` address, and that entry is skipped);
//! a connection from the controller's streaming gateway is skipped too, the gateway
//! drawing its own fetches; everyone else is `client <ip>`. Repair copies ordered and not yet seen through are drawn
//! too, source to target, even before bytes move.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use trove_common::NodeId;
use trove_common::api::{CONTROLLER_ENDPOINT, EdgeKind, FleetLive, LiveEdge, LiveNode, client_endpoint};
use trove_common::control::{Link, SOCKET_ADDR_TEXT_MAX, TRANSFER_PEERS_MAX, Transfers};

use crate::api::{ApiError, Caller};
use crate::app::{App, now_s};

/// How long a node's latest transfer report stands for what it is doing now. Nodes report
/// every second; this rides out one lost or late message.
pub const REPORT_TTL: Duration = Duration::from_secs(3);

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/v1/fleet/live", get(live))
}

async fn live(State(app): State<Arc<App>>, _caller: Caller) -> Result<Json<FleetLive>, ApiError> {
    Ok(Json(fleet_live(&app).await?))
}

/// Nodes, repair progress and transfers now.
pub async fn fleet_live(app: &App) -> anyhow::Result<FleetLive> {
    let views = crate::api::node_views(app).await?;
    let addrs: HashMap<SocketAddr, NodeId> = views
        .iter()
        .filter_map(|v| Some((v.data_addr.as_deref()?.parse().ok()?, v.id.parse().ok()?)))
        .collect();
    let copies: Vec<(NodeId, NodeId)> = {
        let repair = app.repair.lock().expect("repair lock");
        repair
            .in_flight
            .iter()
            .filter(|(_, o)| !o.delete)
            .filter_map(|((_, to), o)| Some((*addrs.get(&o.from_addr?)?, *to)))
            .collect()
    };
    let reports = app.live.current(Instant::now());
    Ok(FleetLive {
        now_s: now_s(),
        nodes: views.iter().map(LiveNode::from_view).collect(),
        repair: crate::api::repair_view(app),
        edges: edges(&reports, &addrs, &copies, &gateway_now()),
    })
}

/// What the controller's streaming gateway is fetching from appliances right now.
pub struct GatewayTransfer {
    pub node: NodeId,
    pub bytes_per_s: u64,
}

/// The streaming gateway as the live picture sees it.
#[derive(Default)]
pub struct GatewayNow {
    /// Its fetches: bytes per second per appliance, including bytes asked for and not yet
    /// received.
    pub fetching: Vec<GatewayTransfer>,
    /// The local addresses of its connections to appliances, which report them as accepted
    /// from there.
    pub conns: HashSet<SocketAddr>,
}

fn gateway_now() -> GatewayNow {
    GatewayNow {
        fetching: crate::gateway::active_transfers()
            .into_iter()
            .map(|(node, bytes_per_s)| GatewayTransfer { node, bytes_per_s })
            .collect(),
        conns: crate::gateway::connection_addrs(),
    }
}

/// The latest transfer report of every node that sent one recently.
#[derive(Default)]
pub struct Live {
    reports: Mutex<HashMap<NodeId, (Instant, Transfers)>>,
}

/// Why a transfer report was refused (after its MAC verified: a buggy node, not a forger).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0} peers is over the limit of {TRANSFER_PEERS_MAX}")]
    TooManyPeers(usize),
    #[error("peer address {0:?} is not ip:port")]
    BadAddress(String),
    #[error("an interval of 0 ms")]
    ZeroInterval,
}

impl Live {
    /// Keeps `t` as what `node` is doing now. A report with no peers (the node's last
    /// connection closed) clears it at once.
    pub fn record(&self, node: NodeId, t: Transfers, now: Instant) -> Result<(), ReportError> {
        check_report(&t)?;
        let mut reports = self.reports.lock().expect("live lock");
        reports.retain(|_, (at, _)| now.duration_since(*at) < REPORT_TTL);
        if t.peers.is_empty() {
            reports.remove(&node);
        } else {
            reports.insert(node, (now, t));
        }
        Ok(())
    }

    /// Reports younger than [`REPORT_TTL`].
    pub fn current(&self, now: Instant) -> Vec<(NodeId, Transfers)> {
        let reports = self.reports.lock().expect("live lock");
        reports
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) < REPORT_TTL)
            .map(|(n, (_, t))| (*n, t.clone()))
            .collect()
    }
}

fn check_report(t: &Transfers) -> Result<(), ReportError> {
    if t.peers.len() > TRANSFER_PEERS_MAX {
        return Err(ReportError::TooManyPeers(t.peers.len()));
    }
    if t.interval_ms == 0 {
        return Err(ReportError::ZeroInterval);
    }
    for p in &t.peers {
        let local = match &p.link {
            Link::Dialed { local } => Some(local),
            Link::Accepted => None,
        };
        for a in std::iter::once(&p.peer).chain(local) {
            if a.len() > SOCKET_ADDR_TEXT_MAX || a.parse::<SocketAddr>().is_err() {
                return Err(ReportError::BadAddress(a.clone()));
            }
        }
    }
    Ok(())
}

/// Transfers between endpoints, from nodes' reports (checked by [`Live::record`]), the data
/// addresses of known nodes, repair copies under way (source, target) and the gateway. One
/// edge per (from, to, kind), rates summed; sorted.
pub fn edges(
    reports: &[(NodeId, Transfers)],
    addrs: &HashMap<SocketAddr, NodeId>,
    copies: &[(NodeId, NodeId)],
    gateway: &GatewayNow,
) -> Vec<LiveEdge> {
    // Connections some node dialed, seen from the other end as accepted from these.
    let dialed: HashSet<SocketAddr> = reports
        .iter()
        .flat_map(|(_, t)| &t.peers)
        .filter_map(|p| match &p.link {
            Link::Dialed { local } => local.parse().ok(),
            Link::Accepted => None,
        })
        .collect();
    let mut out: BTreeMap<(String, String, EdgeKind), u64> = BTreeMap::new();
    // Saturating: rates come from nodes' reports, and an overflow must not panic the feed.
    let mut add = |from: String, to: String, kind: EdgeKind, rate: u64| {
        let sum = out.entry((from, to, kind)).or_default();
        *sum = sum.saturating_add(rate);
    };
    for (node, t) in reports {
        let me = node.to_string();
        let per_s = |bytes: u64| bytes.saturating_mul(1000) / u64::from(t.interval_ms.max(1));
        for p in &t.peers {
            let Ok(addr) = p.peer.parse::<SocketAddr>() else {
                continue;
            };
            if matches!(p.link, Link::Accepted) && (dialed.contains(&addr) || gateway.conns.contains(&addr)) {
                continue;
            }
            let (other, out_kind, in_kind) = match addrs.get(&addr) {
                Some(n) => (n.to_string(), EdgeKind::Replication, EdgeKind::Replication),
                // A node dialing somewhere that is not a known node's data address.
                None if matches!(p.link, Link::Dialed { .. }) => (
                    client_endpoint(&addr.ip().to_string()),
                    EdgeKind::Replication,
                    EdgeKind::Replication,
                ),
                None => (
                    client_endpoint(&addr.ip().to_string()),
                    EdgeKind::ClientDownload,
                    EdgeKind::Upload,
                ),
            };
            if p.sent_bytes > 0 {
                add(me.clone(), other.clone(), out_kind, per_s(p.sent_bytes));
            }
            if p.received_bytes > 0 {
                add(other, me.clone(), in_kind, per_s(p.received_bytes));
            }
        }
    }
    for (from, to) in copies {
        add(from.to_string(), to.to_string(), EdgeKind::Replication, 0);
    }
    for g in &gateway.fetching {
        add(
            g.node.to_string(),
            CONTROLLER_ENDPOINT.into(),
            EdgeKind::Gateway,
            g.bytes_per_s,
        );
    }
    out.into_iter()
        .map(|((from, to, kind), bytes_per_s)| LiveEdge {
            from,
            to,
            bytes_per_s,
            kind,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use trove_common::control::PeerTraffic;

    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId([b; 16])
    }

    fn peer(addr: &str, link: Link, sent: u64, received: u64) -> PeerTraffic {
        PeerTraffic {
            peer: addr.into(),
            link,
            sent_bytes: sent,
            received_bytes: received,
        }
    }

    fn report(interval_ms: u32, peers: Vec<PeerTraffic>) -> Transfers {
        Transfers {
            boot_id: 1,
            interval_ms,
            peers,
        }
    }

    fn edge(from: &str, to: &str, bytes_per_s: u64, kind: EdgeKind) -> LiveEdge {
        LiveEdge {
            from: from.into(),
            to: to.into(),
            bytes_per_s,
            kind,
        }
    }

    fn check(reports: &[(NodeId, Transfers)], copies: &[(NodeId, NodeId)], expected: &[LiveEdge]) {
        let addrs: HashMap<SocketAddr, NodeId> = [
            ("10.0.0.1:7070".parse().unwrap(), node(1)),
            ("10.0.0.2:7070".parse().unwrap(), node(2)),
        ]
        .into();
        assert_eq!(edges(reports, &addrs, copies, &GatewayNow::default()), expected);
    }

    #[test]
    fn clients_are_named_by_ip_and_rates_are_per_second() {
        let n1 = node(1).to_string();
        check(
            &[(
                node(1),
                report(
                    500,
                    vec![
                        peer("10.0.0.9:4000", Link::Accepted, 100, 0),
                        peer("10.0.0.9:4001", Link::Accepted, 50, 0),
                        peer("10.0.0.8:4000", Link::Accepted, 0, 10),
                    ],
                ),
            )],
            &[],
            &[
                edge(&n1, "client 10.0.0.9", 300, EdgeKind::ClientDownload),
                edge("client 10.0.0.8", &n1, 20, EdgeKind::Upload),
            ],
        );
    }

    #[test]
    fn a_replication_counts_once_from_the_dialer() {
        // Node 2 fetches from node 1: node 1 sees an accepted connection from node 2's side
        // of the socket; node 2 reports the dial. Only the dial becomes an edge.
        let (n1, n2) = (node(1).to_string(), node(2).to_string());
        check(
            &[
                (
                    node(1),
                    report(1000, vec![peer("10.0.0.2:50000", Link::Accepted, 4096, 0)]),
                ),
                (
                    node(2),
                    report(
                        1000,
                        vec![peer(
                            "10.0.0.1:7070",
                            Link::Dialed {
                                local: "10.0.0.2:50000".into(),
                            },
                            0,
                            4096,
                        )],
                    ),
                ),
            ],
            &[(node(1), node(2))],
            &[edge(&n1, &n2, 4096, EdgeKind::Replication)],
        );
    }

    #[test]
    fn huge_rates_saturate_instead_of_overflowing() {
        // Pins: two connections to one client reporting u64::MAX bytes each overflowed the
        // sum, a panic (debug) or a tiny wrapped rate (release) in every fleet answer.
        let n1 = node(1).to_string();
        check(
            &[(
                node(1),
                report(
                    1,
                    vec![
                        peer("10.0.0.9:4000", Link::Accepted, u64::MAX, 0),
                        peer("10.0.0.9:4001", Link::Accepted, u64::MAX, 0),
                    ],
                ),
            )],
            &[],
            &[edge(&n1, "client 10.0.0.9", u64::MAX, EdgeKind::ClientDownload)],
        );
    }

    #[test]
    fn repair_copies_show_before_bytes_move_and_idle_peers_not_at_all() {
        let (n1, n2) = (node(1).to_string(), node(2).to_string());
        check(
            &[(node(1), report(1000, vec![peer("10.0.0.9:1", Link::Accepted, 0, 0)]))],
            &[(node(2), node(1))],
            &[edge(&n2, &n1, 0, EdgeKind::Replication)],
        );
    }

    #[test]
    fn the_gateway_fetching_is_an_edge_to_the_controller_drawn_once() {
        let addrs = HashMap::new();
        let gateway = GatewayNow {
            fetching: vec![GatewayTransfer {
                node: node(3),
                bytes_per_s: 5,
            }],
            conns: ["10.0.0.5:4100".parse().unwrap()].into(),
        };
        // The appliance sees the gateway's connection as one accepted from the controller's
        // host; a browser on that host downloading straight from it is still a client.
        let report = report(
            1000,
            vec![
                peer("10.0.0.5:4100", Link::Accepted, 5, 0),
                peer("10.0.0.5:4101", Link::Accepted, 7, 0),
            ],
        );
        let n3 = node(3).to_string();
        assert_eq!(
            edges(&[(node(3), report)], &addrs, &[], &gateway),
            [
                edge(&n3, "client 10.0.0.5", 7, EdgeKind::ClientDownload),
                edge(&n3, "controller", 5, EdgeKind::Gateway),
            ]
        );
    }

    #[test]
    fn reports_expire_and_an_empty_one_clears() {
        let live = Live::default();
        let t0 = Instant::now();
        let busy = report(1000, vec![peer("10.0.0.9:1", Link::Accepted, 1, 0)]);
        live.record(node(1), busy.clone(), t0).unwrap();
        live.record(node(2), busy.clone(), t0).unwrap();
        assert_eq!(live.current(t0 + Duration::from_secs(1)).len(), 2);
        assert_eq!(live.current(t0 + REPORT_TTL).len(), 0);
        live.record(node(1), report(1000, vec![]), t0).unwrap();
        assert_eq!(live.current(t0).len(), 1);
    }

    #[test]
    fn malformed_reports_are_refused() {
        let live = Live::default();
        let now = Instant::now();
        let bad = report(1000, vec![peer("not an address", Link::Accepted, 1, 0)]);
        assert!(matches!(
            live.record(node(1), bad, now),
            Err(ReportError::BadAddress(_))
        ));
        let many = report(
            1000,
            vec![peer("10.0.0.9:1", Link::Accepted, 1, 0); TRANSFER_PEERS_MAX + 1],
        );
        assert!(matches!(
            live.record(node(1), many, now),
            Err(ReportError::TooManyPeers(_))
        ));
        assert!(matches!(
            live.record(node(1), report(0, vec![]), now),
            Err(ReportError::ZeroInterval)
        ));
        assert!(live.current(now).is_empty());
    }
}
