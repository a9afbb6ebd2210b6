//! The controller's JSON API, version 1 (`/api/v1`): request and response bodies.
//!
//! Shared by the controller (which serves them) and the clients (which call them), so the
//! two cannot drift apart. Binary values travel as lowercase hex: file IDs (64 digits), node
//! IDs (32), manifests and grants (their postcard encodings). Authentication is
//! `Authorization: Bearer <token>` on every route but `GET /api/v1/health`.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /api/v1/health` | | [`Health`] |
//! | `POST /api/v1/enrollments` (admin) | [`EnrollRequest`] | [`Enrollment`] |
//! | `GET /api/v1/nodes` | | `Vec<`[`NodeView`]`>` |
//! | `POST /api/v1/files` | [`ShareRequest`] | [`ShareResponse`] |
//! | `GET /api/v1/files/{id}` | | [`FileView`] |
//! | `GET /api/v1/files/{id}/status` | | [`FileStatus`] |
//! | `DELETE /api/v1/files/{id}` | | 204 |
//! | `GET /api/v1/repair` | | [`RepairView`] |
//!
//! Errors answer with a 4xx/5xx status and an [`ApiErrorBody`].

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// Copies of every chunk the controller keeps on distinct appliances.
pub const REPLICAS_TARGET: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// A stable, machine-readable word: `unauthorized`, `not_found`, `bad_request`, ...
    pub error: String,
    /// What happened, for a person.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    pub version: String,
    /// Hex ed25519 public key appliances trust for grants.
    pub controller_key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// A name shown in the fleet view.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub node_id: String,
    /// `trove1-...`: pass to `troved --join`.
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub name: Option<String>,
    /// `online`, `offline`, or `enrolled` (token made, never seen).
    pub state: String,
    /// Unix seconds of the last state change.
    pub state_since: i64,
    pub data_addr: Option<String>,
    pub capacity_bytes: i64,
    pub used_bytes: i64,
    pub disk_free_bytes: i64,
    /// Chunks the controller knows this node holds.
    pub chunks: i64,
    pub version: Option<String>,
    pub board: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRequest {
    /// Hex of the postcard-encoded [`crate::Manifest`]; checked against its file ID.
    pub manifest: String,
    pub name: String,
}

/// One chunk the client must send, to one appliance, with the grant that lets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub chunk_idx: u64,
    pub node_id: String,
    pub addr: String,
    /// Hex of the postcard-encoded [`crate::Grant`].
    pub grant: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareResponse {
    pub file_id: String,
    pub size: u64,
    /// False when these bytes were already known (a second share of the same file).
    pub new_file: bool,
    /// What the client must send: each missing chunk once, to its first appliance. The
    /// appliances make the other copies among themselves. Empty when nothing is missing.
    pub uploads: Vec<Upload>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub chunk_bytes: u32,
    /// Hex of the postcard-encoded manifest: verify it with `Manifest::decode(bytes, id)`.
    pub manifest: String,
    /// Data addresses of online holders, per chunk index.
    pub holders: Vec<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkStatus {
    pub chunk_idx: u64,
    /// Node IDs of online holders.
    pub online: Vec<String>,
    /// Node IDs of holders that are offline now.
    pub offline: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStatus {
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub n_chunks: u64,
    pub replicas_target: u32,
    /// Chunks with at least `replicas_target` online holders.
    pub chunks_at_target: u64,
    /// Online holders of the scarcest chunk (0: some chunk cannot be downloaded now).
    pub availability: u32,
    pub chunks: Vec<ChunkStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairView {
    /// Chunks with fewer online holders than the target.
    pub under_replicated: u64,
    /// Chunks with more holders than the target (trimmed once all are online).
    pub over_replicated: u64,
    /// Chunks with no online holder at all.
    pub unavailable: u64,
    /// Orders sent and not yet answered.
    pub orders_in_flight: u64,
    pub orders_done: u64,
    pub orders_failed: u64,
}
