//! The chunk store: one file per chunk, named by its [`ChunkId`], under `chunks/<xx>/`.
//!
//! The filesystem is the index: nothing else records what is held, so there is nothing to
//! get out of step after a crash, and an idle node keeps no per-chunk state in memory.
//!
//! A chunk becomes visible only whole and verified: its bytes are hashed, written to
//! `tmp/`, fsynced, hard-linked into `chunks/<xx>/` (a link never replaces an existing
//! chunk, so racing puts of one chunk store and count it once), and the directory is fsynced. A crash at any
//! point leaves either no chunk or the whole chunk; leftovers in `tmp/` are removed at start.
//! A chunk that fails a later check (the scrubber, or a length mismatch) is moved to
//! `quarantine/` and is never served again. See `docs/on-disk.md` for the layout.
//!
//! Each chunk file also carries its blocks' chaining values in an extended attribute,
//! computed in the same pass that verifies the bytes at put: a get-blocks then sends them
//! and the blocks straight from the page cache, instead of reading and hashing the whole
//! chunk first. They are an optimisation, never trusted: every use checks them against the
//! chunk ID, and a file without them (an older troved wrote it, or the filesystem has no
//! user attributes) is hashed as before and given them.
//!
//! Whoever must know what the store gains and loses (the MQTT agent, which tells the
//! controller) registers an observer with [`Store::set_observer`]: it hears every chunk that
//! enters service ([`Change::Added`]) and every one that leaves it ([`Change::Removed`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use trove_common::blocks::{self, BlockVerifier};
use trove_common::{ChunkId, Hash32};

/// The extended attribute of a chunk file that holds its block chaining values: 32 bytes
/// per block, in order, nothing else (docs/on-disk.md).
const CVS_XATTR: &std::ffi::CStr = c"user.trove.cvs";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} does not hash to its ID")]
    HashMismatch(ChunkId),
    #[error("capacity full: {used} of {capacity} bytes used, chunk needs {needed}")]
    CapacityFull { used: u64, capacity: u64, needed: u64 },
    #[error("disk full: {free} bytes free, chunk needs {needed} plus a reserve of {reserve}")]
    DiskFull { free: u64, needed: u64, reserve: u64 },
    #[error("chunk {0} not held")]
    NotFound(ChunkId),
    #[error("i/o on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            StoreError::DiskFull {
                free: 0,
                needed: 0,
                reserve: 0,
            }
        } else {
            StoreError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// A chunk entering or leaving service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A put stored a chunk that was not held (not reported for a chunk already there).
    Added(ChunkId),
    /// A chunk was removed or quarantined.
    Removed(ChunkId),
}

/// Called synchronously, on whichever thread changed the store (a blocking-pool thread, the
/// scrubber), after the change is durable: it must be quick and must not block.
pub type Observer = Box<dyn Fn(Change) + Send + Sync>;

pub struct Store {
    chunks_dir: PathBuf,
    tmp_dir: PathBuf,
    quarantine_dir: PathBuf,
    capacity_bytes: u64,
    disk_reserve_bytes: u64,
    /// Bytes of stored chunks plus bytes reserved by puts under way.
    used_bytes: AtomicU64,
    n_chunks: AtomicU64,
    n_quarantined: AtomicU64,
    tmp_seq: AtomicU64,
    observer: OnceLock<Observer>,
}

