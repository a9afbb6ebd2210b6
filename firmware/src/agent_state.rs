//! The MQTT agent's decisions, sans-IO: what to announce in `Have` deltas and when, which
//! commands to run, when the controller needs a re-announcement. Time comes in as an
//! argument; `agent.rs` moves the bytes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use trove_common::ChunkId;
use trove_common::control::{COMMAND_TTL_S, Command, ControllerState, HAVE_BATCH_MAX, Have};

use crate::store::Change;

/// Gathers store changes into `Have` deltas with consecutive sequence numbers.
///
/// A delta goes out [`HaveBatcher::new`]'s `delay` after the first change it holds, or at
/// once when it holds [`HAVE_BATCH_MAX`] entries. Changes inside one delta are netted: a chunk
/// added and removed again before the delta leaves is in neither list.
///
/// **Gaps.** `seq` starts at 1 and grows by one per delta, except after [`HaveBatcher::gap`]:
/// then the next delta skips one number. The controller reads a gap as "deltas were lost" and
/// pulls the full inventory over TCP, so a gap is how every loss is reported: the change
/// queue overflowed, a publish could not be queued, the broker connection dropped (deltas
/// handed to the MQTT client may never have reached the broker), or the controller asked for
/// a fresh start. [`HaveBatcher::resync`] also forces a delta out at once, even an empty one,
/// so the controller sees the gap without waiting for the next change.
#[derive(Debug)]
pub struct HaveBatcher {
    boot_id: u64,
    delay: Duration,
    /// The seq of the next delta, before any gap.
    next_seq: u64,
    gap: bool,
    /// Emit the next delta at once, even if empty (a resync marker), since this instant.
    forced_at: Option<Instant>,
    added: BTreeSet<ChunkId>,
    removed: BTreeSet<ChunkId>,
    /// When the oldest change held arrived.
    since: Option<Instant>,
}

impl HaveBatcher {
    pub fn new(boot_id: u64, delay: Duration) -> HaveBatcher {
        HaveBatcher {
            boot_id,
            delay,
            next_seq: 1,
            gap: false,
            forced_at: None,
            added: BTreeSet::new(),
            removed: BTreeSet::new(),
            since: None,
        }
    }

    fn len(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    pub fn handle_change(&mut self, now: Instant, change: Change) {
        if self.len() >= HAVE_BATCH_MAX {
            // The caller did not flush a full delta: rather than grow past the message limit,
            // drop what is held and let the controller pull the inventory.
            self.added.clear();
            self.removed.clear();
            self.since = None;
            self.gap = true;
        }
        match change {
            // Removed then added again within one delta: held before, held now, no news.
            Change::Added(c) => {
                if !self.removed.remove(&c) {
                    self.added.insert(c);
                }
            }
            Change::Removed(c) => {
                if !self.added.remove(&c) {
                    self.removed.insert(c);
                }
            }
        }
        if self.len() == 0 {
            self.since = None;
        } else if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// Some changes were lost (queue overflow, a delta that could not be published): the next
    /// delta skips a sequence number.
    pub fn gap(&mut self) {
        self.gap = true;
    }

    /// The controller must (re)learn our state: the broker connection is new, or the
    /// controller restarted or asked. Sends a delta at once; skips a sequence number unless
    /// nothing was sent yet in this boot (a boot the controller has not seen is news enough).
    pub fn resync(&mut self, now: Instant) {
        if self.next_seq > 1 {
            self.gap = true;
        }
        self.forced_at.get_or_insert(now);
    }

    /// The delta due at `now`, if any. Call until it returns `None`.
    pub fn poll_flush(&mut self, now: Instant) -> Option<Have> {
        let due = self.forced_at.is_some()
            || self.len() >= HAVE_BATCH_MAX
            || self.since.is_some_and(|t| now >= t + self.delay);
        if !due {
            return None;
        }
        let seq = self.next_seq + u64::from(self.gap);
        self.next_seq = seq + 1;
        self.gap = false;
        self.forced_at = None;
        self.since = None;
        Some(Have {
            boot_id: self.boot_id,
            seq,
            added: std::mem::take(&mut self.added).into_iter().collect(),
            removed: std::mem::take(&mut self.removed).into_iter().collect(),
        })
    }

    /// When the next delta falls due, if one is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.len() >= HAVE_BATCH_MAX {
            return self.since; // due since the change that filled it
        }
        let by_delay = self.since.map(|t| t + self.delay);
        match (self.forced_at, by_delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Why a command was not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("stale: issued {age_s} s ago, over the {COMMAND_TTL_S} s limit")]
    Stale { age_s: u64 },
    #[error("issued {ahead_s} s in the future, over the {max_s} s allowed for clock skew")]
    FromTheFuture { ahead_s: u64, max_s: u64 },
    #[error("replayed: id {id} is not after {last}, the last id run")]
    Replayed { id: u64, last: u64 },
}

/// Admits authenticated commands that are fresh and newer than every command run so far.
///
/// The MAC proves a command came from the controller; this stops it being replayed. Command
/// IDs grow strictly per controller, so remembering the last one admitted is enough within a
/// process; across restarts, the TTL bounds what an old recording can do.
#[derive(Debug)]
pub struct CommandGate {
    future_skew_s: u64,
    last_id: Option<u64>,
}

impl CommandGate {
    pub fn new(future_skew_s: u64) -> CommandGate {
        CommandGate {
            future_skew_s,
            last_id: None,
        }
    }

