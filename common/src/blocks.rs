//! Verified parts of a chunk: the chaining values of its blocks.
//!
//! A chunk is a subtree of its file's BLAKE3 tree, and its [`BLOCK_BYTES`] blocks are
//! subtrees of the chunk. Given the chaining value (CV) of every block, a receiver checks
//! them once against the [`ChunkId`] by merging them up the chunk's subtree exactly as
//! [`crate::manifest`] merges chunk CVs up the file's tree (the root merge when the chunk is
//! the whole file), and from then on each block verifies on its own: hash its bytes at its
//! offset and compare with its CV. So a part of a chunk can be released after one block
//! instead of the whole chunk (the idea of bao and iroh-blobs, with one level of outboard).
//!
//! Cases, mirroring [`ChunkId::verify`]: a chunk of one block (at most [`BLOCK_BYTES`],
//! e.g. a file's short last chunk) has one CV, the chunk's own hash; when that chunk is a
//! whole file, its "CV" is the root hash and the block is finalized as a root. The last
//! block of a chunk may be short; no block is empty.
//!
//! Pure code: no I/O, no allocation beyond the CV list, `no_std`.

use alloc::vec::Vec;
use core::ops::Range;

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

use crate::manifest::{left_len, subtree_cv};

use crate::id::{ChunkId, Hash32};
pub use crate::limits::{BLOCK_BYTES, CHUNK_BLOCKS_MAX};

/// How many blocks a chunk of `len` bytes has.
pub fn n_blocks(len: u32) -> u32 {
    len.div_ceil(BLOCK_BYTES)
}

/// Bytes `start..end` of block `block_idx` within a chunk of `len` bytes (clamped: the last
/// block may be short; past the end the range is empty).
pub fn block_range(len: u32, block_idx: u32) -> Range<u32> {
    let start = block_idx.saturating_mul(BLOCK_BYTES).min(len);
    start..start.saturating_add(BLOCK_BYTES).min(len)
}

/// Why a chunk's block CVs were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlocksError {
    #[error("a chunk of {len} bytes has {expected} blocks, got {got} chaining values")]
    Count { len: u32, expected: u32, got: usize },
    #[error("the block chaining values do not merge into chunk {0:?}")]
    Mismatch(ChunkId),
}

/// The CV of block `block_idx` of `chunk`, from the block's bytes (which must be exactly
/// that block: `block_range(chunk.len(), block_idx)` of the chunk).
pub fn block_cv(chunk: &ChunkId, block_idx: u32, bytes: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    let start = u64::from(block_idx) * u64::from(BLOCK_BYTES);
    h.set_input_offset(chunk.offset() + start);
    h.update(bytes);
    if n_blocks(chunk.len()) == 1 && chunk.is_root() {
        Hash32(*h.finalize().as_bytes())
    } else {
        Hash32(h.finalize_non_root())
    }
}

/// The CVs of every block of `chunk`, from the chunk's bytes (one pass). The caller
/// guarantees `bytes.len() == chunk.len()` (it read them as that chunk); with other bytes the
/// CVs are simply wrong, and [`BlockVerifier::new`] refuses them.
pub fn block_cvs(chunk: &ChunkId, bytes: &[u8]) -> Vec<Hash32> {
    let len = (bytes.len() as u32).min(chunk.len());
    (0..n_blocks(len))
        .map(|i| {
            let r = block_range(len, i);
            block_cv(chunk, i, &bytes[r.start as usize..r.end as usize])
        })
        .collect()
}

/// A chunk's block CVs, checked against its ID: every block can now be verified alone.
#[derive(Clone, Debug)]
pub struct BlockVerifier {
    chunk: ChunkId,
    cvs: Vec<Hash32>,
}

