//! The controller's JSON API, version 1 (`/api/v1`): request and response bodies.
//!
//! Shared by the controller (which serves them) and the clients (which call them), so the
//! two cannot drift apart. Binary values travel as lowercase hex: file IDs (64 digits), node
//! IDs (32), manifests and grants (their postcard encodings). Authentication is
//! `Authorization: Bearer <token>` on every route but health, sign-up and login.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /api/v1/health` | | [`Health`] |
//! | `POST /api/v1/signup` (no token) | [`SignupRequest`] | [`LoginResponse`] |
//! | `POST /api/v1/login` (no token) | [`LoginRequest`] | [`LoginResponse`] |
//! | `POST /api/v1/logout` | | 204 (revokes the calling token) |
//! | `GET /api/v1/me` | | [`MeView`] |
//! | `PATCH /api/v1/me` | [`ProfileUpdate`] | [`UserView`] |
//! | `GET /api/v1/tokens` | | `Vec<`[`TokenView`]`>` |
//! | `POST /api/v1/tokens` | [`TokenRequest`] | [`NewToken`] |
//! | `DELETE /api/v1/tokens/{id}` | | 204 |
//! | `GET /api/v1/users` (admin) | | `Vec<`[`UserView`]`>` |
//! | `GET /api/v1/users/{name}` | | [`UserView`] |
//! | `POST /api/v1/users/{name}/disable`, `.../enable` (admin) | | [`UserView`] |
//! | `GET /api/v1/search?q=&kind=&tag=&owner=&min_size=&max_size=&since=&page=&per_page=` | | [`SearchResults`] |
//! | `POST /api/v1/files/{id}/events` | [`EventRequest`] | 204 |
//! | `GET /api/v1/recommendations?limit=` | | `Vec<`[`Recommendation`]`>` |
//! | `POST /api/v1/enrollments` (admin) | [`EnrollRequest`] | [`Enrollment`] |
//! | `GET /api/v1/nodes` | | `Vec<`[`NodeView`]`>` |
//! | `POST /api/v1/files` | [`ShareRequest`] | [`ShareResponse`] |
//! | `GET /api/v1/files/{id}` | | [`FileView`] |
//! | `GET /api/v1/files/{id}/status` | | [`FileStatus`] |
//! | `DELETE /api/v1/files/{id}` | | 204 |
//! | `GET /api/v1/repair` | | [`RepairView`] |
//! | `GET /api/v1/fleet/live` | | [`FleetLive`] |
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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRequest {
    /// Hex of the postcard-encoded [`crate::Manifest`]; checked against its file ID.
    pub manifest: String,
    /// The file name the bytes came from.
    pub name: String,
    /// What people see and search for (default: `name`).
    #[serde(default)]
    pub title: Option<String>,
    /// One of [`KINDS`] (default: `other`).
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Seen by its sharer only: in search, listings, manifests and downloads.
    #[serde(default)]
    pub private: bool,
}

/// What a share can say it is.
pub const KINDS: [&str; 7] = ["video", "audio", "image", "document", "archive", "software", "other"];
/// Most tags on one share, and most bytes per tag, title and description.
pub const TAGS_MAX: usize = 32;
pub const TAG_BYTES_MAX: usize = 64;
pub const TITLE_BYTES_MAX: usize = 512;
pub const DESCRIPTION_BYTES_MAX: usize = 4096;

/// A tag as stored and matched: trimmed, lowercased, inner whitespace as single dashes. The
/// controller stores this form and the CLI checks its limits on it, so both use this one.
pub fn normalize_tag(tag: &str) -> String {
    tag.split_whitespace().collect::<Vec<_>>().join("-").to_lowercase()
}

/// One person's share of a file: who, and what they said of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareView {
    pub owner: String,
    pub title: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub description: String,
    pub private: bool,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignupRequest {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
    /// Shown in the token list (say, the host name).
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub user: UserView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub display_name: String,
    pub bio: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: i64,
    /// Public shares (all shares when it is you).
    pub shares: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub bio: Option<String>,
    /// A new password; needs `current_password` unless none is set yet (the bootstrap admin).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub current_password: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Short public handle of the token (never the token itself).
    pub id: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// The token this request came with.
    pub current: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub id: String,
    pub token: String,
}

