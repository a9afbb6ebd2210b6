//! Manifests: a file cut into fixed-size chunks, and proof that the cut is honest.
//!
//! A [`Manifest`] lists the BLAKE3 chaining value of every chunk of a file. Because BLAKE3 is
//! a tree, those values merge into the file's root hash, so a manifest is checked against the
//! [`FileId`] before it is used: nobody (not even the controller) can hand out a manifest that
//! makes a client accept bytes other than the file's. Like [`ChunkId`], every `Manifest` that
//! exists has been checked, including one decoded from bytes.
//!
//! Cases: an empty file has no chunks; a file of one chunk uses its root hash as the chunk's
//! hash (BLAKE3 has no mergeable chaining value for a lone chunk).

use alloc::vec::Vec;

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, FileId, Hash32};
use crate::limits::{CHUNK_BYTES_DEFAULT, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN, FILE_BYTES_MAX};

/// A checked list of a file's chunks.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedManifest")]
pub struct Manifest {
    file_id: FileId,
    size: u64,
    chunk_bytes: u32,
    hashes: Vec<Hash32>,
}

#[derive(Deserialize)]
struct UncheckedManifest {
    file_id: FileId,
    size: u64,
    chunk_bytes: u32,
    hashes: Vec<Hash32>,
}

impl TryFrom<UncheckedManifest> for Manifest {
    type Error = ManifestError;
    fn try_from(u: UncheckedManifest) -> Result<Self, Self::Error> {
        Manifest::new(u.file_id, u.size, u.chunk_bytes, u.hashes)
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("chunk size {0} is not a power of two between {min} and {max}", min = CHUNK_BYTES_MIN, max = CHUNK_BYTES_MAX)]
    ChunkSize(u32),
    #[error("file size {0} is over the limit")]
    TooLarge(u64),
    #[error("a file of {size} bytes has {expected} chunks, the manifest lists {got}")]
    ChunkCount { size: u64, expected: u64, got: u64 },
    #[error("the chunk hashes do not add up to file ID {0}")]
    HashMismatch(FileId),
    #[error("manifest encoding: {0}")]
    Decode(postcard::Error),
}

impl Manifest {
    /// Builds a manifest from its parts and checks it against `file_id`.
    pub fn new(file_id: FileId, size: u64, chunk_bytes: u32, hashes: Vec<Hash32>) -> Result<Manifest, ManifestError> {
        check_chunk_bytes(chunk_bytes)?;
        if size > FILE_BYTES_MAX {
            return Err(ManifestError::TooLarge(size));
        }
        let expected = size.div_ceil(u64::from(chunk_bytes));
        if hashes.len() as u64 != expected {
            return Err(ManifestError::ChunkCount {
                size,
                expected,
                got: hashes.len() as u64,
            });
        }
        if root_of(&hashes) != file_id.0 {
            return Err(ManifestError::HashMismatch(file_id));
        }
        Ok(Manifest {
            file_id,
            size,
            chunk_bytes,
            hashes,
        })
    }

    /// A manifest of these chunk hashes under the file ID they imply. Real manifests come from
    /// bytes; this is for tools that fabricate fleets (benchmarks, simulations).
    pub fn from_chunk_hashes(size: u64, chunk_bytes: u32, hashes: Vec<Hash32>) -> Result<Manifest, ManifestError> {
        Manifest::new(FileId(root_of(&hashes)), size, chunk_bytes, hashes)
    }

    /// The manifest of bytes already in memory.
    pub fn of_bytes(bytes: &[u8], chunk_bytes: u32) -> Result<Manifest, ManifestError> {
        let mut b = ManifestBuilder::new(chunk_bytes)?;
        b.update(bytes);
        Ok(b.finish())
    }

    pub fn file_id(&self) -> FileId {
        self.file_id
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn chunk_bytes(&self) -> u32 {
        self.chunk_bytes
    }
    pub fn n_chunks(&self) -> usize {
        self.hashes.len()
    }

    /// The ID of chunk `chunk_idx`. Panics if out of range, like slice indexing.
    pub fn chunk(&self, chunk_idx: usize) -> ChunkId {
        let offset = chunk_idx as u64 * u64::from(self.chunk_bytes);
        let len = (self.size - offset).min(u64::from(self.chunk_bytes)) as u32;
        let root = self.hashes.len() == 1;
        // Invariant: offsets are multiples of a power-of-two chunk size within the file, so
        // every chunk is a well-formed BLAKE3 subtree; `new` checked the sizes.
        ChunkId::new(self.hashes[chunk_idx], offset, len, root).expect("a checked manifest yields valid chunk IDs")
    }

    pub fn chunks(&self) -> impl ExactSizeIterator<Item = ChunkId> + '_ {
        (0..self.hashes.len()).map(|i| self.chunk(i))
    }

