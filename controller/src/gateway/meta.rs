//! The metadata a gateway request needs, kept off the hot path where that is safe.
//!
//! Three things are cached, each with the rule that makes caching it correct:
//!
//! - **What a token may see** ([`Meta::visible`], [`Meta::fresh`]): the (token, file) pair's
//!   answer — whose token it is, and the file as the visibility rule lets that user see it
//!   (manifest, name, kind) — is kept for at most [`VISIBLE_TTL`]. This is the security
//!   rule, so the window is short and the key is the token itself (a hash of it), never the
//!   user alone: a token revoked or logged out, a user disabled, a share turned private or
//!   deleted can each take up to [`VISIBLE_TTL`] to stop a stream that was allowed a moment
//!   before; nothing else changes. A refusal (unknown token, invisible file) is never
//!   cached, so a new share or a new login works at once.
//! - **Which nodes are online, and where** ([`Meta::online`]): for [`NODES_TTL`].
//! - **Who holds a file's chunks** ([`Meta::holders`]): per chunk, for [`HOLDERS_TTL`],
//!   looked up a whole file at a time (up to [`HOLDERS_LOOKUP_CHUNKS_MAX`] chunks), so a
//!   player seeking around a file asks the database once; a copy made later is picked up
//!   after that. Holders that went away meanwhile only cost a failed attempt: the fetcher
//!   then tries the next holder.
//!
//! Every map has a named bound; a full one first drops what expired, then everything.
//! Manifests need no cache of their own beyond the visibility entry: a manifest is immutable
//! (checked against its file ID on decode), so the entry's copy is never stale.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trove_common::{ChunkId, FileId, Manifest, NodeId};

use crate::app::App;

/// How long a (token, file) visibility answer is trusted. At most 1 s by design (see the
/// module docs).
pub const VISIBLE_TTL: Duration = Duration::from_millis(1000);
/// How long the online nodes and their addresses are trusted.
pub const NODES_TTL: Duration = Duration::from_millis(1000);
/// How long a chunk's holders are trusted.
pub const HOLDERS_TTL: Duration = Duration::from_millis(1500);
/// Visibility entries kept at once.
pub const VISIBLE_ENTRIES_MAX: usize = 4096;
/// Chunks whose holders are kept at once (a 64 GiB file of 1 MiB chunks).
pub const HOLDERS_ENTRIES_MAX: usize = 1 << 16;
/// A file of at most this many chunks has all its holders looked up at once; of a larger one,
/// the chunks asked for and this many after them.
pub const HOLDERS_LOOKUP_CHUNKS_MAX: usize = 4096;

const _: () = assert!(HOLDERS_LOOKUP_CHUNKS_MAX <= HOLDERS_ENTRIES_MAX);

const _: () = assert!(VISIBLE_TTL.as_millis() <= 1000, "the visibility window must stay short");

/// A file as one token may see it.
pub struct Visible {
    /// The user the token belongs to.
    pub user_id: i64,
    pub manifest: Arc<Manifest>,
    pub name: String,
    /// The kind of the caller's own share if any, else of the first visible one.
    pub kind: String,
}

type OnlineNodes = Arc<HashMap<NodeId, SocketAddr>>;
/// (token hash, file) → when it was looked up, and what that token may see of it.
type VisibleMap = HashMap<([u8; 32], FileId), (Instant, Arc<Visible>)>;

pub struct Meta {
    visible: Mutex<VisibleMap>,
    nodes: Mutex<Option<(Instant, OnlineNodes)>>,
    holders: Mutex<HashMap<ChunkId, (Instant, Vec<NodeId>)>>,
}

