//! The data-plane protocol, version 1: what travels between clients and appliances.
//!
//! ```text
//! connection  := client_hello server_hello frame*
//! client_hello:= "TROVE\0" version:u16le                       (8 bytes)
//! server_hello:= "TROVE\0" version:u16le node_id:[u8;16]       (24 bytes)
//! frame       := header_len:u32le header:[u8; header_len] body
//! header      := postcard(Request) | postcard(Response)
//! body        := raw bytes, exactly `body_len()` of the header (0 for most messages)
//! ```
//!
//! A server whose version differs answers with its own hello and closes; the client reports
//! the mismatch. Requests carry a `req` number chosen by the client and may be pipelined; the
//! server answers each in order with the same `req`. Chunk bytes travel raw after a header so
//! a node can send them straight from its page cache.
//!
//! Decoding checks every length against a named limit in [`crate::limits`] *before*
//! allocating, and semantic rules (ranges inside their chunk, list lengths) before returning:
//! a decoded message is a valid message. This module does no I/O.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::blocks::n_blocks;
use crate::grant::{Grant, InventoryTicket};
use crate::id::{ChunkId, Hash32, NodeId};
use crate::limits::{
    BLOCK_BYTES, CHUNK_BLOCKS_MAX, ERROR_MESSAGE_BYTES_MAX, HAS_CHUNKS_MAX, HEADER_BYTES_MAX, INVENTORY_PAGE_MAX,
    LABEL_BYTES_MAX,
};

pub const PROTOCOL_VERSION: u16 = 1;
pub const MAGIC: [u8; 6] = *b"TROVE\0";
pub const CLIENT_HELLO_BYTES: usize = 8;
pub const SERVER_HELLO_BYTES: usize = 24;
/// The length prefix in front of every header.
pub const LEN_PREFIX_BYTES: usize = 4;

/// A byte range `start..end` inside one chunk; never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "(u32, u32)", into = "(u32, u32)")]
pub struct ByteRange {
    start: u32,
    end: u32,
}

impl ByteRange {
    pub fn new(start: u32, end: u32) -> Result<ByteRange, DecodeError> {
        if start >= end {
            return Err(DecodeError::BadRange { start, end });
        }
        Ok(ByteRange { start, end })
    }
    pub fn start(&self) -> u32 {
        self.start
    }
    pub fn end(&self) -> u32 {
        self.end
    }
    pub fn len(&self) -> u32 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl TryFrom<(u32, u32)> for ByteRange {
    type Error = DecodeError;
    fn try_from((start, end): (u32, u32)) -> Result<Self, Self::Error> {
        ByteRange::new(start, end)
    }
}

impl From<ByteRange> for (u32, u32) {
    fn from(r: ByteRange) -> (u32, u32) {
        (r.start, r.end)
    }
}

/// What a client asks of an appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Send a chunk, or `range` of it. Answered by [`Response::Chunk`] and the bytes.
    Get {
        req: u32,
        chunk: ChunkId,
        range: Option<ByteRange>,
    },
    /// Store a chunk; its `len` raw bytes follow the header. Needs a grant for this chunk.
    /// The grant is optional on the wire so that a missing one gets a clear error.
    Put {
        req: u32,
        chunk: ChunkId,
        grant: Option<Grant>,
    },
    /// Which of these chunks do you hold? Answered by [`Response::Has`], one flag each.
    Has { req: u32, chunks: Vec<ChunkId> },
    /// List held chunks in ID order, after `after`. Needs the controller's ticket.
    Inventory {
        req: u32,
        ticket: InventoryTicket,
        after: Option<ChunkId>,
        limit: u16,
    },
    /// Counters and capacity.
    Stats { req: u32 },
    /// Send blocks `from_block..` of a chunk with the chaining values of all its blocks, so
    /// the receiver can verify each block as it arrives (`crate::blocks`). Answered by
    /// [`Response::Blocks`] and the bytes. Added after v1 shipped, at the end of the enum so
    /// no other variant's encoding moved; a node that predates it fails to decode it and
    /// closes the connection (or answers an error): ask such a node with `Get`.
    GetBlocks { req: u32, chunk: ChunkId, from_block: u32 },
}

impl Request {
    pub fn req(&self) -> u32 {
        match self {
            Request::Get { req, .. }
            | Request::Put { req, .. }
            | Request::Has { req, .. }
            | Request::Inventory { req, .. }
            | Request::Stats { req }
            | Request::GetBlocks { req, .. } => *req,
        }
    }