/// What [`Store::open`] found.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub chunks: u64,
    pub bytes: u64,
    pub tmp_removed: u64,
    pub quarantined: u64,
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`, removes unfinished writes and
    /// counts what is held.
    pub fn open(
        data_dir: &Path,
        capacity_bytes: u64,
        disk_reserve_bytes: u64,
    ) -> Result<(Store, OpenReport), StoreError> {
        let store = Store {
            chunks_dir: data_dir.join("chunks"),
            tmp_dir: data_dir.join("tmp"),
            quarantine_dir: data_dir.join("quarantine"),
            capacity_bytes,
            disk_reserve_bytes,
            used_bytes: AtomicU64::new(0),
            n_chunks: AtomicU64::new(0),
            n_quarantined: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            observer: OnceLock::new(),
        };
        let mut report = OpenReport::default();
        for dir in [&store.chunks_dir, &store.tmp_dir, &store.quarantine_dir] {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        for entry in fs::read_dir(&store.tmp_dir).map_err(io_at(&store.tmp_dir))? {
            let path = entry.map_err(io_at(&store.tmp_dir))?.path();
            fs::remove_file(&path).map_err(io_at(&path))?;
            report.tmp_removed += 1;
        }
        for fan in fanout_dirs(&store.chunks_dir)? {
            for entry in fs::read_dir(&fan).map_err(io_at(&fan))? {
                let entry = entry.map_err(io_at(&fan))?;
                let name = entry.file_name();
                let parsed = name.to_str().and_then(|n| n.parse::<ChunkId>().ok());
                let len = entry.metadata().map_err(io_at(&entry.path()))?.len();
                match parsed {
                    Some(chunk)
                        if u64::from(chunk.len()) == len
                            && fanout_of(&chunk) == fan.file_name().unwrap_or_default().to_str().unwrap_or("") =>
                    {
                        report.chunks += 1;
                        report.bytes += len;
                    }
                    // Not something we wrote, or damaged: keep it out of service, don't delete.
                    _ => {
                        let to = store.quarantine_dir.join(entry.file_name());
                        fs::rename(entry.path(), &to).map_err(io_at(&to))?;
                        report.quarantined += 1;
                    }
                }
            }
        }
        let n_quarantined = fs::read_dir(&store.quarantine_dir)
            .map_err(io_at(&store.quarantine_dir))?
            .count() as u64;
        store.used_bytes.store(report.bytes, Ordering::Relaxed);
        store.n_chunks.store(report.chunks, Ordering::Relaxed);
        store.n_quarantined.store(n_quarantined, Ordering::Relaxed);
        Ok((store, report))
    }

    /// Registers the one observer of changes. Set once, before serving: a second call is
    /// refused (returns false) so that nobody silently steals the agent's feed.
    pub fn set_observer(&self, observer: Observer) -> bool {
        self.observer.set(observer).is_ok()
    }

    fn notify(&self, change: Change) {
        if let Some(observer) = self.observer.get() {
            observer(change);
        }
    }

    fn path_of(&self, chunk: &ChunkId) -> PathBuf {
        self.chunks_dir.join(fanout_of(chunk)).join(chunk.to_string())
    }

    pub fn contains(&self, chunk: &ChunkId) -> bool {
        self.path_of(chunk).is_file()
    }

    /// Opens a held chunk for reading. A stored file whose length does not match its name is
    /// quarantined and reported missing.
    pub fn open_chunk(&self, chunk: &ChunkId) -> Result<File, StoreError> {
        let path = self.path_of(chunk);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound(*chunk)),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let len = file.metadata().map_err(io_at(&path))?.len();
        if len != u64::from(chunk.len()) {
            tracing::warn!(chunk = %chunk, len, "stored length does not match the chunk ID; quarantining");
            self.quarantine(chunk)?;
            return Err(StoreError::NotFound(*chunk));
        }
        Ok(file)
    }

    /// Reads `buf.len()` bytes of a chunk starting at `at`.
    pub fn read_at(&self, chunk: &ChunkId, at: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let file = self.open_chunk(chunk)?;
        file.read_exact_at(buf, at).map_err(|source| StoreError::Io {
            path: self.path_of(chunk),
            source,
        })
    }

    /// Whether a put of `chunk` could go ahead now: `Ok(true)` if it is already held (nothing
    /// to write), `Ok(false)` if it fits, or why not. `put` checks again for real.
    pub fn admit(&self, chunk: &ChunkId) -> Result<bool, StoreError> {
        if self.contains(chunk) {
            return Ok(true);
        }
        let used = self.used_bytes();
        let needed = u64::from(chunk.len());
        if used + needed > self.capacity_bytes {
            return Err(StoreError::CapacityFull {
                used,
                capacity: self.capacity_bytes,
                needed,
            });
        }
        Ok(false)
    }

    /// Verifies and durably stores a chunk. Storing a chunk already held is a no-op.
    pub fn put(&self, chunk: &ChunkId, bytes: &[u8]) -> Result<(), StoreError> {
        // One pass: the block CVs, merged up, are the chunk's hash; and they are kept.
        let verified = (bytes.len() == chunk.len() as usize)
            .then(|| BlockVerifier::new(*chunk, blocks::block_cvs(chunk, bytes)).ok())
            .flatten()
            .ok_or(StoreError::HashMismatch(*chunk))?;
        if self.contains(chunk) {
            return Ok(());
        }
        let needed = u64::from(chunk.len());
        let reservation = self.reserve(needed)?;
        let free = disk_free_bytes(&self.tmp_dir).map_err(io_at(&self.tmp_dir))?;
        if free < needed + self.disk_reserve_bytes {
            return Err(StoreError::DiskFull {
                free,
                needed,
                reserve: self.disk_reserve_bytes,
            });
        }
        let tmp = self.tmp_dir.join(format!(
            "{}.{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.write_durably(&tmp, chunk, bytes, verified.cvs());
        let _ = fs::remove_file(&tmp);
        match result? {
            Placed::New => {
                reservation.keep();
                self.n_chunks.fetch_add(1, Ordering::Relaxed);
                self.notify(Change::Added(*chunk));
            }
            // A concurrent put of the same chunk won the race: one copy, counted once.
            Placed::AlreadyThere => {}
        }
        Ok(())
    }

    /// Writes `tmp`, then links it into place only if no chunk file is there yet (a hard link
    /// never replaces; a rename would, and two racing puts would both count the chunk).
    /// The caller removes `tmp` afterwards.
    fn write_durably(&self, tmp: &Path, chunk: &ChunkId, bytes: &[u8], cvs: &[Hash32]) -> Result<Placed, StoreError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(io_at(tmp))?;
        f.write_all(bytes).map_err(io_at(tmp))?;
        // Before the fsync, so the attribute is as durable as the bytes.
        store_cvs(&f, cvs);
        f.sync_all().map_err(io_at(tmp))?;
        drop(f);
        let to = self.path_of(chunk);
        let dir = to.parent().expect("chunk paths have a fan-out parent");
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let placed = match fs::hard_link(tmp, &to) {
            Ok(()) => Placed::New,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Placed::AlreadyThere,
            Err(e) => return Err(StoreError::Io { path: to, source: e }),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
        Ok(placed)
    }

    fn reserve(&self, needed: u64) -> Result<Reservation<'_>, StoreError> {
        let mut used = self.used_bytes.load(Ordering::Relaxed);
        loop {
            if used + needed > self.capacity_bytes {
                return Err(StoreError::CapacityFull {
                    used,
                    capacity: self.capacity_bytes,
                    needed,
                });
            }
            match self
                .used_bytes
                .compare_exchange_weak(used, used + needed, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Reservation {
                        store: self,
                        bytes: needed,
                        kept: false,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// Moves a chunk out of service, keeping its bytes for inspection.
    pub fn quarantine(&self, chunk: &ChunkId) -> Result<bool, StoreError> {
        let from = self.path_of(chunk);
        let to = self.quarantine_dir.join(chunk.to_string());
        match fs::rename(&from, &to) {
            Ok(()) => {
                self.n_chunks.fetch_sub(1, Ordering::Relaxed);
                self.used_bytes.fetch_sub(u64::from(chunk.len()), Ordering::Relaxed);
                self.n_quarantined.fetch_add(1, Ordering::Relaxed);
                self.notify(Change::Removed(*chunk));
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io { path: from, source: e }),
        }
    }

    /// Stops holding a chunk and deletes its bytes (the controller ordered it, e.g. to trim an
    /// extra copy). Returns whether it was held; removing a chunk not held is not an error, so
    /// a repeated order is harmless. Racing removals of one chunk count it once: only the
    /// unlink that succeeds adjusts the counters.
    pub fn remove(&self, chunk: &ChunkId) -> Result<bool, StoreError> {
        let path = self.path_of(chunk);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
        // The name is gone whatever happens next: count it gone before anything can fail.
        self.n_chunks.fetch_sub(1, Ordering::Relaxed);
        self.used_bytes.fetch_sub(u64::from(chunk.len()), Ordering::Relaxed);
        self.notify(Change::Removed(*chunk));
        // Make the removal durable, so a chunk reported gone does not come back after a crash.
        let dir = path.parent().expect("chunk paths have a fan-out parent");
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
        Ok(true)
    }

    /// Up to `limit` held chunks in ID order, strictly after `after`; and whether more remain.
    pub fn page(&self, after: Option<&ChunkId>, limit: usize) -> Result<(Vec<ChunkId>, bool), StoreError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        // Fan-out directories are named by the first hash byte, so walking them in name order
        // and sorting inside each walks all chunks in ID order.
        let start_fan = after.map(fanout_of);
        for fan in fanout_dirs(&self.chunks_dir)? {
            let fan_name = fan.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
            if start_fan.as_deref().is_some_and(|s| fan_name.as_str() < s) {
                continue;
            }
            let mut ids: Vec<ChunkId> = fs::read_dir(&fan)
                .map_err(io_at(&fan))?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|c| after.is_none_or(|a| c > a))
                .collect();
            ids.sort_unstable();
            for id in ids {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(id);
            }
        }
        Ok((out, false))
    }

    pub fn n_chunks(&self) -> u64 {
        self.n_chunks.load(Ordering::Relaxed)
    }
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    pub fn n_quarantined(&self) -> u64 {
        self.n_quarantined.load(Ordering::Relaxed)
    }
    pub fn disk_free_bytes(&self) -> u64 {
        disk_free_bytes(&self.chunks_dir).unwrap_or(0)
    }
}

enum Placed {
    New,
    AlreadyThere,
}

/// Capacity held for a put under way; given back unless the put succeeds.
struct Reservation<'a> {
    store: &'a Store,
    bytes: u64,
    kept: bool,
}

impl Reservation<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.store.used_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// The block CVs stored with the chunk file `file` of `chunk`, checked against the chunk ID;
/// `None` if there are none or they do not check (then hash the bytes, and
/// [`store_cvs`] the result).
pub fn stored_cvs(file: &File, chunk: &ChunkId) -> Option<BlockVerifier> {
    let n = blocks::n_blocks(chunk.len()) as usize;
    let mut buf = vec![0u8; n * 32];
    // SAFETY: the buffer is valid for writes of `buf.len()` bytes and the name is a C string.
    let got = unsafe { libc::fgetxattr(file.as_raw_fd(), CVS_XATTR.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got != buf.len() as isize {
        return None;
    }
    let cvs = buf
        .chunks_exact(32)
        .map(|c| Hash32(c.try_into().expect("chunks of 32")))
        .collect();
    BlockVerifier::new(*chunk, cvs).ok()
}

/// Stores `cvs` with the chunk file `file`. Best effort, and says whether it worked: a
/// filesystem without user attributes (or a chunk with more CVs than an attribute holds)
/// simply goes without, and is hashed when its blocks are asked for.
pub fn store_cvs(file: &File, cvs: &[Hash32]) -> bool {
    let bytes: Vec<u8> = cvs.iter().flat_map(|h| h.0).collect();
    // SAFETY: the value is valid for reads of `bytes.len()` bytes and the name is a C string.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            CVS_XATTR.as_ptr(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
        )
    };
    r == 0
}

fn fanout_of(chunk: &ChunkId) -> String {
    format!("{:02x}", chunk.hash().0[0])
}

fn fanout_dirs(chunks_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(chunks_dir)
        .map_err(io_at(chunks_dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn disk_free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_common::Manifest;

    fn chunks_of(bytes: &[u8]) -> Vec<(ChunkId, Vec<u8>)> {
        let m = Manifest::of_bytes(bytes, 16 * 1024).unwrap();
        m.chunks()
            .map(|c| (c, bytes[c.offset() as usize..][..c.len() as usize].to_vec()))
            .collect()
    }

    #[test]
    fn put_read_page_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let chunks = chunks_of(&data);
        {
            let (store, _) = Store::open(dir.path(), 1 << 30, 0).unwrap();
            for (c, b) in &chunks {
                store.put(c, b).unwrap();
            }
            let mut buf = vec![0; 10];
            store.read_at(&chunks[1].0, 5, &mut buf).unwrap();
            assert_eq!(buf, chunks[1].1[5..15]);
        }
        let (store, report) = Store::open(dir.path(), 1 << 30, 0).unwrap();
        assert_eq!(report.chunks, chunks.len() as u64);
        assert_eq!(store.used_bytes(), data.len() as u64);
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = store.page(after.as_ref(), 2).unwrap();
            all.extend(page.iter().copied());
            after = page.last().copied();
            if !more {
                break;
            }
        }
        let mut expected: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        expected.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn refuses_bad_bytes_and_over_capacity_leaving_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 40_000];
        let chunks = chunks_of(&data);
        let (store, _) = Store::open(dir.path(), 20_000, 0).unwrap();
        let mut bad = chunks[0].1.clone();
        bad[0] ^= 1;
        assert!(matches!(
            store.put(&chunks[0].0, &bad),
            Err(StoreError::HashMismatch(_))
        ));
        store.put(&chunks[0].0, &chunks[0].1).unwrap();
        assert!(matches!(
            store.put(&chunks[1].0, &chunks[1].1),
            Err(StoreError::CapacityFull { .. })
        ));
        assert_eq!(store.used_bytes(), 16 * 1024);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(!store.contains(&chunks[1].0));
    }

    #[test]
    fn observer_hears_new_chunks_removals_and_quarantines_once() {
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 13) as u8).collect();
        let chunks = chunks_of(&data);
        let (store, _) = Store::open(dir.path(), 1 << 30, 0).unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        assert!(store.set_observer(Box::new(move |c| sink.lock().unwrap().push(c))));
        assert!(!store.set_observer(Box::new(|_| {})), "a second observer is refused");
        let (a, b) = (chunks[0].0, chunks[1].0);
        store.put(&a, &chunks[0].1).unwrap();
        store.put(&a, &chunks[0].1).unwrap(); // already held: no second Added
        store.put(&b, &chunks[1].1).unwrap();
        assert_eq!((store.n_chunks(), store.used_bytes()), (2, 2 * 16 * 1024));

        assert!(store.remove(&a).unwrap());
        assert!(!store.remove(&a).unwrap(), "removing twice is harmless and silent");
        assert!(!store.contains(&a));
        assert_eq!((store.n_chunks(), store.used_bytes()), (1, 16 * 1024));
        assert!(store.quarantine(&b).unwrap());
        assert_eq!((store.n_chunks(), store.used_bytes()), (0, 0));
        assert_eq!(
            *heard.lock().unwrap(),
            vec![
                Change::Added(a),
                Change::Added(b),
                Change::Removed(a),
                Change::Removed(b)
            ]
        );
        // Removed for good: a reopened store does not find it.
        drop(store);
        let (_, report) = Store::open(dir.path(), 1 << 30, 0).unwrap();
        assert_eq!(report.chunks, 0);
    }

    #[test]
    fn open_clears_tmp_and_quarantines_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![3u8; 20_000];
        let chunks = chunks_of(&data);
        {
            let (store, _) = Store::open(dir.path(), 1 << 30, 0).unwrap();
            store.put(&chunks[0].0, &chunks[0].1).unwrap();
        }
        fs::write(dir.path().join("tmp/123.0"), b"half a chunk").unwrap();
        // A file named like a chunk but with the wrong length (e.g. damaged by hand).
        let p = dir
            .path()
            .join("chunks")
            .join(fanout_of(&chunks[1].0))
            .join(chunks[1].0.to_string());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"short").unwrap();
        let (store, report) = Store::open(dir.path(), 1 << 30, 0).unwrap();
        assert_eq!((report.chunks, report.tmp_removed, report.quarantined), (1, 1, 1));
        assert!(!store.contains(&chunks[1].0));
        assert_eq!(store.n_quarantined(), 1);
    }
}
