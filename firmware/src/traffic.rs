//! Per-connection byte counters for the fleet view's live picture of transfers.
//!
//! A fixed table of [`TRAFFIC_PEERS_MAX`] slots, allocated once with the node: a connection
//! (accepted by the server, or dialed for a replication) takes a slot for its life through a
//! [`Meter`] and adds the chunk bytes it moves to the slot's atomic counters, so counting
//! costs a relaxed add and no lock. Once a second the agent [`Traffic::take`]s the counters
//! (zeroing them) and publishes them as `node/<id>/transfers`. A slot whose connection has
//! closed is freed only by `take`, so the bytes of its last second are still reported.
//!
//! When every slot is taken (a burst of short replication connections fills the table with
//! closed ones until the next `take`), a new connection works as ever but goes uncounted
//! until a slot frees: its meter asks for one again whenever bytes move, so a long download
//! that started during a burst shows up within a second instead of never. Nothing here
//! decides anything: it is for people to look at. A standalone node (no agent, so nobody
//! takes the counters) never turns metering on.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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

    /// A meter for a new connection: counting at once if a slot is free, from when one frees
    /// if not, never while metering is off.
    pub fn open(&self, peer: Peer) -> Meter<'_> {
        let meter = Meter {
            traffic: self,
            peer,
            idx: AtomicUsize::new(NO_SLOT),
        };
        meter.slot();
        meter
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

/// [`Meter::idx`] while the connection has no slot.
const NO_SLOT: usize = usize::MAX;

/// One connection's slot, held from when it gets one to the connection's end.
pub struct Meter<'a> {
    traffic: &'a Traffic,
    peer: Peer,
    /// The slot, or [`NO_SLOT`] while metering is off or the table is full. Atomic so the
    /// meter can be shared by the connection's reader and writer halves.
    idx: AtomicUsize,
}

impl Meter<'_> {
    pub fn sent(&self, bytes: u64) {
        if let Some(i) = self.slot() {
            self.traffic.sent[i].fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn received(&self, bytes: u64) {
        if let Some(i) = self.slot() {
            self.traffic.received[i].fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// This connection's slot, taking a free one if it has none yet. The lock is taken only
    /// while the meter has no slot, so a counted connection pays one relaxed load.
    fn slot(&self) -> Option<usize> {
        let idx = self.idx.load(Ordering::Relaxed);
        if idx != NO_SLOT {
            return Some(idx);
        }
        if !self.traffic.enabled.load(Ordering::Acquire) {
            return None;
        }
        let mut slots = self.traffic.slots.lock().expect("traffic lock");
        // Another user of this meter may have taken a slot while we waited for the lock.
        let idx = self.idx.load(Ordering::Relaxed);
        if idx != NO_SLOT {
            return Some(idx);
        }
        let free = slots.iter().position(|s| matches!(s, Slot::Free))?;
        slots[free] = Slot::Open(self.peer);
        self.idx.store(free, Ordering::Relaxed);
        Some(free)
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        let idx = *self.idx.get_mut();
        if idx != NO_SLOT {
            let mut slots = self.traffic.slots.lock().expect("traffic lock");
            if let Slot::Open(p) = slots[idx] {
                slots[idx] = Slot::Closed(p);
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
    fn a_connection_opened_during_a_burst_is_counted_once_the_burst_is_reported() {
        // A burst of short connections (replication) fills the table with closed slots that
        // only the next take frees; a long download opened in that second must not stay
        // invisible for its whole life.
        let t = Traffic::default();
        t.enable();
        for p in 0..TRAFFIC_PEERS_MAX as u16 {
            let m = t.open(peer(p));
            m.sent(1 << 20);
        }
        let download = t.open(peer(9999));
        download.sent(7);
        let burst = t.take();
        assert_eq!((burst.open, burst.moved.len()), (0, TRAFFIC_PEERS_MAX));
        download.sent(1 << 20);
        assert_eq!(
            t.take(),
            Taken {
                open: 1,
                moved: vec![(peer(9999), 1 << 20, 0)]
            }
        );
        drop(download);
        assert_eq!(t.take(), Taken::default());
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
