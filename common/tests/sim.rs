//! Deterministic simulation of a download: the real `Schedule` against simulated sources
//! in simulated time, with seeded speeds, deaths, stalls and lies. Never sleeps; prints the
//! seed of any failing run so it can be replayed with `SIM_SEED=<seed>`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use trove_common::schedule::{Outcome, Schedule, ScheduleConfig};

/// xorshift64*: small, seeded, good enough to pick test scenarios.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    Honest,
    /// Connection drops at this time and every reconnect is refused.
    DiesAt(Duration),
    /// Stops answering at this time, without closing the connection.
    StallsAt(Duration),
    /// Sends corrupt bytes for this percentage of chunks.
    Lies(u64),
}

#[derive(Clone, Debug)]
struct SimSource {
    behaviour: Behaviour,
    per_chunk: Duration,
    busy_until: Duration,
    /// Bumped when the connection fails: replies from an older connection are lost.
    epoch: u32,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Done { source: usize, chunk: usize, epoch: u32 },
    Bad { source: usize, chunk: usize, epoch: u32 },
    Failed { source: usize, epoch: u32 },
}

struct Run {
    outcome: Outcome,
    delivered_by: Vec<u64>,
    fetches: u64,
    n_chunks: usize,
}

fn simulate(seed: u64, sources: &mut [SimSource], holders: Vec<Vec<u16>>) -> Run {
    let n_chunks = holders.len();
    let mut rng = Rng(seed | 1);
    let config = ScheduleConfig {
        stall_min: Duration::from_millis(500),
        ..Default::default()
    };
    let mut sched = Schedule::new(config, sources.len(), holders, &vec![false; n_chunks]);
    let mut queue: BinaryHeap<Reverse<(Duration, Ev)>> = BinaryHeap::new();
    let mut now = Duration::ZERO;
    let mut delivered_by = vec![0u64; sources.len()];
    let mut fetches = 0u64;
    let mut died_reported = vec![false; sources.len()];
    for step in 0.. {
        assert!(step < 1_000_000, "seed {seed}: simulation did not terminate");
        while let Some(a) = sched.poll_assignment(now) {
            fetches += 1;
            let s = &mut sources[a.source];
            let epoch = s.epoch;
            let start = now.max(s.busy_until);
            let jitter = Duration::from_micros(rng.below(s.per_chunk.as_micros() as u64 / 4 + 1));
            let at = start + s.per_chunk + jitter;
            s.busy_until = at;
            let ev = match s.behaviour {
                Behaviour::DiesAt(t) if now >= t => Some((
                    now + Duration::from_millis(1),
                    Ev::Failed {
                        source: a.source,
                        epoch,
                    },
                )),
                Behaviour::DiesAt(t) if at >= t => {
                    if died_reported[a.source] {
                        None
                    } else {
                        died_reported[a.source] = true;
                        Some((
                            t,
                            Ev::Failed {
                                source: a.source,
                                epoch,
                            },
                        ))
                    }
                }
                Behaviour::StallsAt(t) if at >= t => None,
                Behaviour::Lies(p) if rng.chance(p) => Some((
                    at,
                    Ev::Bad {
                        source: a.source,
                        chunk: a.chunk_idx,
                        epoch,
                    },
                )),
                _ => Some((
                    at,
                    Ev::Done {
                        source: a.source,
                        chunk: a.chunk_idx,
                        epoch,
                    },
                )),
            };
            if let Some(e) = ev {
                queue.push(Reverse(e));
            }
        }
        if let Some(outcome) = sched.poll_outcome() {
            return Run {
                outcome,
                delivered_by,
                fetches,
                n_chunks,
            };
        }
        let next_ev = queue.peek().map(|Reverse((t, _))| *t);
        let next_timer = sched.poll_timeout();
        let take_event = match (next_ev, next_timer) {
            (Some(e), Some(t)) => e <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => panic!("seed {seed}: stuck with nothing in flight and no outcome"),
        };
        if take_event {
            {
                let Reverse((t, ev)) = queue.pop().unwrap();
                now = now.max(t);
                match ev {
                    Ev::Done { source, chunk, epoch } if epoch == sources[source].epoch => {
                        if !sched.is_done(chunk) {
                            delivered_by[source] += 1;
                        }
                        sched.handle_chunk_done(now, source, chunk);
                    }
                    Ev::Bad { source, chunk, epoch } if epoch == sources[source].epoch => {
                        sched.handle_chunk_bad(now, source, chunk)
                    }
                    Ev::Failed { source, epoch } if epoch == sources[source].epoch => {
                        sources[source].epoch += 1;
                        sources[source].busy_until = now;
                        died_reported[source] = false;
                        sched.handle_source_failed(now, source);
                    }
                    _ => {} // a reply on a connection that has since failed: lost
                }
            }
        } else {
            now = now.max(next_timer.expect("checked above"));
            sched.handle_timeout(now);
        }
    }
    unreachable!()
}

