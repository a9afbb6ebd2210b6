//! The control plane's messages: what appliances and the controller say over MQTT.
//!
//! Topics live under [`TOPIC_ROOT`] (`trove/v1`):
//!
//! | topic | from | retained | payload |
//! |---|---|---|---|
//! | `node/<id>/state` | node (and its Last Will) | yes | [`NodeState`] |
//! | `node/<id>/info` | node | yes | [`NodeInfo`] |
//! | `node/<id>/have` | node | no | [`Have`] (deltas with a sequence number) |
//! | `node/<id>/events` | node | no | [`NodeEvent`] |
//! | `node/<id>/transfers` | node, every second while it has data-plane connections | no | [`Transfers`] |
//! | `node/<id>/cmd` | controller | no | [`Command`] |
//! | `controller/state` | controller | yes | [`ControllerState`] |
//!
//! Every payload is `postcard(message) ‖ mac`, where `mac` is BLAKE3 keyed with a key derived
//! from the node's enrollment secret, over the topic and the message. Only the node and the
//! controller know that secret, so a message under `node/<id>/` that does not verify is
//! dropped whatever the broker let through (rumqttd has no topic ACLs; Mosquitto's are a
//! second wall, not the only one). Binding the topic into the MAC stops a message from being
//! replayed under another topic; sequence numbers, boot IDs and command IDs stop replays in
//! time. `controller/state` is signed with the controller's ed25519 key instead, since every
//! node must check it.
//!
//! A node joins with a [`JoinToken`], made by the controller: it carries the broker address,
//! the node's ID and secret (also its broker password) and the controller's public key.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::grant::PublicKey;
use crate::hex;
use crate::id::{ChunkId, NodeId};

pub const TOPIC_ROOT: &str = "trove/v1";
/// The most chunk IDs in one `Have` delta (keeps a message well under broker limits).
pub const HAVE_BATCH_MAX: usize = 2048;
/// The largest payload either side accepts.
pub const PAYLOAD_BYTES_MAX: usize = 128 * 1024;
pub const MAC_BYTES: usize = 32;
/// Commands older than this are refused (with the command ID, this bounds replays).
pub const COMMAND_TTL_S: u64 = 120;
/// The most peers one [`Transfers`] message lists (an appliance meters at most this many
/// connections at once; the controller refuses longer lists).
pub const TRANSFER_PEERS_MAX: usize = 32;
/// The longest socket address text in a [`Transfers`] message (`[v6%scope]:port` fits).
pub const SOCKET_ADDR_TEXT_MAX: usize = 64;
const MAC_CONTEXT: &str = "trove/v1 2026-11 node message mac";
const CONTROLLER_STATE_DOMAIN: &[u8] = b"trove/v1 controller state\0";

const _: () = assert!(HAVE_BATCH_MAX * crate::limits::CHUNK_ID_ENCODED_BYTES_MAX + 64 <= PAYLOAD_BYTES_MAX);
// A full `Transfers`: per peer two addresses, two varint u64s, a tag and lengths.
const _: () = assert!(TRANSFER_PEERS_MAX * (2 * SOCKET_ADDR_TEXT_MAX + 32) + 64 <= PAYLOAD_BYTES_MAX);

/// The topic `trove/v1/node/<id>/<leaf>`.
pub fn node_topic(node: &NodeId, leaf: &str) -> String {
    alloc::format!("{TOPIC_ROOT}/node/{node}/{leaf}")
}

pub fn controller_state_topic() -> String {
    alloc::format!("{TOPIC_ROOT}/controller/state")
}

/// Splits `trove/v1/node/<id>/<leaf>` into the node and the leaf.
pub fn parse_node_topic(topic: &str) -> Option<(NodeId, &str)> {
    let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix("/node/")?;
    let (id, leaf) = rest.split_once('/')?;
    if leaf.contains('/') {
        return None;
    }
    Some((id.parse().ok()?, leaf))
}

