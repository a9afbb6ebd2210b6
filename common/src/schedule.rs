//! The download scheduler: which chunk to ask of which source, as a plain state machine.
//!
//! Inputs arrive as `handle_*(now, ...)` calls, decisions leave through `poll_*` calls, and
//! time is an argument (a [`Duration`] since the download began), so the same machine runs
//! under tokio, in a simulation, or on a microcontroller. It never does I/O.
//!
//! Policy, in short:
//! - Each source has a window of [`ScheduleConfig::inflight_per_source_max`] pipelined
//!   requests. A fast source empties its window sooner and so is asked more often: work
//!   flows to whoever is fastest *now*. When several sources have room, the one with the
//!   best recent throughput is served first.
//! - Chunks are handed out in file order (good for streaming), skipping chunks a source
//!   does not hold or has served wrong.
//! - A source that makes no progress for its stall timeout is *stalled*: its chunks may be
//!   given to others too, and it gets no new work until it delivers again. One that stays
//!   silent for [`ScheduleConfig::stall_give_up_factor`] stall timeouts counts as failed.
//! - A connection failure returns a source's chunks to the pool and backs it off; after
//!   [`ScheduleConfig::failures_max`] failures in a row it is dead. A source that sends a
//!   chunk that does not verify loses that chunk for good, and after
//!   [`ScheduleConfig::bad_chunks_max`] such chunks it is dead.
//! - End game: when a source has room but nothing unclaimed it can serve, it may duplicate a
//!   chunk in flight elsewhere (at most [`ScheduleConfig::copies_in_flight_max`] copies), so
//!   one slow source cannot hold back the end of a download.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

/// Tuning for one download.
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    pub inflight_per_source_max: u32,
    /// A source is stalled after this long without delivering a chunk, at the least...
    pub stall_min: Duration,
    /// ...or this many times its usual time per chunk, if that is longer.
    pub stall_factor: u32,
    /// A stalled source still silent after this many stall timeouts counts as failed (its
    /// connection is dropped and it is retried with backoff, then given up).
    pub stall_give_up_factor: u32,
    pub failures_max: u32,
    pub backoff_base: Duration,
    pub bad_chunks_max: u32,
    pub copies_in_flight_max: usize,
    /// End game duplicates a chunk only once it has been in flight this long, at the least.
    pub end_game_after_min: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            inflight_per_source_max: 4,
            stall_min: Duration::from_secs(4),
            stall_factor: 8,
            stall_give_up_factor: 4,
            failures_max: 4,
            backoff_base: Duration::from_millis(200),
            bad_chunks_max: 3,
            copies_in_flight_max: 2,
            end_game_after_min: Duration::from_millis(500),
        }
    }
}

/// An order for the driver: fetch chunk `chunk_idx` from source `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub source: usize,
    pub chunk_idx: usize,
}

/// How the download ended, once it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// These chunks have no live, honest holder left.
    Unservable(Vec<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Ready,
    Stalled,
    BackingOff { until: Duration },
    Dead,
}

#[derive(Clone, Debug)]
struct Source {
    health: Health,
    inflight: Vec<usize>,
    /// When this source last delivered a chunk or was first given work after being idle.
    last_progress: Duration,
    /// Smoothed time between deliveries while busy.
    chunk_time_ewma: Option<Duration>,
    failures_in_row: u32,
    bad_chunks: u32,
    delivered: u64,
    failures: u64,
    /// Unclaimed chunks before this index are known not assignable to this source.
    scan_from: usize,
}

#[derive(Clone, Debug)]
struct Chunk {
    done: bool,
    /// Sources that may serve this chunk (shrinks as sources prove unable or dishonest).
    holders: Vec<u16>,
    /// Sources currently asked for it.
    active: Vec<u16>,
    /// When it was last handed out.
    claimed_at: Duration,
}

/// Per-source counters for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceReport {
    pub delivered: u64,
    pub failures: u64,
    pub bad_chunks: u64,
    pub dead: bool,
}

pub struct Schedule {
    config: ScheduleConfig,
    chunks: Vec<Chunk>,
    sources: Vec<Source>,
    n_done: usize,
}

