//! troved's own bounds (the protocol's are in `trove_common::limits`).

use std::time::Duration;

/// Connections served at once; one more is accepted and closed at once with a log line.
pub const CONNECTIONS_MAX: usize = 64;
/// Bytes of put bodies held in memory at once, across all connections. Puts past it wait.
pub const PUT_BODY_BYTES_INFLIGHT_MAX: u64 = 32 << 20;
/// How long one request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new connection has to send its hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit idle between frames, or mid-frame.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The write buffer of a connection (replies are headers; chunk bodies go by `sendfile`).
pub const IO_BUFFER_BYTES: usize = 256 * 1024;
/// How many chunks the scrubber lists at a time.
pub const SCRUB_PAGE_CHUNKS: usize = 256;

const _: () = assert!(PUT_BODY_BYTES_INFLIGHT_MAX >= trove_common::limits::CHUNK_BYTES_MAX as u64);

// ---------------------------------------------------------------------------------------------
// The MQTT agent (see agent.rs)

/// MQTT keep-alive. Short, so that the broker publishes a killed or unplugged node's Last Will
/// (`offline`) within seconds (brokers wait 1.5 keep-alives), at the cost of a tiny ping
/// every few seconds.
pub const MQTT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// First wait before reconnecting to the broker; doubles per failure up to the max, so a
/// broker restart is noticed quickly and a broker that stays away costs little.
pub const MQTT_RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const MQTT_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Requests queued for the MQTT event loop. The agent never waits on this queue (it would
/// stall behind a dead broker): a publish that does not fit is dropped and accounted for
/// (a `Have` by a sequence gap, info by the next periodic one).
pub const MQTT_REQUESTS_MAX: usize = 64;
/// Largest MQTT packet either way: a full `Have` or any control payload, plus topic and
/// header bytes.
pub const MQTT_PACKET_BYTES_MAX: usize = trove_common::control::PAYLOAD_BYTES_MAX + 1024;
/// How often `info` is republished (free space and chunk counts drift between changes).
pub const INFO_INTERVAL: Duration = Duration::from_secs(10);
/// How long a store change may wait to be batched into a `Have`: long enough to gather a
/// burst of puts into one message, short enough for the controller's view to stay fresh.
pub const HAVE_FLUSH_DELAY: Duration = Duration::from_millis(200);
/// Store changes queued between the store and the agent. On overflow the agent skips a
/// `Have` sequence number, so the controller pulls the full inventory instead.
pub const CHANGE_QUEUE_MAX: usize = 2 * trove_common::control::HAVE_BATCH_MAX;
/// Replications (fetch from a peer, verify, store) running at once: each holds up to a
/// chunk in memory and a connection, and a Pi's disk and network are the bottleneck anyway.
pub const REPLICATIONS_CONCURRENT_MAX: usize = 4;
/// Replications accepted and not finished (running or waiting for a slot). Orders past it
/// fail at once with "busy", which bounds the memory a flood of orders can take.
pub const REPLICATIONS_QUEUED_MAX: usize = 256;
/// How long one replication (connect, fetch one chunk) may take before it is reported failed.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How far in the future a command's `issued_at_s` may be: tolerates clock skew between the
/// controller and an appliance without NTP yet, and no more.
pub const COMMAND_FUTURE_SKEW_S: u64 = 60;
/// How long shutdown waits for `offline` and the clean DISCONNECT to leave.
pub const MQTT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections metered at once for the fleet view (`traffic.rs`); more are served unmetered.
/// One `transfers` message lists at most this many peers.
pub const TRAFFIC_PEERS_MAX: usize = trove_common::control::TRANSFER_PEERS_MAX;
/// How often `transfers` is published while connections are open.
pub const TRANSFERS_INTERVAL: Duration = Duration::from_secs(1);

const _: () = assert!(CHANGE_QUEUE_MAX >= trove_common::control::HAVE_BATCH_MAX);
const _: () = assert!(REPLICATIONS_QUEUED_MAX >= REPLICATIONS_CONCURRENT_MAX);