/// A node's enrollment secret: its MQTT password and the root of its MAC key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSecret(pub [u8; 32]);

impl NodeSecret {
    /// The MQTT password form.
    pub fn password(&self) -> String {
        hex::encode(&self.0)
    }

    fn mac_key(&self) -> [u8; 32] {
        blake3::derive_key(MAC_CONTEXT, &self.0)
    }

    fn mac(&self, topic: &str, body: &[u8]) -> [u8; MAC_BYTES] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key());
        h.update(&(topic.len() as u32).to_le_bytes());
        h.update(topic.as_bytes());
        h.update(body);
        *h.finalize().as_bytes()
    }

    /// `postcard(msg) ‖ mac` for `topic`.
    pub fn seal<T: Serialize>(&self, topic: &str, msg: &T) -> Vec<u8> {
        let mut out = postcard::to_allocvec(msg).expect("serializing into a Vec cannot fail");
        let mac = self.mac(topic, &out);
        out.extend_from_slice(&mac);
        out
    }

    /// Checks the MAC, then decodes. Nothing is decoded from a payload that does not verify.
    pub fn open<'a, T: Deserialize<'a>>(&self, topic: &str, payload: &'a [u8]) -> Result<T, ControlError> {
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(ControlError::TooLarge(payload.len()));
        }
        let Some(split) = payload.len().checked_sub(MAC_BYTES) else {
            return Err(ControlError::Truncated);
        };
        let (body, mac) = payload.split_at(split);
        let expected = self.mac(topic, body);
        if !constant_time_eq(&expected, mac) {
            return Err(ControlError::BadMac);
        }
        let (msg, rest) = postcard::take_from_bytes(body).map_err(ControlError::Malformed)?;
        if !rest.is_empty() {
            return Err(ControlError::Trailing(rest.len()));
        }
        Ok(msg)
    }
}

impl core::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a control message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("payload of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("payload shorter than its MAC")]
    Truncated,
    #[error("MAC does not verify: not from this node, or altered")]
    BadMac,
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("bad signature on controller state")]
    BadSignature,
    #[error("not a join token: {0}")]
    BadToken(&'static str),
}

/// Retained on `node/<id>/state`. The Last Will carries `Offline` for the same boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Online { boot_id: u64 },
    Offline { boot_id: u64 },
}

/// Retained on `node/<id>/info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub boot_id: u64,
    /// Where the node serves chunks (wire protocol v1), as others should dial it.
    pub data_addr: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub disk_free_bytes: u64,
    pub chunks: u64,
    pub version: String,
    pub board: String,
}

/// On `node/<id>/have`: what changed since the previous `Have` of the same boot.
///
/// `seq` starts at 1 for every boot and grows by one per message; a gap (or a boot the
/// controller has not seen) makes the controller pull the full inventory over TCP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    pub boot_id: u64,
    pub seq: u64,
    pub added: Vec<ChunkId>,
    pub removed: Vec<ChunkId>,
}

/// On `node/<id>/events`: the outcome of a command, for repair progress and the fleet view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    pub boot_id: u64,
    pub command_id: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Replicated { chunk: ChunkId, from: String, bytes: u32 },
    Deleted { chunk: ChunkId },
    Failed { message: String },
}

/// On `node/<id>/transfers` (not retained): what moved over the node's data-plane
/// connections during the last `interval_ms`, per peer socket address. Sent every second
/// while the node has connections open, and once more (with no peers) when the last one
/// closed. For the fleet view only: nothing is decided on it, and a lost message costs a
/// blink of the picture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfers {
    pub boot_id: u64,
    /// How long the counters below ran.
    pub interval_ms: u32,
    /// At most [`TRANSFER_PEERS_MAX`]; only peers that moved bytes in the interval.
    pub peers: Vec<PeerTraffic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTraffic {
    /// The peer's socket address (`ip:port`): for an accepted connection the address it came
    /// from; for a dialed one the address dialed (another node's data address).
    pub peer: String,
    pub link: Link,
    /// Chunk bytes this node sent to the peer in the interval.
    pub sent_bytes: u64,
    /// Chunk bytes this node received from the peer in the interval.
    pub received_bytes: u64,
}

