//! The async (tokio) side of the wire protocol: frame I/O and a client for one appliance.
//!
//! This is a thin layer: all parsing and validation lives in [`crate::wire`]. A [`Client`]
//! can be used request-by-request, or split into a [`ClientWriter`] and a [`ClientReader`]
//! to pipeline many requests on one connection (the downloader does this).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::blocks::BlockVerifier;
use crate::grant::{Grant, InventoryTicket};
use crate::id::{ChunkId, NodeId};
use crate::wire::{self, ByteRange, DecodeError, ErrorCode, NodeStats, Request, Response};

/// How long connecting and the handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Write buffer: big enough to keep a LAN link busy with 1 MiB chunks.
pub const IO_BUFFER_BYTES: usize = 256 * 1024;
/// Read buffer: room for a reply header and a little more, and no more. Whatever the
/// buffer holds past a header is a body's start, copied a second time out of it; bodies
/// are read straight from the socket into their vector ([`read_body`]). At 256 KiB, a
/// quarter of every 1 MiB chunk went through the buffer: 4% of the gateway's CPU. A header
/// bigger than this (an inventory page) is read past the buffer in one call.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Decode(#[from] DecodeError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer closed the connection")]
    Closed,
    #[error("node refused: {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("unexpected reply to request {req}: {got}")]
    Unexpected { req: u32, got: &'static str },
    #[error("chunk {0:?} failed verification")]
    HashMismatch(ChunkId),
}

impl NetError {
    /// True when the node itself is fine but refused this request (retrying elsewhere helps,
    /// retrying the same node does not).
    pub fn is_remote_refusal(&self) -> bool {
        matches!(self, NetError::Remote { .. } | NetError::HashMismatch(_))
    }
}

fn name_of(r: &Response) -> &'static str {
    match r {
        Response::Chunk { .. } => "Chunk",
        Response::Stored { .. } => "Stored",
        Response::Has { .. } => "Has",
        Response::Inventory { .. } => "Inventory",
        Response::Stats { .. } => "Stats",
        Response::Error { .. } => "Error",
        Response::Blocks { .. } => "Blocks",
    }
}

/// Reads one length-prefixed header into `buf`. `Ok(false)` on a clean end of stream
/// before the first byte of a frame.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<bool, NetError> {
    let mut prefix = [0u8; wire::LEN_PREFIX_BYTES];
    let mut got = 0;
    while got < prefix.len() {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(false) } else { Err(NetError::Closed) };
        }
        got += n;
    }
    let n = wire::decode_len_prefix(prefix)? as usize;
    buf.clear();
    buf.resize(n, 0);
    r.read_exact(buf).await.map_err(eof_is_closed)?;
    Ok(true)
}

/// Reads an `n`-byte body into `body` (cleared first): what the reader has buffered, then
/// the rest straight from the socket into the vector's spare room. A chunk body is thus
/// copied once, never zeroed first, and never passed through the read buffer (which a
/// plain `read_exact` does for the last buffer's worth of every body): on the gateway's
/// streaming path those two passes cost as much as a third of a copy per chunk. Both ends
/// read bodies this way (troved its puts).
pub async fn read_body<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    n: usize,
    body: &mut Vec<u8>,
) -> Result<(), NetError> {
    body.clear();
    body.reserve_exact(n);
    let buffered = r.buffer();
    let k = buffered.len().min(n);
    body.extend_from_slice(&buffered[..k]);
    r.consume(k);
    let rest = n - k;
    if rest > 0 {
        // The limit keeps the read inside this body whatever room `body` has spare.
        let got = r.get_mut().take(rest as u64).read_to_end(body).await?;
        if got < rest {
            return Err(NetError::Closed);
        }
    }
    Ok(())
}

fn eof_is_closed(e: std::io::Error) -> NetError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        NetError::Closed
    } else {
        NetError::Io(e)
    }
}

