//! The scrubber: re-hashes stored chunks at a bounded rate and quarantines any that no longer
//! verify, so bit rot is found before a client needs the chunk.
//!
//! It runs on its own OS thread (it is blocking disk I/O and hashing), pages through the
//! store in ID order, and sleeps as needed to stay under `bytes_per_sec`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trove_common::ChunkId;
use trove_common::id::ChunkHasher;

use crate::limits::SCRUB_PAGE_CHUNKS;
use crate::store::{Store, StoreError};

pub struct ScrubConfig {
    pub bytes_per_sec: u64,
    /// Rest between two full passes.
    pub pause: Duration,
}

pub fn spawn(store: Arc<Store>, config: ScrubConfig) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("scrub".into())
        .spawn(move || {
            loop {
                match scrub_pass(&store, &config) {
                    Ok(report) => tracing::info!(chunks = report.checked, bad = report.quarantined, "scrub pass done"),
                    Err(e) => tracing::warn!(error = %e, "scrub pass stopped"),
                }
                std::thread::sleep(config.pause);
            }
        })
        .expect("spawning the scrub thread")
}

#[derive(Debug, Default)]
pub struct PassReport {
    pub checked: u64,
    pub quarantined: u64,
}

pub fn scrub_pass(store: &Store, config: &ScrubConfig) -> Result<PassReport, StoreError> {
    let mut report = PassReport::default();
    let started = Instant::now();
    let mut bytes_done = 0u64;
    let mut buf = Vec::new();
    let mut after: Option<ChunkId> = None;
    loop {
        let (page, more) = store.page(after.as_ref(), SCRUB_PAGE_CHUNKS)?;
        for chunk in &page {
            buf.resize(chunk.len() as usize, 0);
            match store.read_at(chunk, 0, &mut buf) {
                Ok(()) => {}
                // Removed or quarantined since the listing: nothing to check.
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
            let mut h = ChunkHasher::new(chunk);
            h.update(&buf);
            report.checked += 1;
            if !h.matches() {
                tracing::warn!(chunk = %chunk, "chunk no longer matches its hash; quarantined, never served again");
                store.quarantine(chunk)?;
                report.quarantined += 1;
            }
            bytes_done += u64::from(chunk.len());
            throttle(started, bytes_done, config.bytes_per_sec);
        }
        after = page.last().copied();
        if !more {
            return Ok(report);
        }
    }
}

fn throttle(started: Instant, bytes_done: u64, bytes_per_sec: u64) {
    if bytes_per_sec == 0 {
        return;
    }
    let due = Duration::from_secs_f64(bytes_done as f64 / bytes_per_sec as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_common::Manifest;

    #[test]
    fn finds_and_quarantines_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let m = Manifest::of_bytes(&data, 16 * 1024).unwrap();
        let (store, _) = Store::open(dir.path(), 1 << 30, 0).unwrap();
        for c in m.chunks() {
            store.put(&c, &data[c.offset() as usize..][..c.len() as usize]).unwrap();
        }
        let victim = m.chunk(1);
        let path = dir
            .path()
            .join("chunks")
            .join(format!("{:02x}", victim.hash().0[0]))
            .join(victim.to_string());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let config = ScrubConfig {
            bytes_per_sec: 0,
            pause: Duration::ZERO,
        };
        let report = scrub_pass(&store, &config).unwrap();
        assert_eq!((report.checked, report.quarantined), (m.n_chunks() as u64, 1));
        assert!(!store.contains(&victim));
        assert!(store.contains(&m.chunk(0)));
        assert_eq!(scrub_pass(&store, &config).unwrap().quarantined, 0);
    }
}
