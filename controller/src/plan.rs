//! Placement and repair as pure functions: given what the fleet looks like now, what should
//! happen next. No I/O, no clock (time is an argument), so it is tested against a naive
//! reference in plain unit tests.
//!
//! Rules, for every chunk a file needs:
//! - *present* holders are the online ones plus offline ones still within the grace period
//!   (a node that reboots must not trigger a storm of copies);
//! - fewer than [`REPLICAS_TARGET`] present and at least one online: copy from an online
//!   holder to the online non-holders with the most free space that can take it (never a
//!   full node, never a second copy on one node), counting copies already under way;
//! - more than the target online, none offline and nothing under way: delete the surplus from
//!   the holders with the least free space.
//!
//! And every chunk no file needs any more is deleted from its online holders.

use std::collections::{HashMap, HashSet};

use trove_common::api::REPLICAS_TARGET;
use trove_common::{ChunkId, NodeId};

/// What the planner needs to know of a node.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    pub id: NodeId,
    pub online: bool,
    /// Unix seconds since when the node has been offline (ignored when online).
    pub offline_since: i64,
    pub data_addr: Option<String>,
    /// Bytes it can still take: the lesser of capacity left and disk free.
    pub free_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Replicate {
        chunk: ChunkId,
        to: NodeId,
        from_addr: String,
    },
    Delete {
        chunk: ChunkId,
        from: NodeId,
    },
}

pub struct Fleet<'a> {
    pub nodes: &'a [NodeFacts],
    pub holdings: &'a HashMap<ChunkId, Vec<NodeId>>,
    pub referenced: &'a [ChunkId],
    /// Copies and deletions already ordered and not yet seen through.
    pub in_flight: &'a HashSet<(ChunkId, NodeId)>,
}

/// The result of one planning pass.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Chunks that need an action this pass had no room left for, in the order met.
    pub deferred: Vec<ChunkId>,
    pub under_replicated: u64,
    pub over_replicated: u64,
    pub unavailable: u64,
}

pub fn plan(fleet: &Fleet<'_>, now: i64, grace_s: i64, actions_max: usize) -> Plan {
    let by_id: HashMap<NodeId, &NodeFacts> = fleet.nodes.iter().map(|n| (n.id, n)).collect();
    let mut free: HashMap<NodeId, u64> = fleet.nodes.iter().map(|n| (n.id, n.free_bytes)).collect();
    let mut out = Plan::default();
    let referenced: HashSet<&ChunkId> = fleet.referenced.iter().collect();
    let target = REPLICAS_TARGET as usize;
    let empty = Vec::new();
    let mut rr = 0usize;
    // Looked up per chunk: a scan of every order per chunk is quadratic in a big repair.
    let mut under_way: HashMap<&ChunkId, Vec<NodeId>> = HashMap::new();
    for (c, n) in fleet.in_flight {
        under_way.entry(c).or_default().push(*n);
    }

    for chunk in fleet.referenced {
        let holders = fleet.holdings.get(chunk).unwrap_or(&empty);
        let known: Vec<&NodeFacts> = holders.iter().filter_map(|h| by_id.get(h).copied()).collect();
        let online: Vec<&NodeFacts> = known
            .iter()
            .copied()
            .filter(|n| n.online && n.data_addr.is_some())
            .collect();
        let in_grace = known
            .iter()
            .filter(|n| !n.online && now - n.offline_since < grace_s)
            .count();
        let ordered = under_way.get(chunk).unwrap_or(&empty);
        let copying = ordered.iter().filter(|n| !holders.contains(n)).count();
        let present = online.len() + in_grace + copying;
        if online.is_empty() {
            out.unavailable += 1;
        }
        if online.len() < target {
            out.under_replicated += 1;
        }
        if present < target && !online.is_empty() {
            if out.actions.len() >= actions_max {
                out.deferred.push(*chunk);
                continue;
            }
            let mut candidates: Vec<&NodeFacts> = fleet
                .nodes
                .iter()
                .filter(|n| {
                    n.online
                        && n.data_addr.is_some()
                        && !holders.contains(&n.id)
                        && !ordered.contains(&n.id)
                        && free[&n.id] >= u64::from(chunk.len())
                })
                .collect();
            candidates.sort_by_key(|n| (std::cmp::Reverse(free[&n.id]), n.id));
            for to in candidates.into_iter().take(target - present) {
                if out.actions.len() >= actions_max {
                    // The rest of this chunk's copies come in a later pass.
                    out.deferred.push(*chunk);
                    break;
                }
                let from = online[rr % online.len()];
                rr += 1;
                *free.get_mut(&to.id).expect("every node has a free entry") -= u64::from(chunk.len());
                out.actions.push(Action::Replicate {
                    chunk: *chunk,
                    to: to.id,
                    from_addr: from.data_addr.clone().expect("online holders have addresses"),
                });
            }
        } else if online.len() > target && known.len() == online.len() && copying == 0 {
            out.over_replicated += 1;
            let mut surplus = online.clone();
            surplus.sort_by_key(|n| (free[&n.id], n.id));
            for n in surplus.into_iter().take(online.len() - target) {
                if ordered.contains(&n.id) {
                    continue;
                }
                if out.actions.len() >= actions_max {
                    out.deferred.push(*chunk);
                    break;
                }
                out.actions.push(Action::Delete {
                    chunk: *chunk,
                    from: n.id,
                });
            }
        }
    }

    // Chunks no file needs: free them everywhere they are online.
    let mut orphans: Vec<(&ChunkId, &Vec<NodeId>)> =
        fleet.holdings.iter().filter(|(c, _)| !referenced.contains(c)).collect();
    orphans.sort_by_key(|(c, _)| **c);
    for (chunk, holders) in orphans {
        let ordered = under_way.get(chunk).unwrap_or(&empty);
        for h in holders {
            let Some(n) = by_id.get(h) else { continue };
            if !n.online || ordered.contains(h) {
                continue;
            }
            if out.actions.len() >= actions_max {
                out.deferred.push(*chunk);
                break;
            }
            out.actions.push(Action::Delete {
                chunk: *chunk,
                from: *h,
            });
        }
    }
    out
}

