//! Identifiers: file IDs, chunk IDs and node IDs.
//!
//! A [`ChunkId`] names a chunk by its BLAKE3 chaining value *and* its position, which makes a
//! chunk self-certifying: whoever holds the ID can check the bytes with nothing else in hand
//! ([`ChunkId::verify`]). Every `ChunkId` that exists has passed [`ChunkId::new`]'s checks, also
//! when it came off the wire (serde goes through the same constructor), so hashing one never
//! hits the preconditions that make `blake3::hazmat` panic.

use core::fmt;
use core::str::FromStr;

use blake3::hazmat::HasherExt;
use serde::{Deserialize, Serialize};

use crate::hex::{self, HexError};
use crate::limits::{BLAKE3_LEAF_BYTES, CHUNK_BYTES_MAX};

/// A 256-bit BLAKE3 output: a root hash or a chaining value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub fn to_hex(&self) -> alloc::string::String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form: enough to tell chunks apart in logs.
        write!(f, "{}", &hex::encode(&self.0[..6]))
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

/// A file's ID: the plain BLAKE3 hash of all its bytes, exactly what `b3sum` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId(pub Hash32);

impl FileId {
    /// The ID of a file with these bytes (one pass; for large files use a
    /// [`crate::ManifestBuilder`], which yields the same ID and the manifest together).
    pub fn of_bytes(bytes: &[u8]) -> FileId {
        FileId(Hash32(*blake3::hash(bytes).as_bytes()))
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.0)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Accepts 64 hex digits, optionally prefixed with `b3:`.
impl FromStr for FileId {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s.strip_prefix("b3:").unwrap_or(s);
        Ok(FileId(Hash32(hex::decode::<32>(s)?)))
    }
}

/// An appliance's identity: random, chosen once at its first start.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 16]);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", hex::encode(&self.0))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl FromStr for NodeId {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(NodeId(hex::decode::<16>(s.trim())?))
    }
}

/// Bytes in [`ChunkId::key_bytes`].
pub const CHUNK_KEY_BYTES: usize = 45;

/// One chunk of one file, named by what it hashes to at its place in the file.
///
/// - `hash`: the chunk's BLAKE3 chaining value at `offset`; for a file of a single chunk
///   (`root`), the file's root hash, i.e. its [`FileId`].
/// - `offset`: where the chunk starts in its file. The same bytes at another offset have
///   another chaining value, so deduplication is per whole file.
/// - `len`: how many bytes the chunk has (the last chunk of a file may be short).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "UncheckedChunkId")]
pub struct ChunkId {
    hash: Hash32,
    offset: u64,
    len: u32,
    root: bool,
}

/// Why a chunk ID (or a chunk's bytes) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkIdError {
    #[error("a chunk cannot be empty")]
    Empty,
    #[error("chunk of {0} bytes is over the {max} byte limit", max = CHUNK_BYTES_MAX)]
    TooLong(u32),
    #[error("chunk offset {0} is not a multiple of {leaf}", leaf = BLAKE3_LEAF_BYTES)]
    Misaligned(u64),
    #[error("a root chunk must start at offset 0, not {0}")]
    RootNotAtStart(u64),
    #[error("chunk of {len} bytes at offset {offset} does not fit the BLAKE3 tree")]
    NotASubtree { offset: u64, len: u32 },
}

#[derive(Deserialize)]
struct UncheckedChunkId {
    hash: Hash32,
    offset: u64,
    len: u32,
    root: bool,
}

impl TryFrom<UncheckedChunkId> for ChunkId {
    type Error = ChunkIdError;
    fn try_from(u: UncheckedChunkId) -> Result<Self, Self::Error> {
        ChunkId::new(u.hash, u.offset, u.len, u.root)
    }
}

impl ChunkId {
    /// Checks that a chunk with these coordinates can exist in a BLAKE3 tree.
    pub fn new(hash: Hash32, offset: u64, len: u32, root: bool) -> Result<ChunkId, ChunkIdError> {
        if len == 0 {
            return Err(ChunkIdError::Empty);
        }
        if len > CHUNK_BYTES_MAX {
            return Err(ChunkIdError::TooLong(len));
        }
        if !offset.is_multiple_of(BLAKE3_LEAF_BYTES) {
            return Err(ChunkIdError::Misaligned(offset));
        }
        if root && offset != 0 {
            return Err(ChunkIdError::RootNotAtStart(offset));
        }
        if offset > 0 {
            // `update` panics past this bound; an offset also implies a subtree size limit.
            match blake3::hazmat::max_subtree_len(offset) {
                Some(max) if u64::from(len) <= max => {}
                _ => return Err(ChunkIdError::NotASubtree { offset, len }),
            }
        }
        Ok(ChunkId {
            hash,
            offset,
            len,
            root,
        })
    }