fn random_scenario(seed: u64) -> (Vec<SimSource>, Vec<Vec<u16>>, Vec<bool>) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let n_sources = 2 + rng.below(5) as usize;
    let n_chunks = 1 + rng.below(150) as usize;
    let sources: Vec<SimSource> = (0..n_sources)
        .map(|_| {
            let behaviour = match rng.below(10) {
                0 | 1 => Behaviour::DiesAt(Duration::from_millis(rng.below(300))),
                2 => Behaviour::StallsAt(Duration::from_millis(rng.below(300))),
                3 => Behaviour::Lies(20 + rng.below(80)),
                _ => Behaviour::Honest,
            };
            SimSource {
                behaviour,
                per_chunk: Duration::from_millis(2 + rng.below(40)),
                busy_until: Duration::ZERO,
                epoch: 0,
            }
        })
        .collect();
    let honest: Vec<u16> = (0..n_sources)
        .filter(|&s| sources[s].behaviour == Behaviour::Honest)
        .map(|s| s as u16)
        .collect();
    let mut servable = vec![true; n_chunks];
    let holders = (0..n_chunks)
        .map(|c| {
            let mut h: Vec<u16> = (0..n_sources as u16).filter(|_| rng.chance(60)).collect();
            if !h.iter().any(|s| honest.contains(s)) {
                if let Some(&s) = honest.get(rng.below(honest.len().max(1) as u64) as usize) {
                    h.push(s);
                } else {
                    servable[c] = false;
                }
            }
            h
        })
        .collect();
    (sources, holders, servable)
}

#[test]
fn downloads_complete_whenever_every_chunk_has_an_honest_live_holder() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => (1..=400).collect(),
    };
    for seed in seeds {
        let (mut sources, holders, servable) = random_scenario(seed);
        let run = simulate(seed, &mut sources, holders);
        if servable.iter().all(|s| *s) {
            assert_eq!(run.outcome, Outcome::Complete, "seed {seed}: {sources:?}");
            // Duplicates come only from stalls, failures, lies and end game: bounded.
            assert!(
                run.fetches <= 3 * run.n_chunks as u64 + 40,
                "seed {seed}: {} fetches for {} chunks",
                run.fetches,
                run.n_chunks
            );
        } else {
            match &run.outcome {
                Outcome::Unservable(chunks) => {
                    for &c in chunks {
                        assert!(
                            !servable[c],
                            "seed {seed}: chunk {c} had an honest holder but was given up"
                        )
                    }
                }
                Outcome::Complete => {} // the dishonest holders may have told the truth this time
            }
        }
    }
}

#[test]
fn faster_sources_deliver_more() {
    let mut sources: Vec<SimSource> = [2u64, 2, 20]
        .iter()
        .map(|&ms| SimSource {
            behaviour: Behaviour::Honest,
            per_chunk: Duration::from_millis(ms),
            busy_until: Duration::ZERO,
            epoch: 0,
        })
        .collect();
    let run = simulate(7, &mut sources, vec![vec![0, 1, 2]; 300]);
    assert_eq!(run.outcome, Outcome::Complete);
    assert!(run.delivered_by[2] * 4 < run.delivered_by[0], "{:?}", run.delivered_by);
    assert!(
        run.fetches <= 300 + 12,
        "few duplicates with healthy sources: {}",
        run.fetches
    );
}

#[test]
fn a_chunk_held_only_by_a_dead_source_is_reported_unservable() {
    let mut sources = vec![
        SimSource {
            behaviour: Behaviour::Honest,
            per_chunk: Duration::from_millis(5),
            busy_until: Duration::ZERO,
            epoch: 0,
        },
        SimSource {
            behaviour: Behaviour::DiesAt(Duration::ZERO),
            per_chunk: Duration::from_millis(5),
            busy_until: Duration::ZERO,
            epoch: 0,
        },
    ];
    let run = simulate(3, &mut sources, vec![vec![0, 1], vec![1], vec![0]]);
    assert_eq!(run.outcome, Outcome::Unservable(vec![1]));
}
