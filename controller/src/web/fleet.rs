//! The fleet page (`GET /fleet`, any logged-in user): the appliances, repair progress, and a
//! drawing of the transfers under way (`svg#network`).
//!
//! The page is rendered whole on the server from the same [`crate::live::fleet_live`] that
//! answers `GET /api/v1/fleet/live`; `assets/trove.js` (below its `// fleet` marker) then polls
//! that endpoint every second and updates the table, the repair counts and the drawing in
//! place. So the first paint and every later one come from one function, and the page works
//! (without live updates) with scripts off. IDs and classes are the contract in
//! `docs/dashboard.md`.

use std::f64::consts::PI;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use trove_common::api::{LiveEdge, LiveNode, RepairView};

use super::{Chrome, Session, WebError, render};
use crate::app::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/fleet", get(fleet))
}

/// The drawing's size and geometry; `trove.js` uses the same numbers (see `fleetLayout`).
const VIEW_W: f64 = 720.0;
const VIEW_H: f64 = 520.0;
const RING_R: f64 = 120.0;
const OUTER_R: f64 = 220.0;

#[derive(askama::Template)]
#[template(path = "fleet.html")]
struct FleetPage {
    chrome: Chrome,
    rows: Vec<Row>,
    repair: RepairView,
    edges: Vec<EdgeLine>,
    endpoints: Vec<Endpoint>,
    view_w: f64,
    view_h: f64,
}

struct Row {
    id: String,
    name: String,
    state: String,
    since: String,
    capacity: String,
    free: String,
    chunks: i64,
    board: String,
}

/// A circle in the drawing: an appliance on the ring, or a client or the controller outside.
struct Endpoint {
    id: String,
    label: String,
    /// `node online`, `node offline`, `outside`.
    class: String,
    x: String,
    y: String,
}

struct EdgeLine {
    key: String,
    kind: String,
    text: String,
    x1: String,
    y1: String,
    x2: String,
    y2: String,
    width: String,
}

async fn fleet(State(app): State<Arc<App>>, session: Session) -> Result<Response, WebError> {
    let live = crate::live::fleet_live(&app).await?;
    let (endpoints, edges) = drawing(&live.nodes, &live.edges);
    let page = FleetPage {
        chrome: session.chrome("Fleet"),
        rows: live
            .nodes
            .iter()
            .map(|n| Row {
                id: n.id.clone(),
                name: display_name(n),
                state: n.state.clone(),
                since: since_h(&n.state, live.now_s - n.since),
                capacity: bytes_h(n.capacity_bytes),
                free: bytes_h(n.free_bytes),
                chunks: n.chunks,
                board: n.board.clone().unwrap_or_default(),
            })
            .collect(),
        repair: live.repair,
        edges,
        endpoints,
        view_w: VIEW_W,
        view_h: VIEW_H,
    };
    Ok(render(&page))
}

/// A node's name, or the start of its ID when it has none.
fn display_name(n: &LiveNode) -> String {
    n.name.clone().unwrap_or_else(|| n.id.chars().take(8).collect())
}

/// How long a node has been in its state, for people: `online for 42 s`, `offline for 3 min`.
fn since_h(state: &str, secs: i64) -> String {
    let secs = secs.max(0);
    let span = match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86400),
    };
    format!("{state} for {span}")
}

/// A byte count from the fleet's signed columns (a negative one reads as none); the script
/// formats the same way.
fn bytes_h(n: i64) -> String {
    super::pages::bytes_h(u64::try_from(n).unwrap_or(0))
}

/// Where everything goes: appliances evenly on a ring in table order, the controller and
/// clients evenly on a wider ring; one line per edge, wider for faster transfers.
fn drawing(nodes: &[LiveNode], edges: &[LiveEdge]) -> (Vec<Endpoint>, Vec<EdgeLine>) {
    let (cx, cy) = (VIEW_W / 2.0, VIEW_H / 2.0);
    let at = |i: usize, n: usize, r: f64| {
        let a = 2.0 * PI * i as f64 / n.max(1) as f64 - PI / 2.0;
        (cx + r * a.cos(), cy + r * a.sin())
    };
    let mut points: Vec<(String, f64, f64)> = Vec::new();
    let mut endpoints = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = at(i, nodes.len(), RING_R);
        points.push((n.id.clone(), x, y));
        endpoints.push(Endpoint {
            id: n.id.clone(),
            label: display_name(n),
            class: format!("node {}", n.state),
            x: format!("{x:.1}"),
            y: format!("{y:.1}"),
        });
    }
    let mut outside: Vec<&str> = edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .filter(|id| !nodes.iter().any(|n| n.id == *id))
        .collect();
    outside.sort_unstable();
    outside.dedup();
    for (i, id) in outside.iter().enumerate() {
        // Half a step round, so the outer ring does not line up with the appliances.
        let (x, y) = at(2 * i + 1, 2 * outside.len(), OUTER_R);
        points.push(((*id).to_owned(), x, y));
        endpoints.push(Endpoint {
            id: (*id).to_owned(),
            label: (*id).to_owned(),
            class: "outside".into(),
            x: format!("{x:.1}"),
            y: format!("{y:.1}"),
        });
    }
    let pos = |id: &str| points.iter().find(|p| p.0 == id).map(|p| (p.1, p.2));
    let name_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(display_name)
            .unwrap_or_else(|| id.to_owned())
    };
    let lines = edges
        .iter()
        .filter_map(|e| {
            let ((x1, y1), (x2, y2)) = (pos(&e.from)?, pos(&e.to)?);
            let kind = serde_json::to_value(e.kind).ok()?.as_str()?.to_owned();
            Some(EdgeLine {
                key: format!("{}>{}>{kind}", e.from, e.to),
                text: format!(
                    "{} → {}: {}/s ({kind})",
                    name_of(&e.from),
                    name_of(&e.to),
                    super::pages::bytes_h(e.bytes_per_s)
                ),
                kind,
                x1: format!("{x1:.1}"),
                y1: format!("{y1:.1}"),
                x2: format!("{x2:.1}"),
                y2: format!("{y2:.1}"),
                width: format!("{:.1}", edge_width(e.bytes_per_s)),
            })
        })
        .collect();
    (endpoints, lines)
}

/// Line width for a rate: 1.5 for a trickle, growing with the log of the rate, at most 10.
fn edge_width(bytes_per_s: u64) -> f64 {
    let mib = bytes_per_s as f64 / (1024.0 * 1024.0);
    (1.5 + 2.0 * (1.0 + mib).log2()).min(10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_people_say_them() {
        let check = |secs, want: &str| assert_eq!(since_h("online", secs), want);
        check(-3, "online for 0 s");
        check(59, "online for 59 s");
        check(60, "online for 1 min");
        check(3599, "online for 59 min");
        check(7200, "online for 2 h");
        check(3 * 86400, "online for 3 days");
    }

    #[test]
    fn sizes_read_like_people_say_them() {
        let check = |n, want: &str| assert_eq!(bytes_h(n), want);
        check(0, "0 B");
        check(1023, "1023 B");
        check(1536, "1.5 KiB");
        check(1 << 30, "1.0 GiB");
        check(-1, "0 B");
    }
}