    pub fn hash(&self) -> Hash32 {
        self.hash
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn len(&self) -> u32 {
        self.len
    }
    /// Always false: a chunk has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// True when this chunk is a whole file and its hash is that file's root hash.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// A fixed-width binary key (database column, map key): hash ‖ offset u64 BE ‖ len u32 BE
    /// ‖ root u8. Big-endian so that byte order is ID order.
    pub fn key_bytes(&self) -> [u8; CHUNK_KEY_BYTES] {
        let mut k = [0u8; CHUNK_KEY_BYTES];
        k[..32].copy_from_slice(&self.hash.0);
        k[32..40].copy_from_slice(&self.offset.to_be_bytes());
        k[40..44].copy_from_slice(&self.len.to_be_bytes());
        k[44] = self.root as u8;
        k
    }

    /// The inverse of [`ChunkId::key_bytes`], with the same checks as [`ChunkId::new`].
    pub fn from_key_bytes(k: &[u8]) -> Option<ChunkId> {
        let k: &[u8; CHUNK_KEY_BYTES] = k.try_into().ok()?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&k[..32]);
        let offset = u64::from_be_bytes(k[32..40].try_into().ok()?);
        let len = u32::from_be_bytes(k[40..44].try_into().ok()?);
        let root = match k[44] {
            0 => false,
            1 => true,
            _ => return None,
        };
        ChunkId::new(Hash32(hash), offset, len, root).ok()
    }

    /// Hashes `bytes` as this chunk would be hashed; true only for exactly the right bytes.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        if bytes.len() != self.len as usize {
            return false;
        }
        let mut h = ChunkHasher::new(self);
        h.update(bytes);
        h.matches()
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}@{}+{}{}",
            self.hash,
            self.offset,
            self.len,
            if self.root { "r" } else { "" }
        )
    }
}

/// A chunk ID in text: `<hash hex>-<offset hex>-<len hex>-<r|c>` (root or chaining value).
/// This is also the chunk's file name on an appliance's disk.
impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{:016x}-{:08x}-{}",
            self.hash,
            self.offset,
            self.len,
            if self.root { 'r' } else { 'c' }
        )
    }
}

/// Why a chunk ID in text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseChunkIdError {
    #[error("expected <hash>-<offset>-<len>-<r|c>")]
    Shape,
    #[error("bad hash: {0}")]
    Hash(#[from] HexError),
    #[error("bad number")]
    Number,
    #[error(transparent)]
    Invalid(#[from] ChunkIdError),
}

impl FromStr for ChunkId {
    type Err = ParseChunkIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('-');
        let (Some(hash), Some(offset), Some(len), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseChunkIdError::Shape);
        };
        // Exact widths keep the text form canonical: one chunk, one name.
        if offset.len() != 16 || len.len() != 8 {
            return Err(ParseChunkIdError::Shape);
        }
        let hash = Hash32(hex::decode::<32>(hash)?);
        let offset = u64::from_str_radix(offset, 16).map_err(|_| ParseChunkIdError::Number)?;
        let len = u32::from_str_radix(len, 16).map_err(|_| ParseChunkIdError::Number)?;
        let root = match kind {
            "r" => true,
            "c" => false,
            _ => return Err(ParseChunkIdError::Shape),
        };
        Ok(ChunkId::new(hash, offset, len, root)?)
    }
}

/// Incremental verification of one chunk, for bytes that arrive in pieces.
///
/// The caller feeds exactly `chunk.len()` bytes; [`ChunkHasher::matches`] is false for any
/// other count, so a short or long body never verifies.
pub struct ChunkHasher {
    hasher: blake3::Hasher,
    expected: ChunkId,
    fed: u64,
}