/// Picks a first home for each chunk of a new file: online nodes with room, the most free
/// space first, spreading the file's bytes (each pick lowers that node's projected room).
/// `avoid[i]` (if present) lists nodes chunk `i` must not go to. `None` for a chunk no node
/// can take.
pub fn place_primaries(nodes: &[NodeFacts], chunks: &[ChunkId], avoid: &[HashSet<NodeId>]) -> Vec<Option<NodeId>> {
    let mut free: Vec<(NodeId, u64)> = nodes
        .iter()
        .filter(|n| n.online && n.data_addr.is_some())
        .map(|n| (n.id, n.free_bytes))
        .collect();
    let none = HashSet::new();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let need = u64::from(c.len());
            let avoid = avoid.get(i).unwrap_or(&none);
            let best = free
                .iter_mut()
                .filter(|(id, f)| *f >= need && !avoid.contains(id))
                .max_by_key(|(id, f)| (*f, std::cmp::Reverse(*id)))?;
            best.1 -= need;
            Some(best.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use trove_common::Hash32;

    fn node(i: u8, online: bool, free: u64) -> NodeFacts {
        NodeFacts {
            id: NodeId([i; 16]),
            online,
            offline_since: 0,
            data_addr: Some(format!("127.0.0.1:{}", 7000 + i as u16)),
            free_bytes: free,
        }
    }

    fn chunk(i: u8) -> ChunkId {
        ChunkId::new(Hash32([i; 32]), 0, 1000, true).unwrap()
    }

    fn run(nodes: &[NodeFacts], holdings: &HashMap<ChunkId, Vec<NodeId>>, referenced: &[ChunkId], now: i64) -> Plan {
        let in_flight = HashSet::new();
        plan(
            &Fleet {
                nodes,
                holdings,
                referenced,
                in_flight: &in_flight,
            },
            now,
            60,
            1000,
        )
    }

    #[test]
    fn one_copy_becomes_three_on_the_roomiest_nodes() {
        let nodes = [
            node(1, true, 10_000),
            node(2, true, 50_000),
            node(3, true, 40_000),
            node(4, true, 900),
        ];
        let holdings = HashMap::from([(chunk(1), vec![NodeId([1; 16])])]);
        let p = run(&nodes, &holdings, &[chunk(1)], 0);
        let targets: Vec<NodeId> = p
            .actions
            .iter()
            .map(|a| match a {
                Action::Replicate { to, .. } => *to,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![NodeId([2; 16]), NodeId([3; 16])],
            "node 4 is too full to take 1000 bytes"
        );
    }

    #[test]
    fn offline_holders_count_until_grace_runs_out() {
        let mut nodes = vec![
            node(1, true, 1 << 20),
            node(2, true, 1 << 20),
            node(3, false, 1 << 20),
            node(4, true, 1 << 20),
        ];
        nodes[2].offline_since = 100;
        let holdings = HashMap::from([(chunk(1), vec![NodeId([1; 16]), NodeId([2; 16]), NodeId([3; 16])])]);
        assert!(
            run(&nodes, &holdings, &[chunk(1)], 150).actions.is_empty(),
            "within grace"
        );
        let p = run(&nodes, &holdings, &[chunk(1)], 161);
        assert!(matches!(p.actions[..], [Action::Replicate { to, .. }] if to == NodeId([4; 16])));
    }

    #[test]
    fn surplus_is_trimmed_from_the_fullest_once_everyone_is_back() {
        let nodes = [
            node(1, true, 10),
            node(2, true, 20),
            node(3, true, 30),
            node(4, true, 5),
        ];
        let all: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        let holdings = HashMap::from([(chunk(1), all)]);
        let p = run(&nodes, &holdings, &[chunk(1)], 0);
        assert_eq!(
            p.actions,
            vec![Action::Delete {
                chunk: chunk(1),
                from: NodeId([4; 16])
            }]
        );
    }

    #[test]
    fn orphans_are_freed_and_unavailable_chunks_counted() {
        let nodes = [node(1, true, 1 << 20), node(2, false, 1 << 20)];
        let holdings = HashMap::from([(chunk(9), vec![NodeId([1; 16]), NodeId([2; 16])])]);
        let p = run(&nodes, &holdings, &[chunk(1)], 0);
        assert_eq!(
            p.actions,
            vec![Action::Delete {
                chunk: chunk(9),
                from: NodeId([1; 16])
            }]
        );
        assert_eq!(p.unavailable, 1);
    }

    #[test]
    fn work_over_the_cap_is_deferred_and_still_counted() {
        let nodes: Vec<NodeFacts> = (1..=4).map(|i| node(i, true, 1 << 20)).collect();
        let referenced: Vec<ChunkId> = (1..=5).map(chunk).collect();
        let holdings: HashMap<ChunkId, Vec<NodeId>> = referenced.iter().map(|c| (*c, vec![NodeId([1; 16])])).collect();
        let in_flight = HashSet::new();
        let fleet = Fleet {
            nodes: &nodes,
            holdings: &holdings,
            referenced: &referenced,
            in_flight: &in_flight,
        };
        let p = plan(&fleet, 0, 60, 3);
        // Two copies each: chunk 1 fits, chunk 2 gets one of its two, the rest wait.
        assert_eq!(p.actions.len(), 3);
        assert_eq!(p.deferred, referenced[1..].to_vec());
        assert_eq!(
            p.under_replicated, 5,
            "counts cover every chunk, not just those acted on"
        );
    }

    #[test]
    fn primaries_spread_by_free_space_and_skip_full_nodes() {
        let nodes = [
            node(1, true, 3000),
            node(2, true, 2000),
            node(3, false, 1 << 30),
            node(4, true, 500),
        ];
        let chunks: Vec<ChunkId> = (1..=6).map(chunk).collect();
        let got = place_primaries(&nodes, &chunks, &[]);
        let n = |i| Some(NodeId([i; 16]));
        // Ties go to the lower ID; node 4 (500 bytes free) can never take a 1000-byte chunk.
        assert_eq!(got, vec![n(1), n(1), n(2), n(1), n(2), None]);
        let avoid = [HashSet::from([NodeId([1; 16])])];
        assert_eq!(
            place_primaries(&nodes, &chunks[..1], &avoid),
            vec![n(2)],
            "a node about to delete the chunk"
        );
    }

    proptest! {
        /// Against a naive reference: after applying the plan (copies succeed), every chunk
        /// with an online holder has min(target, eligible nodes) distinct online holders, and
        /// no node ever holds two copies or is sent more than it has room for.
        #[test]
        fn repair_reaches_target(n_nodes in 1usize..8, seeds in proptest::collection::vec((0u8..255, 0u8..255), 1..20)) {
            let nodes: Vec<NodeFacts> = (0..n_nodes).map(|i| node(i as u8, true, 1 << 20)).collect();
            let mut holdings: HashMap<ChunkId, Vec<NodeId>> = HashMap::new();
            let referenced: Vec<ChunkId> = seeds.iter().enumerate().map(|(i, _)| chunk(i as u8)).collect();
            for (i, (a, b)) in seeds.iter().enumerate() {
                let mut h = vec![NodeId([a % n_nodes as u8; 16])];
                if b % 3 == 0 { h.push(NodeId([b % n_nodes as u8; 16])); }
                h.dedup();
                holdings.insert(chunk(i as u8), h);
            }
            let p = run(&nodes, &holdings, &referenced, 0);
            let mut after = holdings.clone();
            for a in &p.actions {
                if let Action::Replicate { chunk, to, .. } = a {
                    let h = after.get_mut(chunk).unwrap();
                    prop_assert!(!h.contains(to), "second copy on one node");
                    h.push(*to);
                }
            }
            for c in &referenced {
                let want = (REPLICAS_TARGET as usize).min(n_nodes).max(holdings[c].len());
                prop_assert_eq!(after[c].len(), want);
            }
        }
    }
}