    /// Admits `cmd` (and remembers its ID) or says why not.
    pub fn admit(&mut self, cmd: &Command, now_s: u64) -> Result<(), Refusal> {
        if let Some(age_s) = now_s.checked_sub(cmd.issued_at_s)
            && age_s > COMMAND_TTL_S
        {
            return Err(Refusal::Stale { age_s });
        }
        if let Some(ahead_s) = cmd.issued_at_s.checked_sub(now_s)
            && ahead_s > self.future_skew_s
        {
            return Err(Refusal::FromTheFuture {
                ahead_s,
                max_s: self.future_skew_s,
            });
        }
        if let Some(last) = self.last_id
            && cmd.id <= last
        {
            return Err(Refusal::Replayed { id: cmd.id, last });
        }
        self.last_id = Some(cmd.id);
        Ok(())
    }
}

/// Watches `controller/state` for a controller boot this process has not seen online.
#[derive(Debug, Default)]
pub struct ControllerWatch {
    last_online_boot: Option<u64>,
}

impl ControllerWatch {
    /// True when the node must re-announce: the controller is online under a boot ID not seen
    /// before in this process (it restarted, perhaps with the broker, and may have lost
    /// retained messages and our deltas). The first one seen counts too: nothing says that
    /// controller saw our announcement.
    pub fn observe(&mut self, state: &ControllerState) -> bool {
        if !state.online || self.last_online_boot == Some(state.boot_id) {
            return false;
        }
        self.last_online_boot = Some(state.boot_id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_common::Hash32;
    use trove_common::control::Order;

    const DELAY: Duration = Duration::from_millis(200);

    fn chunk(i: u32) -> ChunkId {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&i.to_be_bytes());
        ChunkId::new(Hash32(h), 0, 1024, true).unwrap()
    }

    #[test]
    fn batches_after_the_delay_with_consecutive_seqs() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::new(9, DELAY);
        assert_eq!((b.poll_timeout(), b.poll_flush(t0)), (None, None), "nothing to say");
        b.handle_change(t0, Change::Added(chunk(1)));
        b.handle_change(t0 + Duration::from_millis(150), Change::Added(chunk(2)));
        assert_eq!(b.poll_timeout(), Some(t0 + DELAY), "due a delay after the first change");
        assert_eq!(b.poll_flush(t0 + Duration::from_millis(199)), None);
        let h = b.poll_flush(t0 + DELAY).unwrap();
        assert_eq!(
            (h.boot_id, h.seq, h.added, h.removed),
            (9, 1, vec![chunk(1), chunk(2)], vec![])
        );
        assert_eq!((b.poll_timeout(), b.poll_flush(t0 + DELAY * 5)), (None, None));

        let t1 = t0 + Duration::from_secs(1);
        b.handle_change(t1, Change::Removed(chunk(1)));
        let h = b.poll_flush(t1 + DELAY).unwrap();
        assert_eq!((h.seq, h.added, h.removed), (2, vec![], vec![chunk(1)]));
    }

    #[test]
    fn nets_changes_inside_one_delta() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::new(1, DELAY);
        b.handle_change(t0, Change::Added(chunk(1)));
        b.handle_change(t0, Change::Removed(chunk(1)));
        assert_eq!(b.poll_timeout(), None, "added then removed: nothing to report");
        b.handle_change(t0, Change::Removed(chunk(2)));
        b.handle_change(t0, Change::Added(chunk(2)));
        b.handle_change(t0, Change::Added(chunk(3)));
        let h = b.poll_flush(t0 + DELAY).unwrap();
        assert_eq!((h.seq, h.added, h.removed), (1, vec![chunk(3)], vec![]));
    }

