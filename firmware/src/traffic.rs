//! Per-connection byte counters for the fleet view's live picture of transfers.
//!
//! A fixed table of [`TRAFFIC_PEERS_MAX`] slots, allocated once with the node: a connection
//! (accepted by the server, or dialed for a replication) takes a slot for its life through a
//! [`Meter`] and adds the chunk bytes it moves to the slot's atomic counters, so counting
//! costs a relaxed add and no lock. Once a second the agent [`Traffic::take`]s the counters
//! (zeroing them) and publishes them as `node/<id>/transfers`. A slot whose connection has
//! closed is freed only by `take`, so the bytes of its last second are still reported.
//!
//! When every slot is taken, further connections go unmetered (they work as ever; the
//! picture misses them). Nothing here decides anything: it is for people to look at. A
//! standalone node (no agent, so nobody takes the counters) never turns metering on.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::limits::TRAFFIC_PEERS_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The other end: where an accepted connection came from, or the address dialed.
    pub addr: SocketAddr,
    /// For a connection this node dialed, its own end.
    pub dialed_from: Option<SocketAddr>,
}

#[derive(Clone, Copy)]
enum Slot {
    Free,
    Open(Peer),
    /// Closed since the last `take`: reported once more, then freed.
    Closed(Peer),
}

/// The table. Lives in `server::Node`.
pub struct Traffic {
    /// Off until someone will [`Traffic::take`] (the agent turns it on).
    enabled: AtomicBool,
    slots: Mutex<[Slot; TRAFFIC_PEERS_MAX]>,
    sent: [AtomicU64; TRAFFIC_PEERS_MAX],
    received: [AtomicU64; TRAFFIC_PEERS_MAX],
}

/// What moved since the previous [`Traffic::take`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Connections still open now (whether or not they moved bytes).
    pub open: usize,
    /// Per connection that moved bytes: (peer, sent, received).
    pub moved: Vec<(Peer, u64, u64)>,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            enabled: AtomicBool::new(false),
            slots: Mutex::new([Slot::Free; TRAFFIC_PEERS_MAX]),
            sent: std::array::from_fn(|_| AtomicU64::new(0)),
            received: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Traffic {
    /// Starts metering new connections. Call only if something will [`Traffic::take`]
    /// regularly: closed connections keep their slots until then.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// A meter for a new connection; an inert one when metering is off or the table is full.
    pub fn open(&self, peer: Peer) -> Meter<'_> {
        if !self.enabled.load(Ordering::Acquire) {
            return Meter {
                traffic: self,
                idx: None,
            };
        }
        let mut slots = self.slots.lock().expect("traffic lock");
        let idx = slots.iter().position(|s| matches!(s, Slot::Free));
        if let Some(i) = idx {
            slots[i] = Slot::Open(peer);
        }
        Meter { traffic: self, idx }
    }

    /// The counters since the last call, zeroed; frees the slots of closed connections.
    pub fn take(&self) -> Taken {
        let mut slots = self.slots.lock().expect("traffic lock");
        let mut taken = Taken::default();
        for (i, slot) in slots.iter_mut().enumerate() {
            let peer = match *slot {
                Slot::Free => continue,
                Slot::Open(p) => {
                    taken.open += 1;
                    p
                }
                Slot::Closed(p) => {
                    *slot = Slot::Free;
                    p
                }
            };
            let sent = self.sent[i].swap(0, Ordering::Relaxed);
            let received = self.received[i].swap(0, Ordering::Relaxed);
            if sent > 0 || received > 0 {
                taken.moved.push((peer, sent, received));
            }
        }
        taken
    }
}

/// One connection's slot, held for the connection's life.
pub struct Meter<'a> {
    traffic: &'a Traffic,
    /// `None`: the table was full; this connection is not counted.
    idx: Option<usize>,
}

impl Meter<'_> {
    pub fn sent(&self, bytes: u64) {
        if let Some(i) = self.idx {
            self.traffic.sent[i].fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn received(&self, bytes: u64) {
        if let Some(i) = self.idx {
            self.traffic.received[i].fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.idx {
            let mut slots = self.traffic.slots.lock().expect("traffic lock");
            if let Slot::Open(p) = slots[i] {
                slots[i] = Slot::Closed(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> Peer {
        Peer {
            addr: SocketAddr::from(([10, 0, 0, 5], port)),
            dialed_from: None,
        }
    }

    #[test]
    fn counters_are_taken_once_and_a_closed_connection_reports_its_last_bytes() {
        let t = Traffic::default();
        t.enable();
        let a = t.open(peer(1));
        let b = t.open(peer(2));
        a.sent(100);
        a.sent(20);
        b.received(7);
        assert_eq!(
            t.take(),
            Taken {
                open: 2,
                moved: vec![(peer(1), 120, 0), (peer(2), 0, 7)]
            }
        );
        // Idle since: open, nothing moved.
        assert_eq!(t.take(), Taken { open: 2, moved: vec![] });
        a.sent(5);
        drop(a);
        assert_eq!(
            t.take(),
            Taken {
                open: 1,
                moved: vec![(peer(1), 5, 0)]
            }
        );
        drop(b);
        assert_eq!(t.take(), Taken::default());
        assert_eq!(t.take(), Taken::default());
    }

    #[test]
    fn a_full_table_leaves_new_connections_unmetered_until_a_slot_is_freed() {
        let t = Traffic::default();
        t.enable();
        let held: Vec<Meter<'_>> = (0..TRAFFIC_PEERS_MAX as u16).map(|p| t.open(peer(p))).collect();
        let extra = t.open(peer(9999));
        extra.sent(1);
        let taken = t.take();
        assert_eq!((taken.open, taken.moved.len()), (TRAFFIC_PEERS_MAX, 0));
        drop(extra);
        drop(held);
        // The slots are freed by the take that reports them closed, then reused.
        assert_eq!(t.take().open, 0);
        let again = t.open(peer(9999));
        again.received(3);
        assert_eq!(t.take().moved, vec![(peer(9999), 0, 3)]);
    }

    #[test]
    fn nothing_is_metered_until_enabled() {
        let t = Traffic::default();
        let m = t.open(peer(1));
        m.sent(10);
        drop(m);
        assert_eq!(t.take(), Taken::default());
    }
}
