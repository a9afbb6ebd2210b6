//! Talking to systemd: readiness, watchdog and stopping notifications (`sd_notify(3)`), and
//! whether stdout goes to the journal.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). That is a few lines over
//! `std`'s `UnixDatagram`, so troved links no libsystemd and no crate for it. Without
//! `NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`) every call does nothing.
//!
//! The watchdog pings come from [`watchdog`], which pings only after a health probe of the
//! runtime and the disk succeeds: a wedged runtime or a hung SD card stops the pings, and
//! systemd restarts troved.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use tracing::{debug, warn};

/// Where notifications go. Cheap to share: sends are single datagrams.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The service manager's socket from `NOTIFY_SOCKET`, or `None` when there is none.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let name = name.as_encoded_bytes();
        let addr = match name.strip_prefix(b"@") {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)?
            }
            None => {
                use std::os::unix::ffi::OsStrExt;
                SocketAddr::from_pathname(Path::new(std::ffi::OsStr::from_bytes(name)))?
            }
        };
        Ok(Some(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        }))
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). Failures are logged, not
    /// returned: a lost notification must not take the chunk server down with it.
    pub fn send(&self, state: &str) {
        match self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            Ok(_) => debug!(state, "notified the service manager"),
            Err(e) => warn!(error = %e, state, "could not notify the service manager"),
        }
    }

    /// The listener is bound and the store is open: systemd may start what depends on us.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down");
    }
}

/// The watchdog period systemd asked for (`WatchdogSec=`, passed as `WATCHDOG_USEC`), if it
/// is meant for this process (`WATCHDOG_PID`, when set, names the process to ping).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings `WATCHDOG=1` every half `period` for as long as `probe` succeeds within that half.
///
/// The probe runs on the blocking pool, where chunk reads and writes run too: a ping then
/// proves that the async runtime schedules tasks, that the blocking pool takes work, and
/// that the probe's disk access returns. A probe that fails or hangs costs the ping, and a
/// hung probe is not started again until it returns, so a dead disk cannot pile them up.
pub async fn watchdog<F>(notifier: std::sync::Arc<Notifier>, period: Duration, probe: F)
where
    F: Fn() -> io::Result<()> + Clone + Send + 'static,
{
    let half = period / 2;
    let mut tick = tokio::time::interval(half);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hung: Option<tokio::task::JoinHandle<io::Result<()>>> = None;
    loop {
        tick.tick().await;
        let mut task = match hung.take() {
            Some(task) => task,
            None => tokio::task::spawn_blocking(probe.clone()),
        };
        match tokio::time::timeout(half, &mut task).await {
            Ok(Ok(Ok(()))) => notifier.send("WATCHDOG=1"),
            Ok(Ok(Err(e))) => warn!(error = %e, "health probe failed: not pinging the watchdog"),
            Ok(Err(e)) => warn!(error = %e, "health probe panicked: not pinging the watchdog"),
            Err(_) => {
                warn!(waited = ?half, "health probe hangs: not pinging the watchdog");
                hung = Some(task);
            }
        }
    }
}

/// True when stdout is connected to the journal (systemd sets `JOURNAL_STREAM` to the
/// device and inode of that stream). journald stamps every line itself, so troved's own
/// timestamps would only be noise there. Compared with stdout itself, because a child of a
/// journald-logged shell inherits the variable without the stream.
pub fn stdout_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some_and(|v| is_stream(&v, 1))
}

/// True when `fd` is the stream named by `journal_stream` (`DEVICE:INODE`).
fn is_stream(journal_stream: &std::ffi::OsStr, fd: libc::c_int) -> bool {
    let Some((dev, ino)) = journal_stream.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    // SAFETY: fstat only writes the struct we hand it; a closed fd is reported, not UB.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev as u64) && ino.parse::<u64>().ok() == Some(st.st_ino as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier_for(addr: SocketAddr) -> Notifier {
        Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr,
        }
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = notifier_for(SocketAddr::from_pathname(&path).unwrap());
        n.ready("serving");
        n.stopping();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=shutting down");
    }

    #[test]
    fn the_journal_is_recognised_by_device_and_inode() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::tempfile().unwrap();
        let m = file.metadata().unwrap();
        let fd = file.as_raw_fd();
        let named = |v: String| is_stream(std::ffi::OsStr::new(&v), fd);
        assert!(named(format!("{}:{}", m.dev(), m.ino())));
        assert!(!named(format!("{}:{}", m.dev(), m.ino() + 1)));
        assert!(!named("garbage".into()));
        assert!(!is_stream(std::ffi::OsStr::new("1:1"), -1));
    }

    #[test]
    fn datagrams_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("trove-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        notifier_for(addr).send("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watchdog_pings_only_while_the_probe_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let n = std::sync::Arc::new(notifier_for(SocketAddr::from_pathname(&path).unwrap()));
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = healthy.clone();
        let probe = move || {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err(io::Error::other("disk gone"))
            }
        };
        let period = Duration::from_millis(100);
        let task = tokio::spawn(watchdog(n, period, probe));
        let pings_within = |within: Duration| {
            let end = std::time::Instant::now() + within;
            let mut buf = [0u8; 64];
            let mut pings = 0;
            while std::time::Instant::now() < end {
                if let Ok(len) = listener.recv(&mut buf) {
                    assert_eq!(&buf[..len], b"WATCHDOG=1");
                    pings += 1;
                }
            }
            pings
        };
        let pings = tokio::task::block_in_place(|| pings_within(period * 10));
        assert!(pings >= 2, "a healthy probe pings: {pings}");
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        // A probe already under way when it turned bad may still ping once.
        let _ = tokio::task::block_in_place(|| pings_within(period));
        let pings = tokio::task::block_in_place(|| pings_within(period * 10));
        assert_eq!(pings, 0, "a failing probe does not ping");
        task.abort();
    }
}