impl Meta {
    pub fn new() -> Meta {
        Meta {
            visible: Mutex::new(HashMap::new()),
            nodes: Mutex::new(None),
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for (`token_key`, `file`) if one was looked up less than [`VISIBLE_TTL`] ago.
    pub fn fresh(&self, token_key: [u8; 32], file: FileId) -> Option<Arc<Visible>> {
        let now = Instant::now();
        let map = self.visible.lock().expect("visible lock");
        let (at, v) = map.get(&(token_key, file))?;
        (now.duration_since(*at) < VISIBLE_TTL).then(|| v.clone())
    }

    /// `file` as user `user_id`, who holds the token behind `token_key`, may see it (`None`
    /// if they may not), from the database; a positive answer is kept for [`Meta::fresh`].
    pub async fn visible(
        &self,
        app: &App,
        token_key: [u8; 32],
        user_id: i64,
        user_name: &str,
        file: FileId,
    ) -> anyhow::Result<Option<Arc<Visible>>> {
        let now = Instant::now();
        let key = (token_key, file);
        let (row, shares) = tokio::try_join!(app.db.visible_file(&file, user_id), app.db.shares_of(&file, user_id))?;
        let Some(row) = row else { return Ok(None) };
        let kind = shares
            .iter()
            .find(|s| s.owner == user_name)
            .or(shares.first())
            .map_or("other", |s| s.kind.as_str())
            .to_owned();
        let v = Arc::new(Visible {
            user_id,
            manifest: Arc::new(row.manifest),
            name: row.name,
            kind,
        });
        let mut map = self.visible.lock().expect("visible lock");
        make_room(&mut map, VISIBLE_ENTRIES_MAX, |(at, _)| {
            now.duration_since(*at) < VISIBLE_TTL
        });
        map.insert(key, (now, v.clone()));
        Ok(Some(v))
    }

    /// The online nodes and their data addresses.
    pub async fn online(&self, app: &App) -> anyhow::Result<OnlineNodes> {
        let now = Instant::now();
        if let Some((at, nodes)) = &*self.nodes.lock().expect("nodes lock")
            && now.duration_since(*at) < NODES_TTL
        {
            return Ok(nodes.clone());
        }
        let online: OnlineNodes = Arc::new(
            app.db
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.state == "online")
                .filter_map(|n| Some((n.id, n.data_addr?.parse().ok()?)))
                .collect(),
        );
        *self.nodes.lock().expect("nodes lock") = Some((now, online.clone()));
        Ok(online)
    }

    /// Who holds each chunk of `span` of the file (online or not), in order. Chunks not looked
    /// up in the last [`HOLDERS_TTL`] go to the database together with the rest of the file
    /// that is not fresh either (see [`HOLDERS_LOOKUP_CHUNKS_MAX`]).
    pub async fn holders(
        &self,
        app: &App,
        manifest: &Manifest,
        span: Range<usize>,
    ) -> anyhow::Result<Vec<Vec<NodeId>>> {
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < HOLDERS_TTL;
        let n = manifest.n_chunks();
        let window = if n <= HOLDERS_LOOKUP_CHUNKS_MAX {
            0..n
        } else {
            span.start..n.min(span.end.max(span.start + HOLDERS_LOOKUP_CHUNKS_MAX))
        };
        let (mut out, stale) = {
            let map = self.holders.lock().expect("holders lock");
            let cached = |c: &ChunkId| map.get(c).filter(|(at, _)| fresh(at)).map(|(_, h)| h.clone());
            let out: Vec<Option<Vec<NodeId>>> = span.clone().map(|i| cached(&manifest.chunk(i))).collect();
            let stale: Vec<ChunkId> = if out.iter().all(Option::is_some) {
                Vec::new()
            } else {
                window
                    .map(|i| manifest.chunk(i))
                    .filter(|c| cached(c).is_none())
                    .collect()
            };
            (out, stale)
        };
        if !stale.is_empty() {
            let mut held = app.db.holdings_of_chunks(&stale).await?;
            for (i, slot) in span.zip(out.iter_mut()) {
                if slot.is_none() {
                    *slot = Some(held.get(&manifest.chunk(i)).cloned().unwrap_or_default());
                }
            }
            let mut map = self.holders.lock().expect("holders lock");
            make_room(&mut map, HOLDERS_ENTRIES_MAX.saturating_sub(stale.len()), |(at, _)| {
                fresh(at)
            });
            for c in &stale {
                if map.len() >= HOLDERS_ENTRIES_MAX {
                    break;
                }
                map.insert(*c, (now, held.remove(c).unwrap_or_default()));
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }
}

/// Keeps `map` under `max` entries before an insert: drops what is no longer `keep`, and if
/// that is not enough, everything.
fn make_room<K, V>(map: &mut HashMap<K, V>, max: usize, keep: impl Fn(&V) -> bool) {
    if map.len() >= max {
        map.retain(|_, v| keep(v));
        if map.len() >= max {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_room_drops_expired_first_then_everything() {
        let mut m: HashMap<u32, bool> = (0..10).map(|i| (i, i % 2 == 0)).collect();
        make_room(&mut m, 10, |fresh| *fresh);
        assert_eq!(m.len(), 5, "the stale half goes");
        make_room(&mut m, 10, |fresh| *fresh);
        assert_eq!(m.len(), 5, "under the bound: nothing goes");
        make_room(&mut m, 3, |fresh| *fresh);
        assert!(m.is_empty(), "all fresh and still over: everything goes");
    }
}