impl ChunkHasher {
    pub fn new(chunk: &ChunkId) -> ChunkHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(chunk.offset);
        ChunkHasher {
            hasher,
            expected: *chunk,
            fed: 0,
        }
    }

    /// Feeds bytes; anything past the chunk's length is counted but not hashed (hashing it
    /// could exceed the subtree bound, which panics in `blake3`).
    pub fn update(&mut self, bytes: &[u8]) {
        let room = u64::from(self.expected.len).saturating_sub(self.fed);
        let take = (bytes.len() as u64).min(room) as usize;
        self.hasher.update(&bytes[..take]);
        self.fed += bytes.len() as u64;
    }

    /// True when exactly the chunk's bytes were fed and they hash to its ID.
    pub fn matches(&self) -> bool {
        if self.fed != u64::from(self.expected.len) {
            return false;
        }
        let got = if self.expected.root {
            *self.hasher.finalize().as_bytes()
        } else {
            self.hasher.finalize_non_root()
        };
        // Not secret data: a plain comparison is fine.
        got == self.expected.hash.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn cv(bytes: &[u8], offset: u64) -> Hash32 {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(offset);
        h.update(bytes);
        Hash32(h.finalize_non_root())
    }

    #[test]
    fn checks_reject_impossible_chunks() {
        let h = Hash32([7; 32]);
        assert_eq!(ChunkId::new(h, 0, 0, false), Err(ChunkIdError::Empty));
        assert_eq!(ChunkId::new(h, 100, 10, false), Err(ChunkIdError::Misaligned(100)));
        assert_eq!(ChunkId::new(h, 1024, 10, true), Err(ChunkIdError::RootNotAtStart(1024)));
        assert_eq!(
            ChunkId::new(h, 0, CHUNK_BYTES_MAX + 1, false),
            Err(ChunkIdError::TooLong(CHUNK_BYTES_MAX + 1))
        );
        // At offset 1 KiB only a 1 KiB subtree fits.
        assert_eq!(
            ChunkId::new(h, 1024, 2048, false),
            Err(ChunkIdError::NotASubtree {
                offset: 1024,
                len: 2048
            })
        );
        assert!(ChunkId::new(h, 1024, 1024, false).is_ok());
    }

    #[test]
    fn verify_accepts_only_the_right_bytes_at_the_right_place() {
        let bytes = [42u8; 16 * 1024];
        let id = ChunkId::new(cv(&bytes, 16 * 1024), 16 * 1024, bytes.len() as u32, false).unwrap();
        assert!(id.verify(&bytes));
        let mut flipped = bytes;
        flipped[100] ^= 1;
        assert!(!id.verify(&flipped));
        assert!(!id.verify(&bytes[..100]));
        let elsewhere = ChunkId::new(id.hash(), 32 * 1024, id.len(), false).unwrap();
        assert!(
            !elsewhere.verify(&bytes),
            "same bytes at another offset must not verify"
        );
    }

    #[test]
    fn chunk_hasher_refuses_long_bodies_without_panicking() {
        let bytes = [1u8; 2048];
        let id = ChunkId::new(cv(&bytes[..1024], 1024), 1024, 1024, false).unwrap();
        let mut h = ChunkHasher::new(&id);
        h.update(&bytes); // twice the allowed subtree at this offset
        assert!(!h.matches());
    }

    #[test]
    fn key_bytes_round_trip_and_sort_like_ids() {
        let a = ChunkId::new(Hash32([1; 32]), 1 << 20, 1 << 20, false).unwrap();
        let b = ChunkId::new(Hash32([1; 32]), 2 << 20, 5, false).unwrap();
        assert_eq!(ChunkId::from_key_bytes(&a.key_bytes()), Some(a));
        assert!(a.key_bytes() < b.key_bytes() && a < b);
        let mut bad = a.key_bytes();
        bad[44] = 7;
        assert_eq!(ChunkId::from_key_bytes(&bad), None);
        assert_eq!(ChunkId::from_key_bytes(&bad[..10]), None);
    }

    #[test]
    fn text_form_round_trips_and_is_strict() {
        let id = ChunkId::new(Hash32([0xab; 32]), 1 << 20, 1 << 20, false).unwrap();
        let s = id.to_string();
        assert_eq!(s.parse::<ChunkId>().unwrap(), id);
        assert!(s.replace("-c", "-x").parse::<ChunkId>().is_err());
        assert!("abc".parse::<ChunkId>().is_err());
        let fid: FileId = "b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
            .parse()
            .unwrap();
        assert_eq!(fid, FileId::of_bytes(b""));
    }
}
