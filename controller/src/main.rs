//! `trove-controller`: users, file metadata, placement and repair, and the dashboard.
//!
//! A shell for now: the control plane (MQTT ingest, SQL state, placement, grants, the JSON
//! API and the single-machine cluster) is the next piece of work. It already depends on
//! `trove-common` only, as the layering requires.

use clap::Parser;

/// The Trove controller (not implemented yet: see ARCHITECTURE.md).
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _ = Args::parse();
    let _ = trove_common::wire::PROTOCOL_VERSION;
    anyhow::bail!("trove-controller is not implemented yet; use `trove put`/`trove fetch` against troved directly")
}