/// Connects to an appliance and does the handshake.
pub async fn connect(addr: SocketAddr) -> Result<Client, NetError> {
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let (rd, wr) = stream.into_split();
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, wr);
        writer.write_all(&wire::client_hello()).await?;
        writer.flush().await?;
        let mut hello = [0u8; wire::SERVER_HELLO_BYTES];
        reader.read_exact(&mut hello).await.map_err(eof_is_closed)?;
        let node = wire::decode_server_hello(&hello)?;
        Ok(Client {
            reader: ClientReader {
                inner: reader,
                header: Vec::new(),
            },
            writer: ClientWriter {
                inner: writer,
                next_req: 1,
                scratch: Vec::new(),
            },
            node,
            addr,
            local,
        })
    })
    .await
    .map_err(|_| NetError::Timeout(CONNECT_TIMEOUT))?
}

/// One connection to one appliance, used one request at a time.
pub struct Client {
    reader: ClientReader,
    writer: ClientWriter,
    node: NodeId,
    addr: SocketAddr,
    local: SocketAddr,
}

impl Client {
    pub fn node_id(&self) -> NodeId {
        self.node
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// This end of the connection (the appliance sees the connection as coming from here).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Splits the connection for pipelining: write requests on one half while reading
    /// replies on the other.
    pub fn split(self) -> (ClientReader, ClientWriter) {
        (self.reader, self.writer)
    }

    /// Fetches a whole chunk and verifies it before returning it.
    pub async fn get_chunk(&mut self, chunk: ChunkId) -> Result<Vec<u8>, NetError> {
        let req = self.writer.send_get(chunk, None).await?;
        self.writer.flush().await?;
        let mut body = Vec::new();
        self.reader.recv_chunk(req, &mut body).await?;
        if !chunk.verify(&body) {
            return Err(NetError::HashMismatch(chunk));
        }
        Ok(body)
    }

    /// Fetches part of a chunk. The bytes are NOT verified: a part of a chunk cannot be
    /// checked against its hash. Use only where the caller verifies by other means.
    pub async fn danger_unverified_get_range(&mut self, chunk: ChunkId, range: ByteRange) -> Result<Vec<u8>, NetError> {
        let req = self.writer.send_get(chunk, Some(range)).await?;
        self.writer.flush().await?;
        let mut body = Vec::new();
        self.reader.recv_chunk(req, &mut body).await?;
        Ok(body)
    }

    /// Asks for blocks `from_block..` of a chunk and reads the reply's header: the block
    /// chaining values, checked against the chunk ID. The blocks themselves are then read,
    /// each verified, with [`Client::read_block`], in order, up to the chunk's last; the
    /// connection is in step again only after the last one (drop it otherwise).
    pub async fn get_blocks(&mut self, chunk: ChunkId, from_block: u32) -> Result<BlockVerifier, NetError> {
        let req = self.writer.send_get_blocks(chunk, from_block).await?;
        self.writer.flush().await?;
        self.reader.recv_blocks(req, chunk, from_block).await
    }

    /// Reads block `block_idx` (the next one in the reply) into `buf` and verifies it.
    pub async fn read_block(&mut self, v: &BlockVerifier, block_idx: u32, buf: &mut Vec<u8>) -> Result<(), NetError> {
        self.reader.read_block(v, block_idx, buf).await
    }

    /// Fetches blocks `blocks` of a chunk with a plain ranged `Get` and verifies each against
    /// the block chaining values in `v` (which were checked against the chunk ID): for the
    /// blocks in front of a [`Client::get_blocks`] reply.
    pub async fn get_verified_blocks(
        &mut self,
        v: &BlockVerifier,
        blocks: core::ops::Range<u32>,
    ) -> Result<Vec<u8>, NetError> {
        let chunk = v.chunk();
        let (start, end) = (
            v.block_range(blocks.start).start,
            v.block_range(blocks.end.saturating_sub(1)).end,
        );
        let range = ByteRange::new(start, end).map_err(NetError::Decode)?;
        let req = self.writer.send_get(chunk, Some(range)).await?;
        self.writer.flush().await?;
        let mut body = Vec::new();
        self.reader.recv_chunk(req, &mut body).await?;
        if body.len() != range.len() as usize {
            return Err(NetError::HashMismatch(chunk));
        }
        for i in blocks {
            let r = v.block_range(i);
            if !v.verify_block(i, &body[(r.start - start) as usize..(r.end - start) as usize]) {
                return Err(NetError::HashMismatch(chunk));
            }
        }
        Ok(body)
    }

    pub async fn put_chunk(&mut self, chunk: ChunkId, grant: Option<&Grant>, bytes: &[u8]) -> Result<(), NetError> {
        let req = self.writer.send_put(chunk, grant, bytes).await?;
        self.writer.flush().await?;
        self.reader.recv_stored(req).await
    }

    pub async fn has(&mut self, chunks: &[ChunkId]) -> Result<Vec<bool>, NetError> {
        let req = self
            .writer
            .send(|req| Request::Has {
                req,
                chunks: chunks.to_vec(),
            })
            .await?;
        self.writer.flush().await?;
        match self.reader.recv(req).await? {
            Response::Has { have, .. } if have.len() == chunks.len() => Ok(have),
            other => Err(unexpected(req, other)),
        }
    }

    pub async fn inventory(
        &mut self,
        ticket: &InventoryTicket,
        after: Option<ChunkId>,
        limit: u16,
    ) -> Result<(Vec<ChunkId>, bool), NetError> {
        let req = self
            .writer
            .send(|req| Request::Inventory {
                req,
                ticket: ticket.clone(),
                after,
                limit,
            })
            .await?;
        self.writer.flush().await?;
        match self.reader.recv(req).await? {
            Response::Inventory { chunks, more, .. } => Ok((chunks, more)),
            other => Err(unexpected(req, other)),
        }
    }

    pub async fn stats(&mut self) -> Result<NodeStats, NetError> {
        let req = self.writer.send(|req| Request::Stats { req }).await?;
        self.writer.flush().await?;
        match self.reader.recv(req).await? {
            Response::Stats { stats, .. } => Ok(stats),
            other => Err(unexpected(req, other)),
        }
    }
}

fn unexpected(req: u32, got: Response) -> NetError {
    match got {
        Response::Error { code, message, .. } => NetError::Remote { code, message },
        other => NetError::Unexpected {
            req,
            got: name_of(&other),
        },
    }
}

/// The sending half of a connection. Requests are buffered until [`ClientWriter::flush`].
pub struct ClientWriter {
    inner: BufWriter<OwnedWriteHalf>,
    next_req: u32,
    scratch: Vec<u8>,
}

impl ClientWriter {
    async fn send(&mut self, build: impl FnOnce(u32) -> Request) -> Result<u32, NetError> {
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        self.scratch.clear();
        wire::encode_request(&build(req), &mut self.scratch);
        self.inner.write_all(&self.scratch).await?;
        Ok(req)
    }