    /// The chunks covering bytes `start..end` of the file (clamped to the file).
    pub fn chunks_for_range(&self, start: u64, end: u64) -> core::ops::Range<usize> {
        let end = end.min(self.size);
        if start >= end {
            return 0..0;
        }
        let cb = u64::from(self.chunk_bytes);
        (start / cb) as usize..end.div_ceil(cb) as usize
    }

    /// The binary form (postcard), as stored and sent.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding to a Vec cannot fail")
    }

    /// Decodes a manifest and checks that it is consistent with the file ID it names. Use
    /// [`Manifest::decode`] when you know which file you want.
    pub fn decode_self_checked(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        postcard::from_bytes(bytes).map_err(ManifestError::Decode)
    }

    /// Decodes and checks a manifest; `expected` guards against being handed another file's.
    pub fn decode(bytes: &[u8], expected: FileId) -> Result<Manifest, ManifestError> {
        let m: Manifest = postcard::from_bytes(bytes).map_err(ManifestError::Decode)?;
        if m.file_id != expected {
            return Err(ManifestError::HashMismatch(expected));
        }
        Ok(m)
    }
}

impl core::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Manifest({}, {} bytes, {} chunks of {})",
            self.file_id,
            self.size,
            self.hashes.len(),
            self.chunk_bytes
        )
    }
}

fn check_chunk_bytes(chunk_bytes: u32) -> Result<(), ManifestError> {
    if !chunk_bytes.is_power_of_two() || !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&chunk_bytes) {
        return Err(ManifestError::ChunkSize(chunk_bytes));
    }
    Ok(())
}

/// The root hash of a file from its chunk hashes (see the module docs for 0 and 1 chunk).
fn root_of(hashes: &[Hash32]) -> Hash32 {
    match hashes {
        [] => Hash32(*blake3::hash(b"").as_bytes()),
        [only] => *only,
        _ => {
            let (l, r) = hashes.split_at(left_len(hashes.len()));
            Hash32(*merge_subtrees_root(&subtree_cv(l), &subtree_cv(r), Mode::Hash).as_bytes())
        }
    }
}

/// The chaining value of a subtree of one or more chunks (never the root); also of blocks
/// within a chunk ([`crate::blocks`]).
pub(crate) fn subtree_cv(hashes: &[Hash32]) -> [u8; 32] {
    if let [only] = hashes {
        return only.0;
    }
    let (l, r) = hashes.split_at(left_len(hashes.len()));
    merge_subtrees_non_root(&subtree_cv(l), &subtree_cv(r), Mode::Hash)
}

