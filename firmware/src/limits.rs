//! troved's own bounds (the protocol's are in `trove_common::limits`).

use std::time::Duration;

/// Connections served at once; one more is accepted and closed at once with a log line.
pub const CONNECTIONS_MAX: usize = 64;
/// Puts being written at once (each holds one chunk in memory).
pub const PUTS_INFLIGHT_MAX: usize = 4;
/// How long a new connection has to send its hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit idle between frames, or mid-frame.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Socket buffer sizes.
pub const IO_BUFFER_BYTES: usize = 256 * 1024;
/// How many chunks the scrubber lists at a time.
pub const SCRUB_PAGE_CHUNKS: usize = 256;
