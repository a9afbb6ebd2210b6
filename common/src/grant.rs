//! Controller-signed permissions that an appliance checks offline.
//!
//! - A [`Grant`] lets its bearer store one chunk on any appliance that trusts the signer,
//!   until it expires.
//! - An [`InventoryTicket`] lets its bearer list one appliance's inventory until it expires:
//!   chunk IDs are read capabilities, so only the controller may enumerate them.
//!
//! Signatures are ed25519 over a domain-separated, fixed-width message (never over postcard
//! bytes, so the signed form stays stable if the wire encoding changes). Checking a grant
//! needs the current time, which the caller passes in: this module never reads the clock.

use core::fmt;

use ed25519_dalek::Signer;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hex::{self, HexError};
use crate::id::{ChunkId, NodeId};

/// The public half of the controller's grant key, as appliances hold it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::NotAPoint)
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks a signature made with [`SigningKey::sign_raw`].
    pub fn verify_raw(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.0
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl core::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_bytes(&hex::decode::<32>(s.trim())?)
    }
}

/// The controller's signing key (also used by tools and tests that act as a controller).
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// From 32 secret bytes; the caller brings the randomness.
    pub fn from_secret(secret: &[u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(secret))
    }
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn grant(&self, chunk: ChunkId, expires_at_s: u64) -> Grant {
        let sig = self.0.sign(&grant_message(&chunk, expires_at_s));
        Grant {
            chunk,
            expires_at_s,
            sig: Sig(sig.to_bytes()),
        }
    }

    /// Signs arbitrary bytes; the caller owns domain separation.
    pub fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    pub fn inventory_ticket(&self, node: NodeId, expires_at_s: u64) -> InventoryTicket {
        let sig = self.0.sign(&ticket_message(&node, expires_at_s));
        InventoryTicket {
            node,
            expires_at_s,
            sig: Sig(sig.to_bytes()),
        }
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("bad key encoding: {0}")]
    Hex(#[from] HexError),
    #[error("not a valid ed25519 public key")]
    NotAPoint,
}

/// Why a grant or ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("expired at {expires_at_s}, now is {now_s}")]
    Expired { expires_at_s: u64, now_s: u64 },
    #[error("signature does not verify with the trusted key")]
    BadSignature,
    #[error("grant is for chunk {granted:?}, not {requested:?}")]
    WrongChunk { granted: ChunkId, requested: ChunkId },
    #[error("ticket is for node {0}, not this one")]
    WrongNode(NodeId),
}

/// Permission to store one chunk until `expires_at_s` (Unix seconds).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub chunk: ChunkId,
    pub expires_at_s: u64,
    sig: Sig,
}

impl Grant {
    pub fn check(&self, key: &PublicKey, now_s: u64) -> Result<(), GrantError> {
        check_sig(key, &grant_message(&self.chunk, self.expires_at_s), &self.sig)?;
        check_expiry(self.expires_at_s, now_s)
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grant({:?} until {})", self.chunk, self.expires_at_s)
    }
}

/// Permission to page through one node's inventory until `expires_at_s` (Unix seconds).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryTicket {
    pub node: NodeId,
    pub expires_at_s: u64,
    sig: Sig,
}

impl InventoryTicket {
    pub fn check(&self, key: &PublicKey, me: NodeId, now_s: u64) -> Result<(), GrantError> {
        check_sig(key, &ticket_message(&self.node, self.expires_at_s), &self.sig)?;
        if self.node != me {
            return Err(GrantError::WrongNode(self.node));
        }
        check_expiry(self.expires_at_s, now_s)
    }
}

impl fmt::Debug for InventoryTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InventoryTicket({} until {})", self.node, self.expires_at_s)
    }
}

fn check_sig(key: &PublicKey, msg: &[u8], sig: &Sig) -> Result<(), GrantError> {
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    // verify_strict refuses the malleable and small-order edge cases plain verify allows.
    key.0.verify_strict(msg, &sig).map_err(|_| GrantError::BadSignature)?;
    Ok(())
}

fn check_expiry(expires_at_s: u64, now_s: u64) -> Result<(), GrantError> {
    if now_s >= expires_at_s {
        return Err(GrantError::Expired { expires_at_s, now_s });
    }
    Ok(())
}

const GRANT_DOMAIN: &[u8; 16] = b"trove/grant/v1\0\0";
const TICKET_DOMAIN: &[u8; 16] = b"trove/invent/v1\0";

fn grant_message(chunk: &ChunkId, expires_at_s: u64) -> [u8; 16 + 32 + 8 + 4 + 1 + 8] {
    let mut m = [0u8; 69];
    m[..16].copy_from_slice(GRANT_DOMAIN);
    m[16..48].copy_from_slice(&chunk.hash().0);
    m[48..56].copy_from_slice(&chunk.offset().to_le_bytes());
    m[56..60].copy_from_slice(&chunk.len().to_le_bytes());
    m[60] = chunk.is_root() as u8;
    m[61..69].copy_from_slice(&expires_at_s.to_le_bytes());
    m
}

fn ticket_message(node: &NodeId, expires_at_s: u64) -> [u8; 16 + 16 + 8] {
    let mut m = [0u8; 40];
    m[..16].copy_from_slice(TICKET_DOMAIN);
    m[16..32].copy_from_slice(&node.0);
    m[32..40].copy_from_slice(&expires_at_s.to_le_bytes());
    m
}

/// A 64-byte signature; serde has no impl for arrays this long, so it travels as bytes.
#[derive(Clone, PartialEq, Eq)]
struct Sig([u8; 64]);

impl Serialize for Sig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sig, D::Error> {
        struct SigVisitor;
        impl Visitor<'_> for SigVisitor {
            type Value = Sig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Sig, E> {
                let arr: [u8; 64] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Sig(arr))
            }
        }
        d.deserialize_bytes(SigVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Hash32;

    fn chunk(n: u8) -> ChunkId {
        ChunkId::new(Hash32([n; 32]), 0, 100, true).unwrap()
    }

    #[test]
    fn grants_verify_only_as_signed() {
        let key = SigningKey::from_secret(&[1; 32]);
        let other = SigningKey::from_secret(&[2; 32]);
        let g = key.grant(chunk(1), 1000);
        assert_eq!(g.check(&key.public(), 999), Ok(()));
        assert_eq!(
            g.check(&key.public(), 1000),
            Err(GrantError::Expired {
                expires_at_s: 1000,
                now_s: 1000
            })
        );
        assert_eq!(g.check(&other.public(), 10), Err(GrantError::BadSignature));
        let mut forged = g.clone();
        forged.chunk = chunk(2);
        assert_eq!(forged.check(&key.public(), 10), Err(GrantError::BadSignature));
        let mut later = g.clone();
        later.expires_at_s = 5000;
        assert_eq!(later.check(&key.public(), 10), Err(GrantError::BadSignature));
    }

    #[test]
    fn tickets_bind_the_node() {
        let key = SigningKey::from_secret(&[1; 32]);
        let t = key.inventory_ticket(NodeId([5; 16]), 100);
        assert_eq!(t.check(&key.public(), NodeId([5; 16]), 1), Ok(()));
        assert_eq!(
            t.check(&key.public(), NodeId([6; 16]), 1),
            Err(GrantError::WrongNode(NodeId([5; 16])))
        );
    }

    #[test]
    fn public_key_text_round_trip() {
        let key = SigningKey::from_secret(&[9; 32]).public();
        let text = alloc::string::ToString::to_string(&key);
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        assert!("zz".parse::<PublicKey>().is_err());
    }
}