/// One file found. `score` orders results: see the controller's search module for the formula.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub file_id: String,
    /// The best-matching share's title (yours first when you share it too).
    pub title: String,
    pub kind: String,
    pub size: u64,
    /// Tags of every share you can see, each once.
    pub tags: Vec<String>,
    /// Sharers you can see.
    pub owners: Vec<String>,
    /// Newest share you can see, Unix seconds.
    pub shared_at: i64,
    /// Text relevance in (0, 1]; 1 without a text query.
    pub relevance: f64,
    /// Live appliances holding the file's scarcest chunk.
    pub availability: u32,
    /// False when some chunk has no live holder: cannot be downloaded now.
    pub available: bool,
    pub score: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Files matching in all (every page).
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRequest {
    /// `download` (a completed, verified download) or `view` (a stream start).
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyShare {
    pub file_id: String,
    pub title: String,
    pub kind: String,
    pub size: u64,
    pub private: bool,
    /// Other people who completed a download of the file (each counted once).
    pub downloaders: u64,
    pub views: u64,
    pub shared_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyEvent {
    pub file_id: String,
    pub title: String,
    /// `download` or `view`.
    pub kind: String,
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeView {
    pub user: UserView,
    pub shares: Vec<MyShare>,
    /// Newest first.
    pub history: Vec<MyEvent>,
    /// Bytes of the distinct files I share (one copy each).
    pub shared_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub hit: SearchHit,
    /// One line on why: "people who got X also got this".
    pub reason: String,
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
    /// The shares the caller can see (theirs first).
    #[serde(default)]
    pub shares: Vec<ShareView>,
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

/// `GET /api/v1/fleet/live`: the fleet now, for the dashboard's fleet page (polled every
/// second). Transfers are what the appliances reported over the last second or two; an
/// appliance that stopped reporting drops out of `edges` within a few seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetLive {
    /// Unix seconds on the controller when this was put together (`since` is relative to it).
    pub now_s: i64,
    pub nodes: Vec<LiveNode>,
    pub repair: RepairView,
    pub edges: Vec<LiveEdge>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveNode {
    /// Node ID (hex), the same as in [`NodeView`].
    pub id: String,
    pub name: Option<String>,
    /// `online`, `offline`, or `enrolled` (token made, never seen).
    pub state: String,
    /// Unix seconds of the last state change.
    pub since: i64,
    pub capacity_bytes: i64,
    /// What it may still take: the room under its capacity, or the disk's free space if less.
    pub free_bytes: i64,
    /// Chunks the controller knows it holds.
    pub chunks: i64,
    pub board: Option<String>,
    pub data_addr: Option<String>,
}

impl LiveNode {
    pub fn from_view(v: &NodeView) -> LiveNode {
        LiveNode {
            id: v.id.clone(),
            name: v.name.clone(),
            state: v.state.clone(),
            since: v.state_since,
            capacity_bytes: v.capacity_bytes,
            free_bytes: (v.capacity_bytes - v.used_bytes).clamp(0, v.disk_free_bytes.max(0)),
            chunks: v.chunks,
            board: v.board.clone(),
            data_addr: v.data_addr.clone(),
        }
    }
}

/// One active transfer between two endpoints, in the direction the bytes flow. An endpoint
/// is a node ID (hex) for an appliance, `controller` for the controller itself, or
/// `client <ip>` for anyone else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEdge {
    pub from: String,
    pub to: String,
    /// Measured over the last reporting interval; 0 for a repair copy ordered and not yet
    /// seen moving.
    pub bytes_per_s: u64,
    pub kind: EdgeKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    /// An appliance serving chunks to a client (`trove get`, a browser through no gateway).
    ClientDownload,
    /// An appliance copying a chunk from another (repair).
    Replication,
    /// An appliance serving the controller's streaming gateway.
    Gateway,
    /// A client (or the controller, for a browser's upload) putting chunks on an appliance.
    Upload,
}

/// The endpoint name of a client at `ip` in [`LiveEdge`].
pub fn client_endpoint(ip: &str) -> String {
    alloc::format!("client {ip}")
}

/// The endpoint name of the controller in [`LiveEdge`].
pub const CONTROLLER_ENDPOINT: &str = "controller";
