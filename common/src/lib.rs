//! `trove-common`: what every Trove program agrees on.
//!
//! - [`id`] and [`manifest`]: content addressing. A file's ID is the plain BLAKE3 hash of its
//!   bytes; a manifest lists the BLAKE3 chaining values of its fixed-size chunks, and is
//!   checked against the file ID before anyone trusts it.
//! - [`grant`]: controller-signed permissions (write a chunk, list an inventory) that an
//!   appliance checks offline.
//! - [`blocks`]: the chaining values of a chunk's blocks, so part of a chunk verifies alone.
//! - [`wire`]: the data-plane protocol v1 (handshake, frames, messages), sans-IO.
//! - [`schedule`]: the download scheduler, a sans-IO state machine.
//! - `net` and `download` (feature `tokio`): the thin async drivers around the two above.
//! - `kind` (feature `kind`): a shared file's kind from its first bytes and name.
//!
//! Everything except `net` and `download` compiles without `std` (with `alloc`), so that a
//! microcontroller-class appliance can share the protocol and addressing code. Those modules
//! never open a socket, read the clock or touch a file: time comes in as an argument.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod api;
pub mod blocks;
pub mod control;
pub mod dates;
pub mod grant;
pub mod hex;
pub mod id;
pub mod limits;
pub mod manifest;
pub mod schedule;
pub mod units;
pub mod wire;

#[cfg(feature = "tokio")]
pub mod download;
#[cfg(feature = "kind")]
pub mod kind;
#[cfg(feature = "tokio")]
pub mod net;

pub use grant::{Grant, InventoryTicket, PublicKey};
pub use id::{ChunkId, FileId, Hash32, NodeId};
pub use manifest::{Manifest, ManifestBuilder};
