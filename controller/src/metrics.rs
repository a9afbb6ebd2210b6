//! Counters for Prometheus (`GET /metrics`, text exposition format 0.0.4).

use std::fmt::Write;

use std::sync::atomic::{AtomicU64, Ordering};
use trove_common::api::RepairView;

#[derive(Default)]
pub struct Metrics {
    pub mqtt_messages: AtomicU64,
    pub mqtt_rejected: AtomicU64,
    pub have_changes: AtomicU64,
    pub inventory_pulls: AtomicU64,
    pub commands_sent: AtomicU64,
    pub http_requests: AtomicU64,
    pub http_unauthorized: AtomicU64,
    /// The streaming gateway (`gateway.rs`).
    pub gateway_requests: AtomicU64,
    /// Chunks the gateway got from appliances (verified); cache hits not included.
    pub gateway_chunks_fetched: AtomicU64,
    pub gateway_bytes_sent: AtomicU64,
    pub gateway_cache_hits: AtomicU64,
    /// A gauge: chunk fetches from appliances under way now.
    pub gateway_fetches_in_flight: AtomicU64,
}

/// Gauges read at scrape time.
pub struct Gauges {
    pub nodes_online: u64,
    pub nodes_offline: u64,
    pub files: u64,
    pub chunks: u64,
    pub holdings: u64,
    /// The repair counters, as the API shows them.
    pub repair: RepairView,
}

impl Metrics {
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        line(
            "trove_mqtt_messages_total",
            "counter",
            "MQTT messages received from appliances.",
            c(&self.mqtt_messages),
        );
        line(
            "trove_mqtt_rejected_total",
            "counter",
            "MQTT messages dropped (bad MAC, unknown node, malformed).",
            c(&self.mqtt_rejected),
        );
        line(
            "trove_have_changes_total",
            "counter",
            "Chunk holding changes ingested.",
            c(&self.have_changes),
        );
        line(
            "trove_inventory_pulls_total",
            "counter",
            "Full inventories pulled over TCP.",
            c(&self.inventory_pulls),
        );
        line(
            "trove_commands_sent_total",
            "counter",
            "Orders sent to appliances.",
            c(&self.commands_sent),
        );
        line(
            "trove_http_requests_total",
            "counter",
            "API requests.",
            c(&self.http_requests),
        );
        line(
            "trove_http_unauthorized_total",
            "counter",
            "API requests refused for a missing or bad token.",
            c(&self.http_unauthorized),
        );
        line(
            "trove_gateway_requests_total",
            "counter",
            "Content requests to the streaming gateway (GET and HEAD).",
            c(&self.gateway_requests),
        );
        line(
            "trove_gateway_chunks_fetched_total",
            "counter",
            "Verified chunks the gateway fetched from appliances.",
            c(&self.gateway_chunks_fetched),
        );
        line(
            "trove_gateway_bytes_sent_total",
            "counter",
            "Body bytes the gateway handed to HTTP connections.",
            c(&self.gateway_bytes_sent),
        );
        line(
            "trove_gateway_cache_hits_total",
            "counter",
            "Chunks the gateway served from its cache.",
            c(&self.gateway_cache_hits),
        );
        line(
            "trove_gateway_fetches_in_flight",
            "gauge",
            "Chunk fetches from appliances the gateway has under way.",
            c(&self.gateway_fetches_in_flight),
        );
        line("trove_nodes_online", "gauge", "Appliances online.", g.nodes_online);
        line("trove_nodes_offline", "gauge", "Appliances offline.", g.nodes_offline);
        line("trove_files", "gauge", "Files known.", g.files);
        line("trove_chunks", "gauge", "Distinct chunks files need.", g.chunks);
        line(
            "trove_holdings",
            "gauge",
            "(chunk, appliance) copies known.",
            g.holdings,
        );
        line(
            "trove_chunks_under_replicated",
            "gauge",
            "Chunks below the replica target.",
            g.repair.under_replicated,
        );
        line(
            "trove_chunks_over_replicated",
            "gauge",
            "Chunks above the replica target.",
            g.repair.over_replicated,
        );
        line(
            "trove_chunks_unavailable",
            "gauge",
            "Chunks with no online holder.",
            g.repair.unavailable,
        );
        line(
            "trove_repair_orders_in_flight",
            "gauge",
            "Repair orders not yet answered.",
            g.repair.orders_in_flight,
        );
        line(
            "trove_repair_orders_done_total",
            "counter",
            "Repair orders carried out.",
            g.repair.orders_done,
        );
        line(
            "trove_repair_orders_failed_total",
            "counter",
            "Repair orders that failed.",
            g.repair.orders_failed,
        );
        out
    }
}