/// BLAKE3's rule: a left subtree holds the largest power of two of chunks strictly below `n`.
/// With power-of-two chunk sizes this matches BLAKE3's own split on 1 KiB leaves (so it does
/// for 16 KiB blocks, also when the last one is short).
pub(crate) fn left_len(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Builds a manifest and the file ID in one streaming pass over the file's bytes.
pub struct ManifestBuilder {
    chunk_bytes: u32,
    current: blake3::Hasher,
    current_len: u64,
    offset: u64,
    hashes: Vec<Hash32>,
}

impl ManifestBuilder {
    pub fn new(chunk_bytes: u32) -> Result<ManifestBuilder, ManifestError> {
        check_chunk_bytes(chunk_bytes)?;
        Ok(ManifestBuilder {
            chunk_bytes,
            current: blake3::Hasher::new(),
            current_len: 0,
            offset: 0,
            hashes: Vec::new(),
        })
    }

    pub fn with_default_chunks() -> ManifestBuilder {
        Self::new(CHUNK_BYTES_DEFAULT).expect("the default chunk size is valid")
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        let cb = u64::from(self.chunk_bytes);
        while !bytes.is_empty() {
            if self.current_len == cb {
                // Only now do we know the full chunk is not the file's only one: a lone chunk
                // is finalized as a root in `finish`.
                self.hashes.push(Hash32(self.current.finalize_non_root()));
                self.offset += cb;
                self.current = blake3::Hasher::new();
                self.current.set_input_offset(self.offset);
                self.current_len = 0;
            }
            let take = (cb - self.current_len).min(bytes.len() as u64) as usize;
            self.current.update(&bytes[..take]);
            self.current_len += take as u64;
            bytes = &bytes[take..];
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.offset + self.current_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(mut self) -> Manifest {
        let size = self.len();
        if size > 0 {
            let last = if self.hashes.is_empty() {
                *self.current.finalize().as_bytes()
            } else {
                self.current.finalize_non_root()
            };
            self.hashes.push(Hash32(last));
        }
        let file_id = FileId(root_of(&self.hashes));
        Manifest {
            file_id,
            size,
            chunk_bytes: self.chunk_bytes,
            hashes: self.hashes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect()
    }

    /// Builds the manifest of `len` bytes fed in pieces of `piece`, and checks it three ways.
    fn check(len: usize, chunk_bytes: u32, piece: usize) {
        let bytes = data(len, 3);
        let mut b = ManifestBuilder::new(chunk_bytes).unwrap();
        for p in bytes.chunks(piece.max(1)) {
            b.update(p);
        }
        let m = b.finish();
        assert_eq!(m.file_id(), FileId::of_bytes(&bytes), "len {len} chunk {chunk_bytes}");
        assert_eq!(m.n_chunks() as u64, (len as u64).div_ceil(u64::from(chunk_bytes)));
        for (i, c) in m.chunks().enumerate() {
            let start = i * chunk_bytes as usize;
            let end = (start + chunk_bytes as usize).min(len);
            assert!(c.verify(&bytes[start..end]), "chunk {i} of {len}");
        }
        let again = Manifest::decode(&m.encode(), m.file_id()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn edge_sizes_match_blake3() {
        let cb = CHUNK_BYTES_MIN;
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            cb as usize - 1,
            cb as usize,
            cb as usize + 1,
            2 * cb as usize,
            3 * cb as usize + 7,
            5 * cb as usize,
        ] {
            check(len, cb, 4096);
        }
        check(1 << 20, CHUNK_BYTES_DEFAULT, 1 << 20);
        check((1 << 20) + 1, CHUNK_BYTES_DEFAULT, 65536);
    }

    #[test]
    fn chunk_hashes_imply_the_file_id() {
        let bytes = data(3 * CHUNK_BYTES_MIN as usize + 5, 4);
        let m = Manifest::of_bytes(&bytes, CHUNK_BYTES_MIN).unwrap();
        let again = Manifest::from_chunk_hashes(m.size(), CHUNK_BYTES_MIN, m.hashes.clone()).unwrap();
        assert_eq!(again, m);
        assert!(
            Manifest::from_chunk_hashes(m.size() + u64::from(CHUNK_BYTES_MIN), CHUNK_BYTES_MIN, m.hashes.clone())
                .is_err()
        );
    }

    #[test]
    fn a_lone_chunk_is_the_root() {
        let m = Manifest::of_bytes(b"x", CHUNK_BYTES_DEFAULT).unwrap();
        assert!(m.chunk(0).is_root());
        assert_eq!(m.chunk(0).hash(), m.file_id().0);
        let empty = Manifest::of_bytes(b"", CHUNK_BYTES_DEFAULT).unwrap();
        assert_eq!(empty.n_chunks(), 0);
        assert_eq!(empty.file_id(), FileId::of_bytes(b""));
    }

    #[test]
    fn tampered_manifests_are_refused() {
        let bytes = data(5 * CHUNK_BYTES_MIN as usize, 9);
        let m = Manifest::of_bytes(&bytes, CHUNK_BYTES_MIN).unwrap();
        let mut hashes = m.hashes.clone();
        hashes[2].0[0] ^= 1;
        assert_eq!(
            Manifest::new(m.file_id(), m.size(), m.chunk_bytes(), hashes),
            Err(ManifestError::HashMismatch(m.file_id()))
        );
        let short = m.hashes[..4].to_vec();
        assert!(matches!(
            Manifest::new(m.file_id(), m.size(), m.chunk_bytes(), short),
            Err(ManifestError::ChunkCount { .. })
        ));
        assert_eq!(
            Manifest::new(m.file_id(), m.size(), 3000, m.hashes.clone()),
            Err(ManifestError::ChunkSize(3000))
        );
        let other = FileId::of_bytes(b"other");
        assert!(Manifest::decode(&m.encode(), other).is_err());
        // A manifest whose size claims one more byte no longer adds up.
        assert!(Manifest::new(m.file_id(), m.size() + 1, m.chunk_bytes(), m.hashes.clone()).is_err());
    }

    #[test]
    fn chunks_for_range() {
        let m = Manifest::of_bytes(&data(3 * CHUNK_BYTES_MIN as usize + 5, 1), CHUNK_BYTES_MIN).unwrap();
        let cb = u64::from(CHUNK_BYTES_MIN);
        assert_eq!(m.chunks_for_range(0, 1), 0..1);
        assert_eq!(m.chunks_for_range(cb - 1, cb + 1), 0..2);
        assert_eq!(m.chunks_for_range(3 * cb, u64::MAX), 3..4);
        assert_eq!(m.chunks_for_range(10, 10), 0..0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_size_matches_blake3(len in 0usize..(300 * 1024), shift in 0u32..3, piece in 1usize..70_000) {
            check(len, CHUNK_BYTES_MIN << shift, piece);
        }
    }
}