    /// How many raw bytes follow this header.
    pub fn body_len(&self) -> u32 {
        match self {
            Request::Put { chunk, .. } => chunk.len(),
            _ => 0,
        }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Request::Get {
                chunk, range: Some(r), ..
            } if r.end > chunk.len() => Err(DecodeError::RangeOutsideChunk {
                end: r.end,
                len: chunk.len(),
            }),
            Request::GetBlocks { chunk, from_block, .. } if *from_block >= n_blocks(chunk.len()) => {
                Err(DecodeError::BlockOutsideChunk {
                    block: *from_block,
                    n_blocks: n_blocks(chunk.len()),
                })
            }
            Request::Has { chunks, .. } if chunks.len() > HAS_CHUNKS_MAX => Err(DecodeError::TooMany {
                what: "chunks in Has",
                got: chunks.len(),
                max: HAS_CHUNKS_MAX,
            }),
            Request::Inventory { limit, .. } if *limit == 0 || *limit > INVENTORY_PAGE_MAX => {
                Err(DecodeError::TooMany {
                    what: "inventory limit",
                    got: *limit as usize,
                    max: INVENTORY_PAGE_MAX as usize,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Why a request failed, in a form a program can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    /// The bytes sent do not hash to the chunk ID.
    HashMismatch,
    GrantMissing,
    GrantInvalid,
    GrantExpired,
    /// The node's configured capacity would be exceeded.
    CapacityFull,
    /// The disk itself is (nearly) full.
    DiskFull,
    Unauthorized,
    Internal,
}

/// Counters and capacity of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub node_id: NodeId,
    pub version: String,
    pub chunks: u64,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub disk_free_bytes: u64,
    pub quarantined: u64,
    pub uptime_s: u64,
    pub bytes_served: u64,
    pub bytes_stored: u64,
}

/// What an appliance answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `range` of the chunk follows as raw bytes.
    Chunk {
        req: u32,
        range: ByteRange,
    },
    Stored {
        req: u32,
    },
    Has {
        req: u32,
        have: Vec<bool>,
    },
    /// One page of the inventory; `more` when asking again after the last ID gives more.
    Inventory {
        req: u32,
        chunks: Vec<ChunkId>,
        more: bool,
    },
    Stats {
        req: u32,
        stats: NodeStats,
    },
    Error {
        req: u32,
        code: ErrorCode,
        message: String,
    },
    /// The answer to [`Request::GetBlocks`]: the chaining values of every block of the
    /// chunk, then `range` of the chunk (from the first asked block's start to the chunk's
    /// end) as raw bytes. `range.end` is the chunk's length, so `cvs` has one value per
    /// block of it.
    Blocks {
        req: u32,
        range: ByteRange,
        cvs: Vec<Hash32>,
    },
}

impl Response {
    pub fn req(&self) -> u32 {
        match self {
            Response::Chunk { req, .. }
            | Response::Stored { req }
            | Response::Has { req, .. }
            | Response::Inventory { req, .. }
            | Response::Stats { req, .. }
            | Response::Error { req, .. }
            | Response::Blocks { req, .. } => *req,
        }
    }

    pub fn body_len(&self) -> u32 {
        match self {
            Response::Chunk { range, .. } | Response::Blocks { range, .. } => range.len(),
            _ => 0,
        }
    }

    /// An error response whose message is cut to the limit (on a character boundary).
    pub fn error(req: u32, code: ErrorCode, message: impl Into<String>) -> Response {
        let mut message = message.into();
        if message.len() > ERROR_MESSAGE_BYTES_MAX {
            let mut cut = ERROR_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Response::Error { req, code, message }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Response::Has { have, .. } if have.len() > HAS_CHUNKS_MAX => Err(DecodeError::TooMany {
                what: "flags in Has",
                got: have.len(),
                max: HAS_CHUNKS_MAX,
            }),
            Response::Inventory { chunks, .. } if chunks.len() > INVENTORY_PAGE_MAX as usize => {
                Err(DecodeError::TooMany {
                    what: "inventory page",
                    got: chunks.len(),
                    max: INVENTORY_PAGE_MAX as usize,
                })
            }
            Response::Error { message, .. } if message.len() > ERROR_MESSAGE_BYTES_MAX => Err(DecodeError::TooMany {
                what: "error message bytes",
                got: message.len(),
                max: ERROR_MESSAGE_BYTES_MAX,
            }),
            Response::Stats { stats, .. } if stats.version.len() > LABEL_BYTES_MAX => Err(DecodeError::TooMany {
                what: "version bytes",
                got: stats.version.len(),
                max: LABEL_BYTES_MAX,
            }),
            Response::Blocks { cvs, .. } if cvs.len() > CHUNK_BLOCKS_MAX => Err(DecodeError::TooMany {
                what: "block chaining values",
                got: cvs.len(),
                max: CHUNK_BLOCKS_MAX,
            }),
            Response::Blocks { range, cvs, .. }
                if !range.start().is_multiple_of(BLOCK_BYTES) || cvs.len() != n_blocks(range.end()) as usize =>
            {
                Err(DecodeError::BlocksShape {
                    start: range.start(),
                    end: range.end(),
                    n_cvs: cvs.len(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Why bytes from a peer were refused. Any of these closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a Trove peer (bad magic)")]
    BadMagic,
    #[error("peer speaks protocol v{theirs}, we speak v{ours}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("header of {0} bytes is over the {max} byte limit", max = HEADER_BYTES_MAX)]
    HeaderTooLong(u32),
    #[error("empty header")]
    HeaderEmpty,
    #[error("malformed header: {0}")]
    Malformed(postcard::Error),
    #[error("{0} trailing bytes after the header")]
    Trailing(usize),
    #[error("empty byte range {start}..{end}")]
    BadRange { start: u32, end: u32 },
    #[error("byte range ends at {end}, past the chunk's {len} bytes")]
    RangeOutsideChunk { end: u32, len: u32 },
    #[error("{got} {what}, at most {max} allowed")]
    TooMany { what: &'static str, got: usize, max: usize },
    #[error("block {block} asked of a chunk of {n_blocks} blocks")]
    BlockOutsideChunk { block: u32, n_blocks: u32 },
    #[error("blocks reply of bytes {start}..{end} with {n_cvs} chaining values")]
    BlocksShape { start: u32, end: u32, n_cvs: usize },
}

pub fn client_hello() -> [u8; CLIENT_HELLO_BYTES] {
    let mut b = [0u8; CLIENT_HELLO_BYTES];
    b[..6].copy_from_slice(&MAGIC);
    b[6..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b
}

/// The version a client asks for (the caller decides whether it is acceptable).
pub fn decode_client_hello(b: &[u8; CLIENT_HELLO_BYTES]) -> Result<u16, DecodeError> {
    if b[..6] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    Ok(u16::from_le_bytes([b[6], b[7]]))
}

pub fn server_hello(node: NodeId) -> [u8; SERVER_HELLO_BYTES] {
    let mut b = [0u8; SERVER_HELLO_BYTES];
    b[..8].copy_from_slice(&client_hello());
    b[8..].copy_from_slice(&node.0);
    b
}

/// The server's node ID, if it speaks our version.
pub fn decode_server_hello(b: &[u8; SERVER_HELLO_BYTES]) -> Result<NodeId, DecodeError> {
    if b[..6] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let theirs = u16::from_le_bytes([b[6], b[7]]);
    if theirs != PROTOCOL_VERSION {
        return Err(DecodeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[8..]);
    Ok(NodeId(id))
}

/// Checks a length prefix before anything is allocated for the header behind it.
pub fn decode_len_prefix(b: [u8; LEN_PREFIX_BYTES]) -> Result<u32, DecodeError> {
    match u32::from_le_bytes(b) {
        0 => Err(DecodeError::HeaderEmpty),
        n if n > HEADER_BYTES_MAX => Err(DecodeError::HeaderTooLong(n)),
        n => Ok(n),
    }
}

/// Appends a length-prefixed header for `msg` to `out`.
fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX_BYTES]);
    // Invariant: every message we build is far below the header limit (compile-time checks in
    // `limits`), and serializing into a Vec cannot fail.
    let mut out_vec = core::mem::take(out);
    out_vec = postcard::to_extend(msg, out_vec).expect("serializing into a Vec cannot fail");
    *out = out_vec;
    let n = (out.len() - at - LEN_PREFIX_BYTES) as u32;
    debug_assert!(n <= HEADER_BYTES_MAX);
    out[at..at + LEN_PREFIX_BYTES].copy_from_slice(&n.to_le_bytes());
}

pub fn encode_request(msg: &Request, out: &mut Vec<u8>) {
    encode(msg, out)
}

pub fn encode_response(msg: &Response, out: &mut Vec<u8>) {
    encode(msg, out)
}

fn decode_exact<'a, T: Deserialize<'a>>(header: &'a [u8]) -> Result<T, DecodeError> {
    if header.len() > HEADER_BYTES_MAX as usize {
        return Err(DecodeError::HeaderTooLong(header.len() as u32));
    }
    let (msg, rest) = postcard::take_from_bytes(header).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Decodes and validates one request header (without its length prefix).
pub fn decode_request(header: &[u8]) -> Result<Request, DecodeError> {
    let r: Request = decode_exact(header)?;
    r.validate()?;
    Ok(r)
}

/// Decodes and validates one response header (without its length prefix).
pub fn decode_response(header: &[u8]) -> Result<Response, DecodeError> {
    let r: Response = decode_exact(header)?;
    r.validate()?;
    Ok(r)
}

/// A request, its body, and how many bytes of the buffer they took.
pub type SplitFrame<'a> = (Request, &'a [u8], usize);

/// Splits one whole request frame off the front of `buf`: `None` if more bytes are needed,
/// else the request, its body and the bytes consumed. For fuzzing and byte-level tests;
/// the async driver reads frames piece by piece instead.
pub fn split_request_frame(buf: &[u8]) -> Result<Option<SplitFrame<'_>>, DecodeError> {
    let Some(prefix) = buf.get(..LEN_PREFIX_BYTES) else {
        return Ok(None);
    };
    let n = decode_len_prefix(prefix.try_into().expect("4 bytes"))? as usize;
    let Some(header) = buf.get(LEN_PREFIX_BYTES..LEN_PREFIX_BYTES + n) else {
        return Ok(None);
    };
    let req = decode_request(header)?;
    let body_at = LEN_PREFIX_BYTES + n;
    let body_end = body_at + req.body_len() as usize;
    let Some(body) = buf.get(body_at..body_end) else {
        return Ok(None);
    };
    Ok(Some((req, body, body_end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::SigningKey;
    use crate::hex;
    use crate::id::Hash32;
    use alloc::vec;

    fn chunk() -> ChunkId {
        ChunkId::new(Hash32([0xaa; 32]), 1 << 20, 1 << 20, false).unwrap()
    }

    fn key() -> SigningKey {
        SigningKey::from_secret(&[7; 32])
    }

    /// Pins a message's exact bytes: a changed byte here is a protocol version bump.
    fn golden_req(msg: Request, expected_hex: &str) {
        let mut out = Vec::new();
        encode_request(&msg, &mut out);
        assert_eq!(hex::encode(&out), expected_hex, "{msg:?}");
        let framed = [out.clone(), vec![0; msg.body_len() as usize]].concat();
        let (back, body, used) = split_request_frame(&framed).unwrap().unwrap();
        assert_eq!(back, msg);
        assert_eq!(body.len(), msg.body_len() as usize);
        assert_eq!(used, out.len() + body.len());
    }

    fn golden_resp(msg: Response, expected_hex: &str) {
        let mut out = Vec::new();
        encode_response(&msg, &mut out);
        assert_eq!(hex::encode(&out), expected_hex.replace(' ', ""), "{msg:?}");
        assert_eq!(decode_response(&out[4..]).unwrap(), msg);
    }

    // hash (32 raw bytes), offset 1 MiB (varint 808040), len 1 MiB (808040), root false (00).
    const CHUNK_HEX: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa80804080804000";

    #[test]
    fn golden_hellos() {
        assert_eq!(hex::encode(&client_hello()), "54524f56450001 00".replace(' ', ""));
        assert_eq!(
            hex::encode(&server_hello(NodeId([1; 16]))),
            "54524f564500010001010101010101010101010101010101"
        );
        assert_eq!(decode_server_hello(&server_hello(NodeId([1; 16]))), Ok(NodeId([1; 16])));
        let mut v2 = server_hello(NodeId([1; 16]));
        v2[6] = 2;
        assert_eq!(
            decode_server_hello(&v2),
            Err(DecodeError::VersionMismatch { ours: 1, theirs: 2 })
        );
        assert_eq!(decode_client_hello(b"GET / HT"), Err(DecodeError::BadMagic));
    }

    #[test]
    fn golden_requests() {
        golden_req(
            Request::Get {
                req: 1,
                chunk: chunk(),
                range: None,
            },
            &format!("2a000000 00 01 {CHUNK_HEX} 00").replace(' ', ""),
        );
        golden_req(
            Request::Get {
                req: 300,
                chunk: chunk(),
                range: Some(ByteRange::new(5, 70000).unwrap()),
            },
            &format!("2f000000 00 ac02 {CHUNK_HEX} 01 05 f0a204").replace(' ', ""),
        );
        golden_req(
            Request::Put {
                req: 2,
                chunk: chunk(),
                grant: None,
            },
            &format!("2a000000 01 02 {CHUNK_HEX} 00").replace(' ', ""),
        );
        golden_req(
            Request::Has {
                req: 3,
                chunks: vec![chunk()],
            },
            &format!("2a000000 02 03 01 {CHUNK_HEX}").replace(' ', ""),
        );
        golden_req(Request::Stats { req: 4 }, "020000000404");
        // Variant 5, after every v1 request: their bytes above are unchanged.
        golden_req(
            Request::GetBlocks {
                req: 7,
                chunk: chunk(),
                from_block: 63,
            },
            &format!("2a000000 05 07 {CHUNK_HEX} 3f").replace(' ', ""),
        );
        golden_req(
            Request::GetBlocks {
                req: 8,
                chunk: chunk(),
                from_block: 0,
            },
            &format!("2a000000 05 08 {CHUNK_HEX} 00").replace(' ', ""),
        );
    }

    #[test]
    fn golden_put_with_grant_and_inventory() {
        // ed25519 signatures are deterministic, so these bytes are stable too.
        let grant = key().grant(chunk(), 1_700_000_000);
        let mut out = Vec::new();
        encode_request(
            &Request::Put {
                req: 9,
                chunk: chunk(),
                grant: Some(grant.clone()),
            },
            &mut out,
        );
        // prefix, Put, req, chunk, Some, grant chunk, expiry varint, sig length, sig
        assert_eq!(out.len(), 4 + 1 + 1 + 39 + 1 + 39 + 5 + 1 + 64);
        assert_eq!(
            decode_request(&out[4..]).unwrap(),
            Request::Put {
                req: 9,
                chunk: chunk(),
                grant: Some(grant)
            }
        );
        let ticket = key().inventory_ticket(NodeId([3; 16]), 1_700_000_000);
        let msg = Request::Inventory {
            req: 5,
            ticket,
            after: Some(chunk()),
            limit: 1000,
        };
        let mut out = Vec::new();
        encode_request(&msg, &mut out);
        assert_eq!(&hex::encode(&out[..8]), "8200000003050303");
        assert_eq!(decode_request(&out[4..]).unwrap(), msg);
    }

    #[test]
    fn golden_responses() {
        golden_resp(
            Response::Chunk {
                req: 1,
                range: ByteRange::new(0, 1 << 20).unwrap(),
            },
            "06000000 00 01 00 808040",
        );
        golden_resp(Response::Stored { req: 2 }, "020000000102");
        golden_resp(
            Response::Has {
                req: 3,
                have: vec![true, false],
            },
            "05000000020302 0100",
        );
        golden_resp(
            Response::Inventory {
                req: 4,
                chunks: vec![],
                more: false,
            },
            "0400000003040000",
        );
        golden_resp(Response::error(5, ErrorCode::NotFound, "no"), "0600000005050102 6e6f");
        golden_resp(
            Response::Stats {
                req: 6,
                stats: NodeStats {
                    node_id: NodeId([2; 16]),
                    version: "0.1".into(),
                    chunks: 1,
                    used_bytes: 2,
                    capacity_bytes: 3,
                    disk_free_bytes: 4,
                    quarantined: 5,
                    uptime_s: 6,
                    bytes_served: 7,
                    bytes_stored: 8,
                },
            },
            "1e000000 04 06 02020202020202020202020202020202 03302e31 0102030405060708",
        );
        // Variant 6: req, range (start varint 16384 = 808001, end 20000 = a09c01), 2 CVs.
        let cv = |b: u8| Hash32([b; 32]);
        let msg = Response::Blocks {
            req: 9,
            range: ByteRange::new(BLOCK_BYTES, 20_000).unwrap(),
            cvs: vec![cv(0x11), cv(0x22)],
        };
        assert_eq!(msg.body_len(), 20_000 - BLOCK_BYTES);
        golden_resp(
            msg,
            &format!(
                "49000000 06 09 808001 a09c01 02 {} {}",
                "11".repeat(32),
                "22".repeat(32)
            ),
        );
    }

    #[test]
    fn block_messages_are_checked_on_decode() {
        // A block past the chunk's last one (1 MiB = 64 blocks).
        let past = Request::GetBlocks {
            req: 1,
            chunk: chunk(),
            from_block: 64,
        };
        let mut out = Vec::new();
        encode_request(&past, &mut out);
        assert_eq!(
            decode_request(&out[4..]),
            Err(DecodeError::BlockOutsideChunk {
                block: 64,
                n_blocks: 64
            })
        );
        let resp = |start: u32, end: u32, n: usize| {
            let mut out = Vec::new();
            encode_response(
                &Response::Blocks {
                    req: 1,
                    range: ByteRange::new(start, end).unwrap(),
                    cvs: vec![Hash32([0; 32]); n],
                },
                &mut out,
            );
            decode_response(&out[4..])
        };
        assert!(resp(0, 1 << 20, 64).is_ok());
        assert!(resp(63 * BLOCK_BYTES, 1 << 20, 64).is_ok());
        assert!(resp(0, 1, 1).is_ok());
        // Too few or too many CVs for the chunk's length, or a start inside a block.
        assert!(matches!(resp(0, 1 << 20, 63), Err(DecodeError::BlocksShape { .. })));
        assert!(matches!(resp(0, 1 << 20, 65), Err(DecodeError::BlocksShape { .. })));
        assert!(matches!(resp(100, 1 << 20, 64), Err(DecodeError::BlocksShape { .. })));
        // More CVs than the largest chunk has: refused by count first.
        assert!(matches!(
            resp(0, 1 << 20, CHUNK_BLOCKS_MAX + 1),
            Err(DecodeError::TooMany { .. })
        ));
    }

    #[test]
    fn hostile_bytes_are_refused_not_panicked_on() {
        assert_eq!(decode_len_prefix(0u32.to_le_bytes()), Err(DecodeError::HeaderEmpty));
        assert_eq!(
            decode_len_prefix(u32::MAX.to_le_bytes()),
            Err(DecodeError::HeaderTooLong(u32::MAX))
        );
        assert!(matches!(decode_request(&[0xff, 0xff]), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            decode_request(&[0x04, 0x01, 0x00]),
            Err(DecodeError::Trailing(1))
        ));
        // A Has claiming 2^32 entries in a few bytes must fail without allocating them.
        assert!(decode_request(&[0x02, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        // An empty range, and a range past its chunk.
        let mut out = Vec::new();
        encode_request(
            &Request::Get {
                req: 1,
                chunk: chunk(),
                range: None,
            },
            &mut out,
        );
        let mut bad = out[4..].to_vec();
        *bad.last_mut().unwrap() = 1;
        bad.extend_from_slice(&[5, 5]);
        assert!(decode_request(&bad).is_err());
        let far = Request::Get {
            req: 1,
            chunk: chunk(),
            range: Some(ByteRange::new(0, (1 << 20) + 1).unwrap()),
        };
        let mut out = Vec::new();
        encode_request(&far, &mut out);
        assert_eq!(
            decode_request(&out[4..]),
            Err(DecodeError::RangeOutsideChunk {
                end: (1 << 20) + 1,
                len: 1 << 20
            })
        );
        // A chunk ID that cannot exist (offset not a multiple of 1 KiB) does not decode.
        let mut out = Vec::new();
        encode_request(
            &Request::Get {
                req: 1,
                chunk: chunk(),
                range: None,
            },
            &mut out,
        );
        let mut misaligned = out[4..].to_vec();
        misaligned[35] = 0x81; // offset varint low byte: 1 MiB + 1
        assert!(decode_request(&misaligned).is_err());
    }

    #[test]
    fn non_minimal_varints_decode_to_the_same_message() {
        // Pins what the wire_request fuzzer found: postcard accepts `99 00` for 25, so a
        // message can arrive in more than one encoding. Harmless (nothing signs wire bytes;
        // grants sign fixed-width fields), but it means re-encoding is not byte-identical.
        assert_eq!(decode_request(&[0x04, 0x99, 0x00]), Ok(Request::Stats { req: 25 }));
        assert_eq!(decode_request(&[0x04, 0x19]), Ok(Request::Stats { req: 25 }));
    }

    #[test]
    fn split_waits_for_whole_frames() {
        let mut out = Vec::new();
        encode_request(
            &Request::Put {
                req: 2,
                chunk: chunk(),
                grant: None,
            },
            &mut out,
        );
        assert_eq!(split_request_frame(&out), Ok(None), "body still missing");
        assert_eq!(split_request_frame(&out[..3]), Ok(None));
    }
}
