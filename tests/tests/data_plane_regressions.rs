//! Regression tests for troved bugs found while writing `data_plane.rs` (each failed against
//! commit 02888a6; see the comment on each test for the bug it pins).

use std::io::{Read, Write};
use std::net::TcpStream;

use trove_common::limits::{CHUNK_BYTES_DEFAULT, CHUNK_BYTES_MAX};
use trove_common::wire::{self, Request};
use trove_common::{ChunkId, Hash32, Manifest};
use trove_tests::*;

#[test]
fn unauthenticated_put_bodies_do_not_pin_memory() {
    // Pins: a peer with no grant cannot make troved hold 16 MiB per connection (server.rs reads a Put body before checking its grant).
    let key = TestKey::new("open-bug-put-body");
    let node = Node::start(&key);
    let before = node.rss_bytes();
    let mut held = Vec::new();
    for i in 0..60u8 {
        let chunk = ChunkId::new(Hash32([i; 32]), 0, CHUNK_BYTES_MAX, false).expect("a 16 MiB chunk ID");
        let mut frame = Vec::new();
        wire::encode_request(
            &Request::Put {
                req: 1,
                chunk,
                grant: None,
            },
            &mut frame,
        );
        let mut s = TcpStream::connect(node.addr()).expect("connect");
        s.write_all(&[&wire::client_hello()[..], &frame, &[0u8; 10]].concat())
            .expect("send");
        let mut hello = [0u8; wire::SERVER_HELLO_BYTES];
        s.read_exact(&mut hello).expect("server hello");
        held.push(s);
    }
    // Each connection is past its handshake; its task reads the Put header right after. No
    // event marks "header read", so watch the bound over a short window: it must always hold.
    let deadline = Deadline::secs(1);
    while !deadline.expired() {
        let rss = node.rss_bytes();
        assert!(
            rss < before + 64 * MIB,
            "60 grant-less 16 MiB puts, each stalled after 10 body bytes, hold {} MiB of troved memory",
            (rss - before) / MIB
        );
        std::thread::sleep(POLL_STEP);
    }
}

#[tokio::test]
async fn concurrent_puts_of_one_chunk_count_it_once() {
    // Pins: two clients storing the same chunk at once (the dedup case) leave chunks and used_bytes counting it once (store.rs put: contains-then-reserve race).
    let key = TestKey::new("open-bug-dup-put");
    let node = Node::start(&key);
    let data = random_bytes(4 * MIB as usize, 3);
    let m = Manifest::of_bytes(&data, CHUNK_BYTES_DEFAULT).expect("manifest");
    for chunk in m.chunks() {
        let mut puts = Vec::new();
        for _ in 0..4 {
            let addr = node.addr();
            let bytes = data[chunk.offset() as usize..][..chunk.len() as usize].to_vec();
            let grant = key.grant(chunk);
            puts.push(tokio::spawn(async move {
                let mut c = trove_common::net::connect(addr).await.expect("connect");
                c.put_chunk(chunk, Some(&grant), &bytes).await.expect("put");
            }));
        }
        for p in puts {
            p.await.expect("put task");
        }
    }
    let stats = node.client().await.stats().await.expect("stats");
    assert_eq!(node.chunk_files().len(), 4);
    assert_eq!(
        (stats.chunks, stats.used_bytes),
        (4, 4 * MIB),
        "each chunk is held once, so it is counted once"
    );
}
