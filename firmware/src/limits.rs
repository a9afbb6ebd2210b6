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
/// Socket buffer sizes.
pub const IO_BUFFER_BYTES: usize = 256 * 1024;
/// How many chunks the scrubber lists at a time.
pub const SCRUB_PAGE_CHUNKS: usize = 256;

const _: () = assert!(PUT_BODY_BYTES_INFLIGHT_MAX >= trove_common::limits::CHUNK_BYTES_MAX as u64);
