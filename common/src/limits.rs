//! Every bound the protocol and the addressing code rely on, in one place.
//!
//! A limit is named for what it bounds, with its unit last. Relations between limits are
//! checked at compile time at the bottom of this file.

/// BLAKE3's own leaf size: chunk offsets must be multiples of it.
pub const BLAKE3_LEAF_BYTES: u64 = 1024;

/// The smallest chunk size a manifest may use (a power of two).
pub const CHUNK_BYTES_MIN: u32 = 16 * 1024;
/// The chunk size Trove uses unless told otherwise.
pub const CHUNK_BYTES_DEFAULT: u32 = 1024 * 1024;
/// The largest chunk size a manifest may use: also the largest body a frame may carry.
pub const CHUNK_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// The largest file a manifest may describe (2^50 bytes = 1 PiB).
pub const FILE_BYTES_MAX: u64 = 1 << 50;
/// The most chunks one manifest may list (the largest file at the smallest chunk size).
pub const MANIFEST_CHUNKS_MAX: u64 = FILE_BYTES_MAX / CHUNK_BYTES_MIN as u64;

/// A block: the unit in which part of a chunk is verified on its own (`blocks`). A power
/// of two of BLAKE3 leaves, no larger than the smallest chunk, so every chunk is whole blocks
/// (its last may be short) and every block is a subtree of the file's tree.
pub const BLOCK_BYTES: u32 = 16 * 1024;
/// The most blocks one chunk has, so the most chaining values one `Blocks` reply carries.
pub const CHUNK_BLOCKS_MAX: usize = (CHUNK_BYTES_MAX / BLOCK_BYTES) as usize;

/// The largest encoded frame header (the postcard part of a frame, not its raw body).
pub const HEADER_BYTES_MAX: u32 = 256 * 1024;
/// The most chunk IDs one `Has` request may ask about.
pub const HAS_CHUNKS_MAX: usize = 4096;
/// The most chunk IDs one inventory page may return.
pub const INVENTORY_PAGE_MAX: u16 = 4096;
/// The longest error message a peer may send.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;
/// The longest free-text field (version, board) in node stats.
pub const LABEL_BYTES_MAX: usize = 128;

/// Worst-case encoded size of one chunk ID: 32-byte hash, varint u64, varint u32, bool.
pub const CHUNK_ID_ENCODED_BYTES_MAX: usize = 32 + 10 + 5 + 1;

const _: () = assert!(CHUNK_BYTES_MIN.is_power_of_two() && CHUNK_BYTES_MAX.is_power_of_two());
const _: () = assert!(CHUNK_BYTES_MIN as u64 >= BLAKE3_LEAF_BYTES);
const _: () = assert!(CHUNK_BYTES_MIN <= CHUNK_BYTES_DEFAULT && CHUNK_BYTES_DEFAULT <= CHUNK_BYTES_MAX);
// The largest requests and replies must fit in one header with room to spare.
const _: () = assert!((HAS_CHUNKS_MAX * CHUNK_ID_ENCODED_BYTES_MAX + 64) as u32 <= HEADER_BYTES_MAX);
const _: () = assert!((INVENTORY_PAGE_MAX as usize * CHUNK_ID_ENCODED_BYTES_MAX + 256) as u32 <= HEADER_BYTES_MAX);
const _: () = assert!(BLOCK_BYTES.is_power_of_two() && BLOCK_BYTES as u64 >= BLAKE3_LEAF_BYTES);
const _: () = assert!(BLOCK_BYTES <= CHUNK_BYTES_MIN);
// A `Blocks` reply for the largest chunk: every block's 32-byte CV, plus the rest.
const _: () = assert!((CHUNK_BLOCKS_MAX * 32 + 64) as u32 <= HEADER_BYTES_MAX);