    /// Queues a get; returns its request number.
    pub async fn send_get(&mut self, chunk: ChunkId, range: Option<ByteRange>) -> Result<u32, NetError> {
        self.send(|req| Request::Get { req, chunk, range }).await
    }

    /// Queues a request for blocks `from_block..` of a chunk; returns its request number.
    pub async fn send_get_blocks(&mut self, chunk: ChunkId, from_block: u32) -> Result<u32, NetError> {
        self.send(|req| Request::GetBlocks { req, chunk, from_block }).await
    }

    /// Queues a put with its body; `bytes` must be the chunk's bytes.
    pub async fn send_put(&mut self, chunk: ChunkId, grant: Option<&Grant>, bytes: &[u8]) -> Result<u32, NetError> {
        debug_assert_eq!(bytes.len(), chunk.len() as usize);
        let req = self
            .send(|req| Request::Put {
                req,
                chunk,
                grant: grant.cloned(),
            })
            .await?;
        self.inner.write_all(bytes).await?;
        Ok(req)
    }

    pub async fn flush(&mut self) -> Result<(), NetError> {
        self.inner.flush().await?;
        Ok(())
    }
}

/// The receiving half of a connection.
pub struct ClientReader {
    inner: BufReader<OwnedReadHalf>,
    header: Vec<u8>,
}

impl ClientReader {
    /// Reads the next reply; any body is read into `body` (cleared first).
    pub async fn recv_any(&mut self, body: &mut Vec<u8>) -> Result<Response, NetError> {
        if !read_header(&mut self.inner, &mut self.header).await? {
            return Err(NetError::Closed);
        }
        let resp = wire::decode_response(&self.header)?;
        read_body(&mut self.inner, resp.body_len() as usize, body).await?;
        Ok(resp)
    }