impl BlockVerifier {
    /// Checks that `cvs` are exactly the block CVs of `chunk`.
    pub fn new(chunk: ChunkId, cvs: Vec<Hash32>) -> Result<BlockVerifier, BlocksError> {
        let expected = n_blocks(chunk.len());
        if cvs.len() != expected as usize {
            return Err(BlocksError::Count {
                len: chunk.len(),
                expected,
                got: cvs.len(),
            });
        }
        let top = match cvs.as_slice() {
            [only] => *only,
            _ => {
                let (l, r) = cvs.split_at(left_len(cvs.len()));
                let (l, r) = (subtree_cv(l), subtree_cv(r));
                if chunk.is_root() {
                    Hash32(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
                } else {
                    Hash32(merge_subtrees_non_root(&l, &r, Mode::Hash))
                }
            }
        };
        // Not secret data: a plain comparison is fine.
        if top != chunk.hash() {
            return Err(BlocksError::Mismatch(chunk));
        }
        Ok(BlockVerifier { chunk, cvs })
    }

    pub fn chunk(&self) -> ChunkId {
        self.chunk
    }

    pub fn n_blocks(&self) -> u32 {
        self.cvs.len() as u32
    }

    /// Bytes of block `block_idx` within the chunk.
    pub fn block_range(&self, block_idx: u32) -> Range<u32> {
        block_range(self.chunk.len(), block_idx)
    }

    /// True only for exactly the bytes of block `block_idx`.
    pub fn verify_block(&self, block_idx: u32, bytes: &[u8]) -> bool {
        let Some(expected) = self.cvs.get(block_idx as usize) else {
            return false;
        };
        let r = self.block_range(block_idx);
        bytes.len() == (r.end - r.start) as usize && block_cv(&self.chunk, block_idx, bytes) == *expected
    }

    /// The CVs, e.g. to send them on.
    pub fn cvs(&self) -> &[Hash32] {
        &self.cvs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{CHUNK_BYTES_DEFAULT, CHUNK_BYTES_MIN};
    use crate::manifest::Manifest;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
            .collect()
    }

    /// Every chunk of a file of `len` bytes cut at `chunk_bytes`: its block CVs verify, each
    /// block verifies, and any one flipped byte or CV is caught.
    fn check(len: usize, chunk_bytes: u32, flip_at: usize) {
        let bytes = data(len, 5);
        let m = Manifest::of_bytes(&bytes, chunk_bytes).unwrap();
        for c in m.chunks() {
            let body = &bytes[c.offset() as usize..(c.offset() + u64::from(c.len())) as usize];
            let cvs = block_cvs(&c, body);
            assert_eq!(cvs.len() as u32, n_blocks(c.len()));
            let v = BlockVerifier::new(c, cvs.clone()).expect("honest CVs verify");
            let mut covered = 0;
            for i in 0..v.n_blocks() {
                let r = v.block_range(i);
                assert_eq!(r.start, covered, "blocks tile the chunk");
                covered = r.end;
                let block = &body[r.start as usize..r.end as usize];
                assert!(!block.is_empty());
                assert!(v.verify_block(i, block), "block {i} of {c:?}");
                assert!(
                    !v.verify_block(i + 1, block),
                    "block {i}'s bytes are not block {}",
                    i + 1
                );
                let mut bad = block.to_vec();
                let at = flip_at % bad.len();
                bad[at] ^= 0x40;
                assert!(!v.verify_block(i, &bad), "flipped byte {at} of block {i}");
                assert!(!v.verify_block(i, &block[..block.len() - 1]), "short block {i}");
            }
            assert_eq!(covered, c.len());
            assert!(!v.verify_block(v.n_blocks(), &[]), "no block past the end");
            // A flipped bit in any one CV, a missing or an extra CV: refused.
            for k in 0..cvs.len() {
                let mut bad = cvs.clone();
                bad[k].0[flip_at % 32] ^= 1;
                assert_eq!(BlockVerifier::new(c, bad).unwrap_err(), BlocksError::Mismatch(c));
            }
            assert!(BlockVerifier::new(c, cvs[..cvs.len() - 1].to_vec()).is_err());
            let mut extra = cvs.clone();
            extra.push(cvs[0]);
            assert!(BlockVerifier::new(c, extra).is_err());
        }
    }

    #[test]
    fn edge_sizes() {
        let b = BLOCK_BYTES as usize;
        for len in [
            1,
            1023,
            1024,
            b - 1,
            b,
            b + 1,
            2 * b,
            3 * b + 7,
            64 * b,
            64 * b + 1,
            100 * b - 3,
        ] {
            check(len, CHUNK_BYTES_DEFAULT, len / 3);
            check(len, CHUNK_BYTES_MIN, len / 2);
            check(len, CHUNK_BYTES_MIN << 2, 7);
        }
    }

    #[test]
    fn a_whole_mib_chunk_has_64_blocks() {
        let bytes = data(3 << 20, 1);
        let m = Manifest::of_bytes(&bytes, CHUNK_BYTES_DEFAULT).unwrap();
        let c = m.chunk(1);
        let cvs = block_cvs(&c, &bytes[1 << 20..2 << 20]);
        assert_eq!(cvs.len(), 64);
        // The CVs of chunk 1 do not vouch for chunk 2's bytes, nor for chunk 1's bytes moved.
        assert!(BlockVerifier::new(m.chunk(2), cvs.clone()).is_err());
        let v = BlockVerifier::new(c, cvs).unwrap();
        assert!(!v.verify_block(0, &bytes[2 << 20..(2 << 20) + BLOCK_BYTES as usize]));
        assert!(!v.verify_block(1, &bytes[1 << 20..(1 << 20) + BLOCK_BYTES as usize]));
    }

    #[test]
    fn a_lone_small_chunk_is_verified_as_the_root() {
        let bytes = data(5000, 2);
        let m = Manifest::of_bytes(&bytes, CHUNK_BYTES_DEFAULT).unwrap();
        let c = m.chunk(0);
        assert!(c.is_root());
        let cvs = block_cvs(&c, &bytes);
        assert_eq!(cvs, [m.file_id().0]);
        assert!(BlockVerifier::new(c, cvs).unwrap().verify_block(0, &bytes));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_size_and_chunking(len in 1usize..(600 * 1024), shift in 0u32..7, flip in any::<usize>()) {
            check(len, CHUNK_BYTES_MIN << shift, flip);
        }
    }
}