/// Who opened a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Link {
    /// The peer connected to this node's chunk server (a client, the controller, or another
    /// node fetching a chunk for repair).
    Accepted,
    /// This node dialed the peer (a replication source). `local` is this end's socket
    /// address: the peer reports the same connection as `Accepted` from `local`, which is how
    /// the controller counts it once.
    Dialed { local: String },
}

/// On `node/<id>/cmd`, sealed with that node's secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Strictly increasing per controller; a node ignores an ID it has already passed.
    pub id: u64,
    pub issued_at_s: u64,
    pub order: Order,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// Fetch `chunk` from the node serving at `from`, verify it, store it.
    Replicate { chunk: ChunkId, from: String },
    /// Stop holding `chunk`.
    Delete { chunk: ChunkId },
    /// Publish state, info and a fresh `Have` sequence (the controller lost track).
    Reannounce,
}

/// Retained on `controller/state`, signed by the controller's key. When a node sees a new
/// `boot_id` here it re-announces, so no state depends on the broker keeping retained
/// messages across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub boot_id: u64,
    pub online: bool,
}

impl ControllerState {
    pub fn sign(&self, key: &crate::grant::SigningKey) -> Vec<u8> {
        let body = postcard::to_allocvec(self).expect("serializing into a Vec cannot fail");
        let sig = key.sign_raw(&[CONTROLLER_STATE_DOMAIN, &body].concat());
        [body, sig.to_vec()].concat()
    }

    pub fn verify(payload: &[u8], key: &PublicKey) -> Result<ControllerState, ControlError> {
        let split = payload.len().checked_sub(64).ok_or(ControlError::Truncated)?;
        let (body, sig) = payload.split_at(split);
        let sig: [u8; 64] = sig.try_into().expect("64 bytes");
        if !key.verify_raw(&[CONTROLLER_STATE_DOMAIN, body].concat(), &sig) {
            return Err(ControlError::BadSignature);
        }
        postcard::from_bytes(body).map_err(ControlError::Malformed)
    }
}

/// Everything a new appliance needs to join, as one copyable string: `trove1-<hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// `host:port` of the MQTT broker.
    pub broker: String,
    pub node_id: NodeId,
    pub secret: NodeSecret,
    /// The controller's grant-signing key, which the node will trust.
    pub controller_key: [u8; 32],
}

const TOKEN_PREFIX: &str = "trove1-";

impl JoinToken {
    pub fn encode(&self) -> String {
        let body = postcard::to_allocvec(self).expect("serializing into a Vec cannot fail");
        alloc::format!("{TOKEN_PREFIX}{}", hex::encode(&body))
    }

    pub fn decode(text: &str) -> Result<JoinToken, ControlError> {
        let hexed = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(ControlError::BadToken("missing trove1- prefix"))?;
        if hexed.len() > 2048 {
            return Err(ControlError::BadToken("too long"));
        }
        let bytes = hex::decode_vec(hexed).map_err(|_| ControlError::BadToken("not hex"))?;
        let token: JoinToken = postcard::from_bytes(&bytes).map_err(|_| ControlError::BadToken("malformed"))?;
        PublicKey::from_bytes(&token.controller_key).map_err(|_| ControlError::BadToken("bad controller key"))?;
        Ok(token)
    }