    async fn recv(&mut self, req: u32) -> Result<Response, NetError> {
        let mut body = Vec::new();
        let resp = self.recv_any(&mut body).await?;
        if resp.req() != req {
            return Err(NetError::Unexpected {
                req,
                got: "reply to another request",
            });
        }
        Ok(resp)
    }

    /// Reads the reply to get `req` into `body` (not verified here).
    pub async fn recv_chunk(&mut self, req: u32, body: &mut Vec<u8>) -> Result<(), NetError> {
        let resp = self.recv_any(body).await?;
        match resp {
            Response::Chunk { req: r, .. } if r == req => Ok(()),
            other if other.req() != req => Err(NetError::Unexpected {
                req,
                got: "reply to another request",
            }),
            other => Err(unexpected(req, other)),
        }
    }

    /// Reads the header of the reply to get-blocks `req` and checks its block chaining values
    /// against `chunk`; its body (the blocks) is left for [`ClientReader::read_block`].
    pub async fn recv_blocks(&mut self, req: u32, chunk: ChunkId, from_block: u32) -> Result<BlockVerifier, NetError> {
        if !read_header(&mut self.inner, &mut self.header).await? {
            return Err(NetError::Closed);
        }
        match wire::decode_response(&self.header)? {
            Response::Blocks { req: r, range, cvs } if r == req => {
                let v = BlockVerifier::new(chunk, cvs).map_err(|_| NetError::HashMismatch(chunk))?;
                if range.end() != chunk.len() || range.start() != v.block_range(from_block).start {
                    return Err(NetError::Unexpected {
                        req,
                        got: "Blocks for other bytes",
                    });
                }
                Ok(v)
            }
            Response::Error { req: r, code, message } if r == req => Err(NetError::Remote { code, message }),
            other => Err(NetError::Unexpected {
                req,
                got: if other.req() == req {
                    name_of(&other)
                } else {
                    "reply to another request"
                },
            }),
        }
    }

    /// Reads the next block of a get-blocks reply, `block_idx`, into `buf` (cleared first)
    /// and verifies it; a block that does not verify is [`NetError::HashMismatch`].
    pub async fn read_block(&mut self, v: &BlockVerifier, block_idx: u32, buf: &mut Vec<u8>) -> Result<(), NetError> {
        let r = v.block_range(block_idx);
        read_body(&mut self.inner, (r.end - r.start) as usize, buf).await?;
        if !v.verify_block(block_idx, buf) {
            return Err(NetError::HashMismatch(v.chunk()));
        }
        Ok(())
    }

    pub async fn recv_stored(&mut self, req: u32) -> Result<(), NetError> {
        match self.recv(req).await? {
            Response::Stored { .. } => Ok(()),
            other => Err(unexpected(req, other)),
        }
    }
}

/// Writes only a response's header; the caller sends its `body_len()` bytes right after
/// (troved does, with `sendfile`).
pub async fn write_response_header<W: AsyncWrite + Unpin>(
    w: &mut W,
    scratch: &mut Vec<u8>,
    resp: &Response,
) -> Result<(), NetError> {
    scratch.clear();
    wire::encode_response(resp, scratch);
    w.write_all(scratch).await?;
    Ok(())
}

/// Writes a response header and its body, if any.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    scratch: &mut Vec<u8>,
    resp: &Response,
    body: &[u8],
) -> Result<(), NetError> {
    debug_assert_eq!(body.len(), resp.body_len() as usize);
    scratch.clear();
    wire::encode_response(resp, scratch);
    w.write_all(scratch).await?;
    if !body.is_empty() {
        w.write_all(body).await?;
    }
    Ok(())
}