impl Schedule {
    /// `holders[i]` lists the sources that hold chunk `i`; `done[i]` marks chunks already
    /// present (a resumed download).
    pub fn new(config: ScheduleConfig, n_sources: usize, holders: Vec<Vec<u16>>, done: &[bool]) -> Schedule {
        assert!(n_sources <= u16::MAX as usize, "source indices are u16");
        assert_eq!(holders.len(), done.len(), "one holder list and one done flag per chunk");
        let chunks: Vec<Chunk> = holders
            .into_iter()
            .zip(done)
            .map(|(mut holders, &done)| {
                holders.retain(|&s| (s as usize) < n_sources);
                holders.sort_unstable();
                holders.dedup();
                Chunk {
                    done,
                    holders,
                    active: Vec::new(),
                    claimed_at: Duration::ZERO,
                }
            })
            .collect();
        let n_done = done.iter().filter(|d| **d).count();
        let source = Source {
            health: Health::Ready,
            inflight: Vec::new(),
            last_progress: Duration::ZERO,
            chunk_time_ewma: None,
            failures_in_row: 0,
            bad_chunks: 0,
            delivered: 0,
            failures: 0,
            scan_from: 0,
        };
        Schedule {
            config,
            chunks,
            sources: vec![source; n_sources],
            n_done,
        }
    }

    pub fn n_chunks(&self) -> usize {
        self.chunks.len()
    }
    pub fn n_done(&self) -> usize {
        self.n_done
    }
    pub fn is_done(&self, chunk_idx: usize) -> bool {
        self.chunks[chunk_idx].done
    }
    pub fn source_report(&self, source: usize) -> SourceReport {
        let s = &self.sources[source];
        SourceReport {
            delivered: s.delivered,
            failures: s.failures,
            bad_chunks: u64::from(s.bad_chunks),
            dead: s.health == Health::Dead,
        }
    }
    /// Sources not dead.
    pub fn n_sources_alive(&self) -> usize {
        self.sources.iter().filter(|s| s.health != Health::Dead).count()
    }

    /// The next request to make, if any. Call until it returns `None`.
    pub fn poll_assignment(&mut self, now: Duration) -> Option<Assignment> {
        self.wake_backed_off(now);
        // Best recent throughput first; sources never measured come after measured ones
        // in index order, so a fresh download spreads over everyone.
        let mut order: Vec<usize> = (0..self.sources.len()).filter(|&s| self.has_room(s)).collect();
        order.sort_by_key(|&s| (self.sources[s].chunk_time_ewma.unwrap_or(Duration::MAX), s));
        for s in order {
            if let Some(c) = self.next_unclaimed(s).or_else(|| self.end_game_pick(now, s)) {
                self.claim(now, s, c);
                return Some(Assignment {
                    source: s,
                    chunk_idx: c,
                });
            }
        }
        None
    }

    fn has_room(&self, s: usize) -> bool {
        let src = &self.sources[s];
        src.health == Health::Ready && (src.inflight.len() as u32) < self.config.inflight_per_source_max
    }

    /// First chunk at or after the source's cursor that nobody healthy is fetching.
    fn next_unclaimed(&mut self, s: usize) -> Option<usize> {
        let s16 = s as u16;
        let mut i = self.sources[s].scan_from;
        while i < self.chunks.len() {
            let c = &self.chunks[i];
            if !c.done && c.holders.contains(&s16) && self.claimable(c) {
                self.sources[s].scan_from = i;
                return Some(i);
            }
            i += 1;
        }
        self.sources[s].scan_from = i;
        None
    }

    /// Unclaimed: no one is fetching it, or everyone fetching it is stalled.
    fn claimable(&self, c: &Chunk) -> bool {
        c.active
            .iter()
            .all(|&a| self.sources[a as usize].health != Health::Ready)
    }