    #[test]
    fn a_full_delta_leaves_at_once() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::new(1, DELAY);
        for i in 0..HAVE_BATCH_MAX as u32 - 1 {
            b.handle_change(t0, Change::Added(chunk(i)));
        }
        assert_eq!(b.poll_flush(t0), None);
        b.handle_change(t0, Change::Removed(chunk(u32::MAX)));
        assert_eq!(b.poll_timeout(), Some(t0), "due now");
        let h = b.poll_flush(t0).unwrap();
        assert_eq!((h.seq, h.added.len(), h.removed.len()), (1, HAVE_BATCH_MAX - 1, 1));
    }

    #[test]
    fn an_unflushed_full_delta_turns_into_a_gap_not_an_oversized_message() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::new(1, DELAY);
        for i in 0..HAVE_BATCH_MAX as u32 + 10 {
            b.handle_change(t0, Change::Added(chunk(i)));
        }
        let h = b.poll_flush(t0 + DELAY).unwrap();
        assert_eq!((h.seq, h.added.len()), (2, 10), "seq 1 skipped: the controller pulls");
    }

    #[test]
    fn a_gap_skips_one_seq_and_carries_what_is_held() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::new(1, DELAY);
        b.handle_change(t0, Change::Added(chunk(1)));
        assert_eq!(b.poll_flush(t0 + DELAY).unwrap().seq, 1);
        b.gap();
        b.gap(); // several losses before the next delta still make one gap
        assert_eq!(b.poll_flush(t0 + DELAY * 2), None, "a gap alone waits for news");
        b.handle_change(t0 + DELAY * 2, Change::Added(chunk(2)));
        let h = b.poll_flush(t0 + DELAY * 3).unwrap();
        assert_eq!((h.seq, h.added), (3, vec![chunk(2)]));
        b.handle_change(t0 + DELAY * 3, Change::Added(chunk(3)));
        assert_eq!(b.poll_flush(t0 + DELAY * 4).unwrap().seq, 4);
    }

    #[test]
    fn resync_sends_a_marker_at_once_with_a_gap_except_at_the_start() {
        let t0 = Instant::now();
        let mut b = HaveBatcher::new(5, DELAY);
        b.resync(t0); // first connection of this boot
        assert_eq!(b.poll_timeout(), Some(t0));
        let h = b.poll_flush(t0).unwrap();
        assert_eq!((h.seq, h.added.len(), h.removed.len()), (1, 0, 0));
        assert_eq!(b.poll_flush(t0), None);

        b.handle_change(t0, Change::Added(chunk(1)));
        b.resync(t0); // reconnected: what was in flight may be lost
        let h = b.poll_flush(t0).unwrap();
        assert_eq!((h.seq, h.added), (3, vec![chunk(1)]), "skips 2, keeps what it held");
        assert_eq!(b.poll_flush(t0 + DELAY), None);
    }

    fn cmd(id: u64, issued_at_s: u64) -> Command {
        Command {
            id,
            issued_at_s,
            order: Order::Reannounce,
        }
    }

    #[test]
    fn gate_refuses_stale_future_and_replayed_commands() {
        let now = 1_000_000;
        let mut g = CommandGate::new(60);
        assert_eq!(
            g.admit(&cmd(1, now - COMMAND_TTL_S - 1), now),
            Err(Refusal::Stale {
                age_s: COMMAND_TTL_S + 1
            })
        );
        assert_eq!(
            g.admit(&cmd(1, now + 61), now),
            Err(Refusal::FromTheFuture { ahead_s: 61, max_s: 60 })
        );
        assert_eq!(g.admit(&cmd(5, now - COMMAND_TTL_S), now), Ok(()));
        assert_eq!(g.admit(&cmd(5, now), now), Err(Refusal::Replayed { id: 5, last: 5 }));
        assert_eq!(g.admit(&cmd(4, now), now), Err(Refusal::Replayed { id: 4, last: 5 }));
        assert_eq!(g.admit(&cmd(6, now + 60), now), Ok(()));
        // A refused command does not move the bar.
        assert!(g.admit(&cmd(100, 0), now).is_err());
        assert_eq!(g.admit(&cmd(7, now), now), Ok(()));
    }

    #[test]
    fn gate_admits_any_first_id_even_zero() {
        let mut g = CommandGate::new(60);
        assert_eq!(g.admit(&cmd(0, 10), 10), Ok(()));
        assert!(g.admit(&cmd(0, 10), 10).is_err());
    }

    #[test]
    fn watch_reannounces_once_per_new_online_boot() {
        let mut w = ControllerWatch::default();
        let s = |boot_id, online| ControllerState { boot_id, online };
        assert!(w.observe(&s(1, true)));
        assert!(!w.observe(&s(1, true)));
        assert!(!w.observe(&s(1, false)));
        assert!(!w.observe(&s(2, false)), "offline says nothing to announce to");
        assert!(w.observe(&s(2, true)));
        assert!(w.observe(&s(1, true)), "different from the last one seen");
    }
}