    pub fn controller_key(&self) -> PublicKey {
        PublicKey::from_bytes(&self.controller_key).expect("checked in decode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::SigningKey;
    use crate::id::Hash32;

    fn secret() -> NodeSecret {
        NodeSecret([4; 32])
    }

    #[test]
    fn sealed_messages_verify_only_on_their_topic_and_unaltered() {
        let node = NodeId([1; 16]);
        let topic = node_topic(&node, "have");
        let chunk = ChunkId::new(Hash32([9; 32]), 0, 10, true).unwrap();
        let msg = Have {
            boot_id: 7,
            seq: 1,
            added: alloc::vec![chunk],
            removed: alloc::vec![],
        };
        let sealed = secret().seal(&topic, &msg);
        assert_eq!(secret().open::<Have>(&topic, &sealed), Ok(msg));
        assert_eq!(
            secret().open::<Have>(&node_topic(&node, "info"), &sealed),
            Err(ControlError::BadMac)
        );
        assert_eq!(
            NodeSecret([5; 32]).open::<Have>(&topic, &sealed),
            Err(ControlError::BadMac)
        );
        let mut altered = sealed.clone();
        altered[2] ^= 1;
        assert_eq!(secret().open::<Have>(&topic, &altered), Err(ControlError::BadMac));
        assert_eq!(
            secret().open::<Have>(&topic, &sealed[..sealed.len() - 1]),
            Err(ControlError::BadMac)
        );
        assert_eq!(secret().open::<Have>(&topic, b"x"), Err(ControlError::Truncated));
    }

    #[test]
    fn transfers_encoding_is_pinned() {
        // A changed byte here is a control-protocol change: bump the topic version.
        let msg = Transfers {
            boot_id: 0x0102,
            interval_ms: 1000,
            peers: alloc::vec![
                PeerTraffic {
                    peer: "10.0.0.5:4000".into(),
                    link: Link::Accepted,
                    sent_bytes: 300,
                    received_bytes: 0,
                },
                PeerTraffic {
                    peer: "10.0.0.6:7070".into(),
                    link: Link::Dialed {
                        local: "10.0.0.7:5".into(),
                    },
                    sent_bytes: 0,
                    received_bytes: 1,
                },
            ],
        };
        let bytes = postcard::to_allocvec(&msg).unwrap();
        let mut want = alloc::vec![0x82, 0x02, 0xe8, 0x07, 0x02];
        want.push(13);
        want.extend_from_slice(b"10.0.0.5:4000");
        want.extend_from_slice(&[0x00, 0xac, 0x02, 0x00]);
        want.push(13);
        want.extend_from_slice(b"10.0.0.6:7070");
        want.extend_from_slice(&[0x01, 10]);
        want.extend_from_slice(b"10.0.0.7:5");
        want.extend_from_slice(&[0x00, 0x01]);
        assert_eq!(bytes, want);
        let sealed = secret().seal("t", &msg);
        assert_eq!(secret().open::<Transfers>("t", &sealed), Ok(msg));
    }

    #[test]
    fn topics_parse() {
        let node = NodeId([0xab; 16]);
        assert_eq!(parse_node_topic(&node_topic(&node, "state")), Some((node, "state")));
        assert_eq!(parse_node_topic("trove/v1/node/zz/state"), None);
        assert_eq!(
            parse_node_topic("trove/v1/node/abababababababababababababababab/a/b"),
            None
        );
    }

    #[test]
    fn join_token_round_trip() {
        let key = SigningKey::from_secret(&[3; 32]);
        let t = JoinToken {
            broker: "192.168.1.10:1883".into(),
            node_id: NodeId([2; 16]),
            secret: secret(),
            controller_key: key.public().to_bytes(),
        };
        let text = t.encode();
        assert!(text.starts_with("trove1-"));
        assert_eq!(JoinToken::decode(&text), Ok(t));
        assert!(JoinToken::decode("trove1-zz").is_err());
        assert!(JoinToken::decode("hello").is_err());
    }

    #[test]
    fn controller_state_is_signed() {
        let key = SigningKey::from_secret(&[3; 32]);
        let s = ControllerState {
            boot_id: 5,
            online: true,
        };
        let signed = s.sign(&key);
        assert_eq!(ControllerState::verify(&signed, &key.public()), Ok(s));
        let other = SigningKey::from_secret(&[4; 32]);
        assert_eq!(
            ControllerState::verify(&signed, &other.public()),
            Err(ControlError::BadSignature)
        );
    }
}