    /// A chunk in flight elsewhere for longer than its fetcher should need, judged by that
    /// fetcher's usual time per chunk and its queue; duplicated only near the end, since
    /// before that `next_unclaimed` always finds fresh work.
    fn end_game_pick(&self, now: Duration, s: usize) -> Option<usize> {
        let s16 = s as u16;
        let overdue = |c: &Chunk| {
            let expected = c
                .active
                .iter()
                .map(|&a| {
                    let src = &self.sources[a as usize];
                    src.chunk_time_ewma.unwrap_or(Duration::ZERO) * (2 * src.inflight.len() as u32)
                })
                .min()
                .unwrap_or(Duration::ZERO);
            now.saturating_sub(c.claimed_at) >= expected.max(self.config.end_game_after_min)
        };
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !c.done
                    && c.holders.contains(&s16)
                    && !c.active.contains(&s16)
                    && c.active.len() < self.config.copies_in_flight_max
                    && overdue(c)
            })
            .min_by_key(|(_, c)| c.active.len())
            .map(|(i, _)| i)
    }

    fn claim(&mut self, now: Duration, s: usize, c: usize) {
        let src = &mut self.sources[s];
        if src.inflight.is_empty() {
            // The stall clock starts when an idle source is given work.
            src.last_progress = now;
        }
        src.inflight.push(c);
        self.chunks[c].active.push(s as u16);
        self.chunks[c].claimed_at = now;
    }

    /// Forgets that `s` is fetching `c`.
    fn unclaim(&mut self, s: usize, c: usize) {
        self.sources[s].inflight.retain(|&x| x != c);
        self.chunks[c].active.retain(|&a| a as usize != s);
        self.reopen(c);
    }

    /// Makes chunk `c` visible again to the cursors of its holders.
    fn reopen(&mut self, c: usize) {
        for &h in &self.chunks[c].holders {
            let src = &mut self.sources[h as usize];
            src.scan_from = src.scan_from.min(c);
        }
    }

    /// `s` delivered chunk `c`, verified and written.
    pub fn handle_chunk_done(&mut self, now: Duration, s: usize, c: usize) {
        let src = &mut self.sources[s];
        let interval = now.saturating_sub(src.last_progress);
        src.chunk_time_ewma = Some(match src.chunk_time_ewma {
            None => interval,
            Some(prev) => (prev * 3 + interval) / 4,
        });
        src.last_progress = now;
        src.delivered += 1;
        src.failures_in_row = 0;
        if src.health == Health::Stalled {
            src.health = Health::Ready;
        }
        src.inflight.retain(|&x| x != c);
        let chunk = &mut self.chunks[c];
        chunk.active.retain(|&a| a as usize != s);
        if !chunk.done {
            chunk.done = true;
            self.n_done += 1;
        }
    }

    /// `s` sent bytes for `c` that do not verify: never ask it for `c` again.
    pub fn handle_chunk_bad(&mut self, _now: Duration, s: usize, c: usize) {
        self.chunks[c].holders.retain(|&h| h as usize != s);
        self.unclaim(s, c);
        let src = &mut self.sources[s];
        src.bad_chunks += 1;
        if src.bad_chunks >= self.config.bad_chunks_max {
            self.kill(s);
        }
    }

    /// `s` says it does not hold `c` (any more).
    pub fn handle_chunk_missing(&mut self, _now: Duration, s: usize, c: usize) {
        self.chunks[c].holders.retain(|&h| h as usize != s);
        self.unclaim(s, c);
    }

    /// The connection to `s` failed: everything it had goes back to the pool.
    pub fn handle_source_failed(&mut self, now: Duration, s: usize) {
        for c in core::mem::take(&mut self.sources[s].inflight) {
            self.chunks[c].active.retain(|&a| a as usize != s);
            self.reopen(c);
        }
        let src = &mut self.sources[s];
        if src.health == Health::Dead {
            return;
        }
        src.failures += 1;
        src.failures_in_row += 1;
        if src.failures_in_row >= self.config.failures_max {
            self.kill(s);
        } else {
            let backoff = self.config.backoff_base * (1 << (src.failures_in_row - 1).min(8));
            src.health = Health::BackingOff { until: now + backoff };
        }
    }

    fn kill(&mut self, s: usize) {
        for c in core::mem::take(&mut self.sources[s].inflight) {
            self.chunks[c].active.retain(|&a| a as usize != s);
            self.reopen(c);
        }
        self.sources[s].health = Health::Dead;
        let s16 = s as u16;
        for c in &mut self.chunks {
            c.holders.retain(|&h| h != s16);
        }
    }

    /// True if the driver must drop its connection to `s` (dead or backing off).
    pub fn should_disconnect(&self, s: usize) -> bool {
        matches!(self.sources[s].health, Health::Dead | Health::BackingOff { .. })
    }

    fn wake_backed_off(&mut self, now: Duration) {
        for s in &mut self.sources {
            if let Health::BackingOff { until } = s.health
                && now >= until
            {
                s.health = Health::Ready;
            }
        }
    }

    fn stall_timeout(&self, s: usize) -> Duration {
        let per_chunk = self.sources[s].chunk_time_ewma.unwrap_or(Duration::ZERO);
        let window = self.config.inflight_per_source_max.max(1);
        self.config.stall_min.max(per_chunk * self.config.stall_factor * window)
    }

    /// Marks sources that went quiet as stalled, so their chunks can go elsewhere, and
    /// fails those that stay quiet.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.wake_backed_off(now);
        for s in 0..self.sources.len() {
            let src = &self.sources[s];
            let quiet = now.saturating_sub(src.last_progress);
            if src.health == Health::Stalled && quiet >= self.stall_timeout(s) * self.config.stall_give_up_factor {
                self.handle_source_failed(now, s);
                continue;
            }
            if src.health == Health::Ready && !src.inflight.is_empty() && quiet >= self.stall_timeout(s) {
                self.sources[s].health = Health::Stalled;
                for c in self.sources[s].inflight.clone() {
                    self.reopen(c);
                }
            }
        }
    }

    /// When [`Schedule::handle_timeout`] next has something to do, if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        for (s, src) in self.sources.iter().enumerate() {
            let at = match src.health {
                Health::BackingOff { until } => Some(until),
                Health::Ready if !src.inflight.is_empty() => Some(src.last_progress + self.stall_timeout(s)),
                Health::Stalled => Some(src.last_progress + self.stall_timeout(s) * self.config.stall_give_up_factor),
                _ => None,
            };
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next
    }

    /// `Some` once the download is complete or cannot complete.
    pub fn poll_outcome(&self) -> Option<Outcome> {
        if self.n_done == self.chunks.len() {
            return Some(Outcome::Complete);
        }
        let anything_in_flight = self.sources.iter().any(|s| !s.inflight.is_empty());
        let unservable: Vec<usize> = (0..self.chunks.len())
            .filter(|&i| !self.chunks[i].done && self.chunks[i].holders.is_empty())
            .collect();
        let servable_left = self.chunks.iter().any(|c| !c.done && !c.holders.is_empty());
        if !unservable.is_empty() && !servable_left && !anything_in_flight {
            return Some(Outcome::Unservable(unservable));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn all_hold(n_chunks: usize, n_sources: u16) -> Vec<Vec<u16>> {
        vec![(0..n_sources).collect(); n_chunks]
    }

    fn drain(s: &mut Schedule, now: Duration) -> Vec<Assignment> {
        core::iter::from_fn(|| s.poll_assignment(now)).collect()
    }

    #[test]
    fn windows_fill_then_work_follows_deliveries() {
        let mut s = Schedule::new(ScheduleConfig::default(), 2, all_hold(20, 2), &[false; 20]);
        let first = drain(&mut s, Duration::ZERO);
        assert_eq!(first.len(), 8, "two windows of four");
        assert_eq!(
            first.iter().map(|a| a.chunk_idx).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        // Source 1 is fast: each delivery buys it the next chunk.
        for a in first.iter().filter(|a| a.source == 1) {
            s.handle_chunk_done(10 * MS, 1, a.chunk_idx);
        }
        let next = drain(&mut s, 10 * MS);
        assert!(next.iter().all(|a| a.source == 1) && next.len() == 4);
    }

    #[test]
    fn respects_holders_and_finishes() {
        // Chunk 1 only on source 1, chunk 0 only on source 0.
        let mut s = Schedule::new(ScheduleConfig::default(), 2, vec![vec![0], vec![1]], &[false, false]);
        let got = drain(&mut s, Duration::ZERO);
        assert_eq!(
            got,
            vec![
                Assignment {
                    source: 0,
                    chunk_idx: 0
                },
                Assignment {
                    source: 1,
                    chunk_idx: 1
                }
            ]
        );
        s.handle_chunk_done(MS, 0, 0);
        assert_eq!(s.poll_outcome(), None);
        s.handle_chunk_done(MS, 1, 1);
        assert_eq!(s.poll_outcome(), Some(Outcome::Complete));
    }

    #[test]
    fn failed_source_work_moves_and_dead_source_makes_chunks_unservable() {
        let config = ScheduleConfig {
            failures_max: 1,
            ..Default::default()
        };
        let mut s = Schedule::new(config, 2, vec![vec![0, 1], vec![0]], &[false, false]);
        let got = drain(&mut s, Duration::ZERO);
        assert_eq!(got.len(), 2);
        s.handle_source_failed(MS, 0);
        // Chunk 0 can go to source 1; chunk 1 had only source 0.
        let again = drain(&mut s, MS);
        assert!(again.contains(&Assignment {
            source: 1,
            chunk_idx: 0
        }));
        s.handle_chunk_done(2 * MS, 1, 0);
        assert_eq!(s.poll_outcome(), Some(Outcome::Unservable(vec![1])));
    }

    #[test]
    fn backoff_then_retry() {
        let mut s = Schedule::new(ScheduleConfig::default(), 1, all_hold(2, 1), &[false; 2]);
        drain(&mut s, Duration::ZERO);
        s.handle_source_failed(MS, 0);
        assert!(s.should_disconnect(0));
        assert!(drain(&mut s, 2 * MS).is_empty(), "backing off");
        let wake = s.poll_timeout().unwrap();
        assert_eq!(drain(&mut s, wake).len(), 2);
    }

    #[test]
    fn bad_chunk_goes_elsewhere_and_liar_dies() {
        let config = ScheduleConfig {
            bad_chunks_max: 2,
            inflight_per_source_max: 1,
            ..Default::default()
        };
        let mut s = Schedule::new(config, 2, all_hold(3, 2), &[false; 3]);
        let got = drain(&mut s, Duration::ZERO);
        assert_eq!(
            got,
            vec![
                Assignment {
                    source: 0,
                    chunk_idx: 0
                },
                Assignment {
                    source: 1,
                    chunk_idx: 1
                }
            ]
        );
        s.handle_chunk_bad(MS, 0, 0);
        assert_eq!(
            drain(&mut s, MS),
            vec![Assignment {
                source: 0,
                chunk_idx: 2
            }]
        );
        s.handle_chunk_done(2 * MS, 1, 1);
        assert_eq!(
            drain(&mut s, 2 * MS),
            vec![Assignment {
                source: 1,
                chunk_idx: 0
            }]
        );
        s.handle_chunk_bad(3 * MS, 0, 2);
        assert!(s.source_report(0).dead);
        s.handle_chunk_done(4 * MS, 1, 0);
        assert_eq!(
            drain(&mut s, 4 * MS),
            vec![Assignment {
                source: 1,
                chunk_idx: 2
            }]
        );
    }

    #[test]
    fn stalled_source_loses_its_work() {
        let config = ScheduleConfig {
            stall_min: Duration::from_secs(1),
            ..Default::default()
        };
        let mut s = Schedule::new(config, 2, all_hold(8, 2), &[false; 8]);
        let first = drain(&mut s, Duration::ZERO);
        for a in first.iter().filter(|a| a.source == 1) {
            s.handle_chunk_done(10 * MS, 1, a.chunk_idx);
        }
        assert!(
            drain(&mut s, 10 * MS).is_empty(),
            "source 1 has no unclaimed chunk left"
        );
        let t = s.poll_timeout().unwrap();
        assert_eq!(
            t,
            Duration::from_secs(1),
            "source 0 stalls one stall_min after it got work"
        );
        s.handle_timeout(t);
        let moved = drain(&mut s, t);
        assert_eq!(
            moved.iter().map(|a| (a.source, a.chunk_idx)).collect::<Vec<_>>(),
            vec![(1, 0), (1, 1), (1, 2), (1, 3)]
        );
        // A late delivery from the stalled source still counts and revives it.
        s.handle_chunk_done(t + MS, 0, 0);
        s.handle_chunk_done(t + MS, 1, 0);
        assert_eq!(s.n_done(), 5);
    }

    #[test]
    fn end_game_duplicates_the_last_chunks() {
        let mut s = Schedule::new(
            ScheduleConfig {
                inflight_per_source_max: 2,
                ..Default::default()
            },
            2,
            all_hold(2, 2),
            &[false; 2],
        );
        let first = drain(&mut s, Duration::ZERO);
        assert_eq!(first.len(), 2, "no duplicates while chunks are fresh");
        let late = Duration::from_secs(1);
        let second = drain(&mut s, late);
        assert_eq!(second.len(), 2, "overdue chunks are asked of the idle source too");
        assert!(second.iter().all(|a| a.source == 1));
        s.handle_chunk_done(late + MS, 1, 0);
        s.handle_chunk_done(late + MS, 0, 0);
        assert_eq!(s.n_done(), 1);
        assert!(s.sources.iter().all(|src| !src.inflight.contains(&0)));
    }

    #[test]
    fn resumed_chunks_are_not_fetched() {
        let mut s = Schedule::new(ScheduleConfig::default(), 1, all_hold(3, 1), &[true, false, true]);
        assert_eq!(
            drain(&mut s, Duration::ZERO),
            vec![Assignment {
                source: 0,
                chunk_idx: 1
            }]
        );
        s.handle_chunk_done(MS, 0, 1);
        assert_eq!(s.poll_outcome(), Some(Outcome::Complete));
    }
}
