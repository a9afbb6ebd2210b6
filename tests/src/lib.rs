//! The end-to-end harness: starts the real `troved`, `trove-controller` and `trove` binaries
//! on 127.0.0.1 with temporary directories and port 0, and gives tests what they need to look
//! at the result.
//!
//! - [`Node`]: one `troved`, standalone (trusting a [`TestKey`]) or joined to a controller.
//! - [`Controller`]: one `trove-controller`, with a tiny HTTP client for its API ([`http`]).
//! - [`Postgres`] and [`Mosquitto`]: a throwaway PostgreSQL and a Mosquitto child, for the
//!   second stack; they panic, never skip, when the software is not installed.
//! - [`Stack`]: broker + database + controller + joined appliances, of either [`StackKind`].
//!
//! Nothing here sleeps to wait for readiness: every wait polls a condition with a deadline
//! ([`wait_until`], [`Deadline`]) and fails with what it was waiting for.
//!
//! The binaries are looked up in `TROVE_BIN_DIR`, or else next to the test executable
//! (`target/debug/`); build them first with `cargo build --workspace --bins`.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod browser;
pub use trove_common;
use trove_common::grant::SigningKey;
use trove_common::{ChunkId, Manifest, ManifestBuilder, NodeId};

/// How often conditions are polled.
pub const POLL_STEP: Duration = Duration::from_millis(20);
/// How long a node may take to start and write its address.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
pub const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Binaries

/// The directory holding `troved` and `trove`.
/// The log filter for spawned Trove processes: `info`, or `TROVE_TEST_LOG` when set (say,
/// `info,sqlx=debug` to time every statement).
pub fn log_filter() -> String {
    std::env::var("TROVE_TEST_LOG").unwrap_or_else(|_| "info".into())
}

pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TROVE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // The test executable is target/<profile>/deps/<name>-<hash>; binaries sit in target/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable has no grandparent directory")
        .to_path_buf()
}

/// The path of binary `name`, which must exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "{} not found: run `cargo build --workspace --bins` first (or set TROVE_BIN_DIR)",
            path.display()
        );
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// A point in time a wait must not pass.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }
    pub fn secs(s: u64) -> Deadline {
        Deadline::after(Duration::from_secs(s))
    }
    pub fn expired(&self) -> bool {
        Instant::now() >= self.0
    }
    /// Panics, naming `what` was awaited, once the deadline has passed.
    pub fn check(&self, what: &str) {
        if self.expired() {
            panic!("timed out waiting for {what}");
        }
    }
}

/// Polls `cond` every [`POLL_STEP`] until it holds; panics naming `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Deadline::after(within);
    loop {
        if cond() {
            return;
        }
        deadline.check(what);
        std::thread::sleep(POLL_STEP);
    }
}

/// Polls `f` until it returns `Some`; panics naming `what` after `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Deadline::after(within);
    loop {
        if let Some(v) = f() {
            return v;
        }
        deadline.check(what);
        std::thread::sleep(POLL_STEP);
    }
}

/// Unix time now, in seconds.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A controller signing key, with its secret written where `trove put --key` can read it.
pub struct TestKey {
    pub key: SigningKey,
    secret_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestKey {
    /// A key derived from `seed` (tests pass their own name: distinct and reproducible).
    pub fn new(seed: &str) -> TestKey {
        let secret: [u8; 32] = *blake3::hash(format!("trove-tests key {seed}").as_bytes()).as_bytes();
        TestKey::from_secret(secret)
    }

    pub fn from_secret(secret: [u8; 32]) -> TestKey {
        let key = SigningKey::from_secret(&secret);
        let dir = tempfile::Builder::new()
            .prefix("trove-key-")
            .tempdir()
            .expect("tempdir");
        let secret_path = dir.path().join("grant.key");
        fs::write(&secret_path, format!("{}\n", trove_common::hex::encode(&key.secret()))).expect("writing the key");
        TestKey {
            key,
            secret_path,
            _dir: dir,
        }
    }

    pub fn secret_path(&self) -> &Path {
        &self.secret_path
    }

    /// The public key as troved's `--trusted-key` takes it.
    pub fn public_hex(&self) -> String {
        self.key.public().to_string()
    }

    /// A grant for `chunk` valid for ten minutes.
    pub fn grant(&self, chunk: ChunkId) -> trove_common::Grant {
        self.key.grant(chunk, now_s() + 600)
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// How to start a `troved`.
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    trusted_key: Option<String>,
    /// `--join TOKEN`, given on the first start only: a joined node must remember the
    /// controller, its broker and its credentials across restarts.
    join_token: Option<String>,
    capacity_bytes: u64,
    scrub_pause_secs: u64,
    /// Another `troved` (a cross build), and the emulator that runs it (`qemu-aarch64-static`),
    /// instead of this build's native binary.
    program: Option<(Vec<std::ffi::OsString>, PathBuf)>,
    extra_args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl NodeBuilder {
    /// Runs `binary` instead of this build's `troved`, behind `runner` (the emulator and its
    /// flags; empty to run it directly).
    pub fn program<S: AsRef<OsStr>>(mut self, runner: &[S], binary: &Path) -> Self {
        let runner = runner.iter().map(|a| a.as_ref().to_owned()).collect();
        self.program = Some((runner, binary.to_owned()));
        self
    }
    /// One more command-line argument for every start.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.extra_args.push(arg.as_ref().to_owned());
        self
    }
    /// An environment variable for every start.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }
    /// Joins the controller that made `token` (instead of trusting a local test key).
    pub fn join(mut self, token: &str) -> Self {
        self.join_token = Some(token.to_owned());
        self.trusted_key = None;
        self
    }
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity_bytes = bytes;
        self
    }
    pub fn scrub_pause_secs(mut self, secs: u64) -> Self {
        self.scrub_pause_secs = secs;
        self
    }
    /// Starts the node and waits until it serves.
    pub fn start(self) -> Node {
        let dir = tempfile::Builder::new().prefix("troved-").tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let log = dir.path().join("troved.log");
        let join_token = self.join_token.clone();
        let mut node = Node {
            join_token,
            config: self,
            dir,
            data,
            log,
            child: None,
            addr: None,
        };
        node.spawn();
        node
    }
}

/// A running `troved` on 127.0.0.1, with its own temporary data directory and log file.
/// Killed when dropped.
pub struct Node {
    config: NodeBuilder,
    /// The token it joined with, if any (it holds the node's broker password and MAC key).
    join_token: Option<String>,
    dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    addr: Option<SocketAddr>,
}

impl Node {
    /// A node trusting `key`: 1 GiB capacity, no disk reserve, unthrottled scrubbing once at
    /// start and then every hour.
    pub fn builder(key: &TestKey) -> NodeBuilder {
        NodeBuilder {
            trusted_key: Some(key.public_hex()),
            join_token: None,
            capacity_bytes: 1 << 30,
            scrub_pause_secs: 3600,
            program: None,
            extra_args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// A node that joins a controller with `token` (see [`Controller::enroll`]); otherwise
    /// like [`Node::builder`].
    pub fn joining(token: &str) -> NodeBuilder {
        NodeBuilder {
            trusted_key: None,
            join_token: Some(token.to_owned()),
            capacity_bytes: 1 << 30,
            scrub_pause_secs: 3600,
            program: None,
            extra_args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// A node given neither a key nor a token: what it trusts and whom it joins must come
    /// from elsewhere (first-boot files, see `--firstboot`); otherwise like [`Node::builder`].
    pub fn unconfigured() -> NodeBuilder {
        NodeBuilder {
            trusted_key: None,
            join_token: None,
            capacity_bytes: 1 << 30,
            scrub_pause_secs: 3600,
            program: None,
            extra_args: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub fn start(key: &TestKey) -> Node {
        Node::builder(key).start()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let listen_file = self.data.join("listen.addr");
        match fs::remove_file(&listen_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", listen_file.display()),
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the node log");
        let mut cmd = match &self.config.program {
            Some((runner, binary)) => match runner.split_first() {
                Some((emulator, flags)) => {
                    let mut cmd = Command::new(emulator);
                    cmd.args(flags).arg(binary);
                    cmd
                }
                None => Command::new(binary),
            },
            None => Command::new(bin("troved")),
        };
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(&self.data)
            .arg("--capacity")
            .arg(self.config.capacity_bytes.to_string())
            .arg("--disk-reserve")
            .arg("0")
            .arg("--scrub-bytes-per-sec")
            .arg("0")
            .arg("--scrub-pause-secs")
            .arg(self.config.scrub_pause_secs.to_string())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", log_filter())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if let Some(key) = &self.config.trusted_key {
            cmd.arg("--trusted-key").arg(key);
        }
        // Only the first start joins; later ones must find what the join left in `data`.
        if let Some(token) = self.config.join_token.take() {
            cmd.arg("--join").arg(token);
        }
        cmd.args(&self.config.extra_args)
            .envs(self.config.envs.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        self.child = Some(child);
        let addr = {
            let child = self.child.as_mut().expect("just set");
            let log = &self.log;
            wait_for(START_DEADLINE, "troved to write listen.addr", || {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("troved exited with {status} before serving; log:\n{}", read_log(log));
                }
                // troved writes it atomically (rename), so a file that exists is whole.
                let text = fs::read_to_string(&listen_file).ok()?;
                Some(
                    text.trim()
                        .parse::<SocketAddr>()
                        .unwrap_or_else(|e| panic!("listen.addr {text:?}: {e}")),
                )
            })
        };
        self.addr = Some(addr);
    }

    /// The join token it was started with (see [`NodeBuilder::join`]).
    pub fn join_token(&self) -> Option<&str> {
        self.join_token.as_deref()
    }

    /// The address it serves on. Panics if it is not running.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("node is not running")
    }

    /// `addr()` as a string, for command lines.
    pub fn addr_arg(&self) -> String {
        self.addr().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is not running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.addr = None;
    }

    /// SIGTERM, and waits for it to exit; returns how it exited.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("node is not running");
        self.addr = None;
        // SAFETY: signalling our own child, which has not been reaped (so the pid is its).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        wait_for(within, "troved to exit after SIGTERM", || {
            child.try_wait().expect("try_wait")
        })
    }

    /// Starts it again on the same data directory (on a new port).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Changes the scrub pause used from the next (re)start on.
    pub fn set_scrub_pause_secs(&mut self, secs: u64) {
        self.config.scrub_pause_secs = secs;
    }

    /// Everything it logged so far (all runs), without colour codes.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until at least `n` log lines contain `needle`.
    pub fn wait_for_log(&self, needle: &str, n: usize, within: Duration) {
        wait_until(within, &format!("{n} log lines with {needle:?}"), || {
            self.log_count(needle) >= n
        });
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn node_id(&self) -> NodeId {
        let path = self.data.join("node_id");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
    }

    /// Where the node keeps `chunk` while it is in service.
    pub fn chunk_path(&self, chunk: &ChunkId) -> PathBuf {
        self.data
            .join("chunks")
            .join(format!("{:02x}", chunk.hash().0[0]))
            .join(chunk.to_string())
    }

    /// Where a quarantined `chunk` ends up.
    pub fn quarantine_path(&self, chunk: &ChunkId) -> PathBuf {
        self.data.join("quarantine").join(chunk.to_string())
    }

    /// Names of the files in `<data>/tmp` (unfinished writes).
    pub fn tmp_files(&self) -> Vec<String> {
        list_names(&self.data.join("tmp"))
    }

    /// Every file under `<data>/chunks/<xx>/`, with its length.
    pub fn chunk_files(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let Ok(fans) = fs::read_dir(self.data.join("chunks")) else {
            return out;
        };
        for fan in fans.flatten() {
            let Ok(entries) = fs::read_dir(fan.path()) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(meta) = e.metadata() {
                    out.push((e.file_name().to_string_lossy().into_owned(), meta.len()));
                }
            }
        }
        out.sort();
        out
    }

    /// Resident memory of the process, in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }

    /// A fresh connection to it.
    pub async fn client(&self) -> trove_common::net::Client {
        trove_common::net::connect(self.addr())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.addr()))
    }

    /// Lines of its log that say a connection from `peer` was closed.
    pub fn closing_lines_for(&self, peer: SocketAddr) -> Vec<String> {
        let needle = peer.to_string();
        self.log()
            .lines()
            .filter(|l| l.contains("closing connection") && contains_addr(l, &needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when `line` names `addr` exactly (not as the prefix of a longer port).
fn contains_addr(line: &str, addr: &str) -> bool {
    line.match_indices(addr)
        .any(|(i, _)| !line[i + addr.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

fn read_log(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    strip_ansi(&String::from_utf8_lossy(&bytes))
}

/// Removes terminal colour sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn list_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// VmRSS of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

// ---------------------------------------------------------------------------------------------
// Files

/// A fast deterministic byte stream (xorshift64*); the same seed gives the same bytes.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf`; a buffer whose length is not a multiple of 8 ends the stream's alignment,
    /// so fill in multiples of 8 except for the last piece.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let last = self.next_u64().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&last[..n]);
        }
    }
}

/// `len` deterministic pseudo-random bytes: the same as [`random_file`] writes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    TestRng::new(seed).fill(&mut v);
    v
}

/// Writes `len` deterministic pseudo-random bytes to `path`, in 1 MiB pieces.
pub fn random_file(path: &Path, len: u64, seed: u64) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut rng = TestRng::new(seed);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("writing test data");
        left -= n as u64;
    }
    f.sync_all().ok();
}

/// The BLAKE3 hash of a file as `b3sum` prints it (the Debian `b3sum` if installed, else the
/// `blake3` crate).
pub fn b3sum(path: &Path) -> String {
    if let Ok(out) = Command::new("b3sum").arg("--no-names").arg(path).output()
        && out.status.success()
    {
        let text = String::from_utf8(out.stdout).expect("b3sum prints text");
        let hex = text.trim();
        assert_eq!(hex.len(), 64, "b3sum printed {text:?}");
        return hex.to_owned();
    }
    let mut hasher = blake3::Hasher::new();
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).expect("reading");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().to_hex().to_string()
}

/// The manifest of a file with `chunk_bytes` chunks, computed here (not by the CLI).
pub fn manifest_of(path: &Path, chunk_bytes: u32) -> Manifest {
    let mut b = ManifestBuilder::new(chunk_bytes).expect("valid chunk size");
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).expect("reading");
        if n == 0 {
            break;
        }
        b.update(&buf[..n]);
    }
    b.finish()
}

/// The bytes of `chunk` in file `path`.
pub fn chunk_bytes_of(path: &Path, chunk: &ChunkId) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut buf = vec![0u8; chunk.len() as usize];
    f.read_exact_at(&mut buf, chunk.offset()).expect("reading a chunk");
    buf
}

// ---------------------------------------------------------------------------------------------
// The `trove` CLI

/// A `trove` command with `args`, ready to run or spawn.
pub fn trove_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin("trove"));
    // Never the stored logins of whoever runs the tests: a config directory of no one.
    let no_config = std::env::temp_dir().join("trove-tests-no-config");
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", no_config)
        .stdin(Stdio::null());
    cmd
}

/// Runs `trove` with `args` and returns what it did, success or not.
pub fn run_trove<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = trove_command(args);
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `trove` with `args`; panics with its stderr unless it succeeds. Returns stdout.
pub fn run_trove_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = run_trove(&args);
    if !out.status.success() {
        panic!(
            "`trove {}` failed ({}):\nstderr:\n{}\nstdout:\n{}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8(out.stdout).expect("trove prints UTF-8")
}

/// A spawned process that is killed when dropped (so a failing test leaves nothing behind).
pub struct Spawned {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Spawns `cmd` with stdout and stderr captured to files.
    pub fn spawn(mut cmd: Command) -> Spawned {
        let dir = tempfile::Builder::new()
            .prefix("trove-proc-")
            .tempdir()
            .expect("tempdir");
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        cmd.stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Spawned {
            child: Some(child),
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its exit status if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().expect("running").try_wait().expect("try_wait")
    }

    /// Waits for it to end (polling, up to `within`; killed and panicking after that).
    pub fn wait(&mut self, within: Duration, what: &str) -> ExitStatus {
        let deadline = Deadline::after(within);
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if deadline.expired() {
                self.kill();
                panic!("timed out waiting for {what}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(POLL_STEP);
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `trove put FILE --key K --node A... --replicas R --manifest-out M`; returns the printed
/// file ID.
pub fn trove_put(file: &Path, key: &TestKey, nodes: &[&Node], replicas: usize, manifest_out: &Path) -> String {
    let mut args: Vec<std::ffi::OsString> = vec!["put".into(), file.into(), "--key".into(), key.secret_path().into()];
    for n in nodes {
        args.push("--node".into());
        args.push(n.addr_arg().into());
    }
    args.extend([
        "--replicas".into(),
        replicas.to_string().into(),
        "--manifest-out".into(),
        manifest_out.into(),
    ]);
    let out = run_trove_ok(&args);
    let id = out.trim().to_owned();
    assert!(
        is_hex64(&id),
        "`trove put` should print a 64-hex file ID, printed {out:?}"
    );
    id
}

/// The arguments of `trove fetch MANIFEST --node A... -o OUT --no-progress`.
pub fn fetch_args(manifest: &Path, nodes: &[&Node], out: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["fetch".into(), manifest.into()];
    for n in nodes {
        args.push("--node".into());
        args.push(n.addr_arg().into());
    }
    args.extend(["-o".into(), out.into(), "--no-progress".into()]);
    args
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `OUT` + `suffix`, e.g. the `.trove-state` file next to a download.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A download's resume state, as `trove fetch` keeps it in `OUT.trove-state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeState {
    pub file: String,
    pub size: u64,
    pub chunk_bytes: u64,
    /// Bit i (LSB first within each byte, byte 0 first) set when chunk i is written.
    pub done: Vec<u8>,
}

impl ResumeState {
    /// Parses the text form; `None` if it is not (or not yet wholly) there.
    pub fn parse(text: &str) -> Option<ResumeState> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "trove-resume v1" {
            return None;
        }
        let (mut file, mut size, mut chunk_bytes, mut done) = (None, None, None, None);
        for line in lines {
            let (k, v) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
            match k {
                "file" => file = Some(v.trim().to_owned()),
                "size" => size = v.trim().parse().ok(),
                "chunk_bytes" => chunk_bytes = v.trim().parse().ok(),
                "done" => done = Some(decode_hex(v.trim())?),
                _ => {}
            }
        }
        Some(ResumeState {
            file: file?,
            size: size?,
            chunk_bytes: chunk_bytes?,
            done: done?,
        })
    }

    pub fn read(path: &Path) -> Option<ResumeState> {
        ResumeState::parse(&fs::read_to_string(path).ok()?)
    }

    pub fn is_done(&self, chunk_idx: usize) -> bool {
        self.done
            .get(chunk_idx / 8)
            .is_some_and(|b| b & (1 << (chunk_idx % 8)) != 0)
    }

    pub fn n_done(&self) -> usize {
        self.done.iter().map(|b| b.count_ones() as usize).sum()
    }
}

/// Hex of any even length (either case) to bytes; `None` if it is not hex.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The number after `"key":` in a one-line JSON object (enough for `--json` output).
pub fn json_u64(json: &str, key: &str) -> Option<u64> {
    let rest = json_value(json, key)?;
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The string after `"key":` in a one-line JSON object.
pub fn json_str(json: &str, key: &str) -> Option<String> {
    let rest = json_value(json, key)?.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\"");
    let at = json.find(&pat)? + pat.len();
    Some(json[at..].trim_start().strip_prefix(':')?.trim_start())
}

/// The objects of the `"sources":[...]` array of `trove fetch --json`, as text for
/// [`json_u64`] and [`json_str`].
pub fn json_sources(json: &str) -> Vec<String> {
    let Some(rest) = json_value(json, "sources") else {
        return Vec::new();
    };
    let Some(end) = rest.find(']') else { return Vec::new() };
    rest[..end]
        .split('}')
        .filter(|o| o.contains("\"addr\""))
        .map(|o| format!("{o}}}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP (a tiny blocking HTTP/1.1 client: enough for the controller's JSON API in tests)

/// How long one HTTP exchange with the controller may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of an HTTP answer read (a runaway answer fails the test instead).
const HTTP_ANSWER_BYTES_MAX: usize = 64 << 20;

/// A whole HTTP answer.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

impl HttpAnswer {
    /// The body parsed as `T`; panics with the body if it does not parse.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} answer is not the expected JSON ({e}): {}",
                self.status, self.body
            )
        })
    }
}

/// One request to `url` (`http://host:port/path`), `Connection: close`, with an optional
/// bearer token and JSON body. Panics if the server cannot be reached or answers garbage.
pub fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> HttpAnswer {
    try_http(method, url, token, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Like [`http`], but a connection failure is an `Err` (for polling readiness).
pub fn try_http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> std::io::Result<HttpAnswer> {
    let body = body.unwrap_or("");
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Accept", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        headers.push(("Content-Type", "application/json"));
    }
    let answer = web_request(url, method, "", &headers, body.as_bytes())?;
    Ok(HttpAnswer {
        status: answer.status,
        body: String::from_utf8_lossy(&answer.body).into_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Processes in their own group

/// Spawns `cmd` as the leader of a new process group, so [`kill_group`] also ends whatever
/// it started (the controller's `--local-nodes` appliances).
fn spawn_group(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

/// SIGKILL to the process group `child` leads, then reaps it.
fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) with a negative pid signals the group this child leads (we made it
    // with process_group(0)); it touches no memory.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A free TCP port on 127.0.0.1 (free when asked; a server that then fails to bind it is
/// retried by the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

fn remove_if_exists(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("removing {}: {e}", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// The controller

/// How long the controller may take to serve its API (PostgreSQL migrations included).
pub const CONTROLLER_START_DEADLINE: Duration = Duration::from_secs(60);

/// How to start a `trove-controller`.
#[derive(Clone, Debug)]
pub struct ControllerBuilder {
    grace_secs: u64,
    database_url: Option<String>,
    mqtt_url: Option<String>,
    local_nodes: Option<u32>,
    extra_args: Vec<String>,
}

impl ControllerBuilder {
    /// Seconds an appliance may stay offline before its chunks are copied elsewhere.
    pub fn grace_secs(mut self, secs: u64) -> Self {
        self.grace_secs = secs;
        self
    }
    /// `--database-url` (PostgreSQL); SQLite in the data directory without it.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }
    /// `--mqtt-url` (an external broker); the embedded broker without it.
    pub fn mqtt_url(mut self, url: &str) -> Self {
        self.mqtt_url = Some(url.to_owned());
        self
    }
    /// `--local-nodes N`: the controller starts N `troved` of its own under `DATA/nodes/`.
    pub fn local_nodes(mut self, n: u32) -> Self {
        self.local_nodes = Some(n);
        self
    }
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Starts it and waits until its API answers.
    pub fn start(self) -> Controller {
        let dir = tempfile::Builder::new()
            .prefix("trove-controller-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).expect("creating the controller's data dir");
        let log = dir.path().join("controller.log");
        let mut c = Controller {
            config: self,
            mqtt_listen: "127.0.0.1:0".into(),
            dir,
            data,
            log,
            child: None,
            url: None,
        };
        c.spawn();
        c
    }
}

/// A running `trove-controller` on 127.0.0.1 (HTTP and embedded broker on free ports), with
/// its own temporary data directory and log file. Killed, with its process group, on drop.
pub struct Controller {
    config: ControllerBuilder,
    /// `--mqtt-listen`: port 0 on the first start, then the port it picked, so that a
    /// restarted controller's embedded broker is where the join tokens say it is.
    mqtt_listen: String,
    dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    url: Option<String>,
}

impl Controller {
    /// Embedded broker, SQLite, a 2 s grace period.
    pub fn builder() -> ControllerBuilder {
        ControllerBuilder {
            grace_secs: 2,
            database_url: None,
            mqtt_url: None,
            local_nodes: None,
            extra_args: Vec::new(),
        }
    }

    pub fn start() -> Controller {
        Controller::builder().start()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "controller already running");
        let addr_file = self.data.join("http.addr");
        remove_if_exists(&addr_file);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the controller log");
        let mut cmd = Command::new(bin("trove-controller"));
        cmd.arg("--data")
            .arg(&self.data)
            .arg("--http")
            .arg("127.0.0.1:0")
            .arg("--mqtt-listen")
            .arg(&self.mqtt_listen)
            .arg("--grace-secs")
            .arg(self.config.grace_secs.to_string());
        if let Some(url) = &self.config.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some(url) = &self.config.mqtt_url {
            cmd.arg("--mqtt-url").arg(url);
        }
        if let Some(n) = self.config.local_nodes {
            cmd.arg("--local-nodes").arg(n.to_string());
        }
        cmd.args(&self.config.extra_args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", log_filter())
            .env("TROVE_BIN_DIR", bin_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.child = Some(spawn_group(&mut cmd));
        let deadline = Deadline::after(CONTROLLER_START_DEADLINE);
        let addr = loop {
            self.check_alive("writing http.addr");
            // Written once the listener is bound; tolerate a half-written file by re-reading.
            if let Ok(text) = fs::read_to_string(&addr_file) {
                let text = text.trim();
                let host = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
                if let Ok(addr) = host.parse::<SocketAddr>() {
                    break addr;
                }
            }
            if deadline.expired() {
                panic!(
                    "timed out waiting for the controller to write {}; log:\n{}",
                    addr_file.display(),
                    self.log()
                );
            }
            std::thread::sleep(POLL_STEP);
        };
        let url = format!("http://{addr}");
        loop {
            self.check_alive("answering /api/v1/health");
            if let Ok(a) = try_http("GET", &format!("{url}/api/v1/health"), None, None)
                && a.status == 200
            {
                break;
            }
            if deadline.expired() {
                panic!(
                    "timed out waiting for {url}/api/v1/health to answer 200; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL_STEP);
        }
        self.url = Some(url);
        if self.config.mqtt_url.is_none()
            && let Some(addr) = self.mqtt_addr()
        {
            self.mqtt_listen = addr.to_string();
        }
    }

    fn check_alive(&mut self, doing: &str) {
        let child = self.child.as_mut().expect("controller is not running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            panic!(
                "trove-controller exited with {status} before {doing}; log:\n{}",
                self.log()
            );
        }
    }

    /// `http://127.0.0.1:PORT`. Panics if it is not running.
    pub fn url(&self) -> &str {
        self.url.as_deref().expect("controller is not running")
    }

    /// The bootstrap admin API token it wrote on first start.
    pub fn admin_token(&self) -> String {
        let path = self.data.join("admin.token");
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The embedded broker's address (`DATA/mqtt.addr`), when it runs one.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        let text = fs::read_to_string(self.data.join("mqtt.addr")).ok()?;
        let text = text.trim();
        let host = text.strip_prefix("mqtt://").unwrap_or(text);
        Some(
            host.parse()
                .unwrap_or_else(|e| panic!("mqtt.addr {text:?} is not an address: {e}")),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("controller is not running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL (with its process group), and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        self.url = None;
    }

    /// Starts it again with the same flags and data directory: a new HTTP port, but the
    /// embedded broker on the port it had (appliances dial the address in their token).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it logged so far (all runs), without colour codes.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// A request to its API (`path` under `/api/v1`) with `token`.
    pub fn api(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> HttpAnswer {
        http(method, &format!("{}/api/v1{path}", self.url()), token, body)
    }

    /// `GET /api/v1{path}` as admin; panics unless it answers 200. Returns the JSON parsed.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let a = self.api("GET", path, Some(&self.admin_token()), None);
        assert_eq!(a.status, 200, "GET /api/v1{path}: {}", a.body);
        a.json()
    }

    /// The fleet as the API shows it.
    pub fn nodes(&self) -> Vec<trove_common::api::NodeView> {
        self.get("/nodes")
    }

    /// A file's replication as the API shows it.
    pub fn file_status(&self, file_id: &str) -> trove_common::api::FileStatus {
        self.get(&format!("/files/{file_id}/status"))
    }

    /// A join token for a new appliance (`POST /api/v1/enrollments` as admin).
    pub fn enroll(&self) -> String {
        self.enroll_named(None)
    }

    pub fn enroll_named(&self, name: Option<&str>) -> String {
        let body = serde_json::to_string(&trove_common::api::EnrollRequest {
            name: name.map(str::to_owned),
        })
        .expect("JSON");
        let a = self.api("POST", "/enrollments", Some(&self.admin_token()), Some(&body));
        assert!(
            (200..300).contains(&a.status),
            "POST /api/v1/enrollments answered {}: {}",
            a.status,
            a.body
        );
        let e: trove_common::api::Enrollment = a.json();
        assert!(e.token.starts_with("trove1-"), "enrollment token {:?}", e.token);
        e.token
    }

    /// Enrolls and starts a `troved` that joins this controller (1 GiB capacity).
    pub fn start_node(&self) -> Node {
        Node::joining(&self.enroll()).start()
    }

    /// A `trove` command pointed at this controller with the admin token (through the
    /// environment, as a user would set it up).
    pub fn trove_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = trove_command(args);
        cmd.env("TROVE_CONTROLLER", self.url())
            .env("TROVE_TOKEN", self.admin_token());
        cmd
    }

    /// Runs `trove ARGS` against this controller; panics with its output unless it succeeds.
    /// Returns stdout.
    pub fn trove_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.trove_command(args);
        let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        if !out.status.success() {
            panic!(
                "{cmd:?} failed ({}):\nstderr:\n{}\nstdout:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        String::from_utf8(out.stdout).expect("trove prints UTF-8")
    }

    /// Runs `trove ARGS` against this controller, success or not.
    pub fn trove<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.trove_command(args);
        cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// How long a throwaway PostgreSQL may take to initialise and start.
pub const POSTGRES_START_DEADLINE: Duration = Duration::from_secs(60);

/// A throwaway PostgreSQL server on a free loopback port, with trust authentication, its
/// data and socket in a temporary directory owned by the `postgres` user (initdb refuses
/// to run as root). Stopped on drop.
///
/// Panics if PostgreSQL is not installed: the tests of the PostgreSQL backend must fail,
/// never skip (`apt-get install postgresql`).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    running: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a server with an empty database `trove`.
    pub fn start() -> Postgres {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new().prefix("trove-pg-").tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        fs::create_dir_all(&sock).expect("socket dir");
        as_postgres_prepare(dir.path());
        run_as_postgres(
            Command::new(bin.join("initdb")).arg("-D").arg(&data).args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]),
            "initdb",
        );
        let log = dir.path().join("postgres.log");
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                sock.display()
            );
            let out = postgres_command(
                Command::new(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .arg("-o")
                    .arg(&opts)
                    .arg("-l")
                    .arg(&log)
                    .args(["-w", "-t", &POSTGRES_START_DEADLINE.as_secs().to_string(), "start"]),
            )
            .output()
            .expect("running pg_ctl");
            if out.status.success() {
                let pg = Postgres {
                    bin,
                    data,
                    port,
                    running: true,
                    _dir: dir,
                };
                pg.create_database("trove");
                return pg;
            }
            last_error = format!(
                "{}{}\nlog:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/trove`.
    pub fn url(&self) -> String {
        self.url_of("trove")
    }

    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates another empty database.
    pub fn create_database(&self, name: &str) {
        run_as_postgres(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .arg(name),
            "createdb",
        );
    }

    /// Runs one SQL statement with `psql` and returns what it printed (unaligned, no
    /// headers), for looking at the database behind the controller's back.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = postgres_command(
            Command::new(self.bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-At",
                    "-d",
                ])
                .arg(database)
                .arg("-c")
                .arg(sql),
        )
        .output()
        .expect("running psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop(&mut self) {
        if self.running {
            self.running = false;
            let _ = postgres_command(Command::new(self.bin.join("pg_ctl")).arg("-D").arg(&self.data).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]))
            .output();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn postgres_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             `apt-get install -y postgresql` (the PostgreSQL tests never skip)"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd`, run as the `postgres` user when we are root (initdb and postgres refuse root).
fn postgres_command(cmd: &mut Command) -> Command {
    let mut wrapped = if is_root() {
        let mut w = Command::new("runuser");
        w.args(["-u", "postgres", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        w
    } else {
        let mut w = Command::new(cmd.get_program());
        w.args(cmd.get_args());
        w
    };
    wrapped.current_dir("/").stdin(Stdio::null());
    wrapped
}

fn run_as_postgres(cmd: &mut Command, what: &str) {
    let out = postgres_command(cmd)
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hands `dir` (and what is in it) to the `postgres` user when we are root.
fn as_postgres_prepare(dir: &Path) {
    if !is_root() {
        return;
    }
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .output()
        .expect("running chown");
    assert!(
        out.status.success(),
        "chown postgres {}: {} (is there a `postgres` user? apt-get install -y postgresql)",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Mosquitto

/// How long Mosquitto may take to accept connections.
pub const MOSQUITTO_START_DEADLINE: Duration = Duration::from_secs(20);

/// A `mosquitto` child on a free loopback port, no persistence: anonymous clients allowed,
/// or ([`Mosquitto::start_with_auth`]) the controller's password and ACL files.
/// Killed on drop. Panics if Mosquitto is not installed (`apt-get install -y mosquitto`).
pub struct Mosquitto {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("allow_anonymous true\n")
    }

    /// With the password and ACL files the controller keeps in `dir` (`--mosquitto-auth`):
    /// no anonymous clients. The files are created empty if the controller has not written
    /// them yet; [`Mosquitto::reload`] reads them again.
    pub fn start_with_auth(dir: &Path) -> Mosquitto {
        // Started as root, Mosquitto drops to the `mosquitto` user before it reloads the
        // files: as in a deployment, the directory is the `mosquitto` group's, and setgid so
        // the files the controller writes there are too.
        if unsafe { libc::geteuid() } == 0
            && let Some(gid) = group_id("mosquitto")
        {
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(dir, None, Some(gid)).expect("chgrp mosquitto");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o2750)).expect("chmod 2750");
        }
        for name in ["trove.passwd", "trove.acl"] {
            let path = dir.join(name);
            if !path.exists() {
                fs::write(&path, "").expect("creating an empty Mosquitto auth file");
            }
        }
        Mosquitto::start_with(&format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            dir.join("trove.passwd").display(),
            dir.join("trove.acl").display()
        ))
    }

    /// SIGHUP: Mosquitto reads its password and ACL files again.
    pub fn reload(&self) {
        let pid = self.child.as_ref().expect("mosquitto is running").id();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(pid as i32, libc::SIGHUP) },
            0,
            "SIGHUP to mosquitto"
        );
    }

    fn start_with(auth: &str) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("trove-mosquitto-")
            .tempdir()
            .expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        for _ in 0..3 {
            let port = free_port();
            fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\n{auth}persistence false\n\
                     log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                     log_type information\nconnection_messages true\n"
                ),
            )
            .expect("writing mosquitto.conf");
            if let Some(child) = spawn_mosquitto(&conf, &log, port) {
                return Mosquitto {
                    port,
                    conf,
                    log,
                    child: Some(child),
                    _dir: dir,
                };
            }
        }
        panic!("mosquitto did not start; log:\n{}", read_log(&log));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`, for `--mqtt-url`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same port (it forgets every retained message).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Deadline::after(MOSQUITTO_START_DEADLINE);
        loop {
            if let Some(child) = spawn_mosquitto(&self.conf, &self.log, self.port) {
                self.child = Some(child);
                return;
            }
            // The old socket may linger a moment; the port is ours, so try again.
            deadline.check(&format!("mosquitto to listen again on port {}", self.port));
            std::thread::sleep(POLL_STEP);
        }
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The ID of group `name`, from /etc/group.
fn group_id(name: &str) -> Option<u32> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Starts `mosquitto -c conf` and waits until `port` accepts; `None` if it exited first
/// (the port was taken).
fn spawn_mosquitto(conf: &Path, log_path: &Path, port: u16) -> Option<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("opening the mosquitto log");
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("mosquitto is not installed: `apt-get install -y mosquitto` (these tests never skip)")
        }
        Err(e) => panic!("spawning mosquitto: {e}"),
    };
    let deadline = Deadline::after(MOSQUITTO_START_DEADLINE);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return None;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if deadline.expired() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out waiting for mosquitto on port {port}; log:\n{}",
                read_log(log_path)
            );
        }
        std::thread::sleep(POLL_STEP);
    }
}

// ---------------------------------------------------------------------------------------------
// A whole stack

/// Which broker and database a [`Stack`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// The controller's embedded broker and a SQLite file in its data directory.
    EmbeddedSqlite,
    /// A Mosquitto child and a throwaway PostgreSQL.
    MosquittoPostgres,
}

/// A controller with its broker and database, and the appliances started for it. Dropped
/// in order: nodes, controller, broker, database.
pub struct Stack {
    pub kind: StackKind,
    pub nodes: Vec<Node>,
    pub controller: Controller,
    pub mosquitto: Option<Mosquitto>,
    pub postgres: Option<Postgres>,
}

impl Stack {
    /// Starts the broker and database of `kind`, then a controller configured by `builder`
    /// on them, then `n_nodes` appliances joined to it.
    pub fn start(kind: StackKind, builder: ControllerBuilder, n_nodes: usize) -> Stack {
        let (mosquitto, postgres, builder) = match kind {
            StackKind::EmbeddedSqlite => (None, None, builder),
            StackKind::MosquittoPostgres => {
                let m = Mosquitto::start();
                let pg = Postgres::start();
                let b = builder.mqtt_url(&m.url()).database_url(&pg.url());
                (Some(m), Some(pg), b)
            }
        };
        let controller = builder.start();
        let nodes = (0..n_nodes).map(|_| controller.start_node()).collect();
        Stack {
            kind,
            nodes,
            controller,
            mosquitto,
            postgres,
        }
    }

    /// Waits until the controller shows exactly `n` appliances `online`.
    pub fn wait_online(&self, n: usize, within: Duration) {
        let deadline = Deadline::after(within);
        loop {
            let seen = self.controller.nodes();
            if seen.iter().filter(|v| v.state == "online").count() == n {
                return;
            }
            if deadline.expired() {
                panic!(
                    "timed out waiting for {n} appliances online; the controller shows {seen:#?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(POLL_STEP * 5);
        }
    }

    /// `trove share PATH ARGS... --wait --json --no-progress` as the holder of `token` (with
    /// its own config directory `config`); the shared file's ID.
    pub fn share_as(&self, token: &str, config: &Path, path: &Path, args: &[&str]) -> String {
        let mut cmd = trove_command(["share".as_ref(), path.as_os_str()]);
        cmd.args(args)
            .args(["--wait", "--json", "--no-progress"])
            .env("TROVE_CONTROLLER", self.controller.url())
            .env("TROVE_TOKEN", token)
            .env("XDG_CONFIG_HOME", config);
        let out = cmd.output().expect("running trove share");
        assert!(
            out.status.success(),
            "trove share failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let stdout = String::from_utf8(out.stdout).expect("UTF-8");
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .expect("share --json prints JSON");
        json_str(line, "file_id").expect("file_id in the share report")
    }

    /// Everything logged, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = format!("=== controller ===\n{}\n", tail(&self.controller.log(), 80));
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!("=== node {i} ===\n{}\n", tail(&n.log(), 30)));
        }
        if let Some(m) = &self.mosquitto {
            s.push_str(&format!("=== mosquitto ===\n{}\n", tail(&m.log(), 30)));
        }
        s
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_state_parses_lsb_first() {
        let s = ResumeState::parse("trove-resume v1\nfile ab\nsize 10\nchunk_bytes 4\ndone 0501\n").unwrap();
        assert_eq!((s.size, s.chunk_bytes, s.n_done()), (10, 4, 3));
        assert!(s.is_done(0) && !s.is_done(1) && s.is_done(2) && s.is_done(8) && !s.is_done(9));
        assert_eq!(ResumeState::parse("trove-resume v1\nfile ab\n"), None);
    }

    #[test]
    fn json_fields() {
        let j = r#"{"file_id":"ab","size":5,"chunks_total":2,"sources":[{"addr":"127.0.0.1:1","chunks":1,"failures":0},{"addr":"127.0.0.1:2","chunks":1,"failures":3}]}"#;
        assert_eq!(json_u64(j, "size"), Some(5));
        assert_eq!(json_str(j, "file_id").as_deref(), Some("ab"));
        let sources = json_sources(j);
        assert_eq!(sources.len(), 2);
        assert_eq!(json_str(&sources[1], "addr").as_deref(), Some("127.0.0.1:2"));
        assert_eq!(json_u64(&sources[1], "failures"), Some(3));
    }

    #[test]
    fn ansi_is_stripped_and_addresses_match_whole() {
        assert_eq!(strip_ansi("\u{1b}[33mWARN\u{1b}[0m x"), "WARN x");
        assert!(contains_addr("peer=127.0.0.1:80 reason", "127.0.0.1:80"));
        assert!(!contains_addr("peer=127.0.0.1:8080 reason", "127.0.0.1:80"));
    }

    #[test]
    fn random_files_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        random_file(&a, MIB + 3, 7);
        random_file(&b, MIB + 3, 7);
        assert_eq!(fs::metadata(&a).unwrap().len(), MIB + 3);
        assert_eq!(b3sum(&a), b3sum(&b));
        assert_eq!(b3sum(&a), blake3::hash(&fs::read(&a).unwrap()).to_hex().to_string());
        assert_eq!(fs::read(&a).unwrap(), random_bytes((MIB + 3) as usize, 7));
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard over HTTP, like a browser without JavaScript (cookies, forms, raw bodies).
// Used by tests/tests/web.rs.

/// An HTTP answer with its headers; the body as bytes.
#[derive(Debug)]
pub struct WebAnswer {
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebAnswer {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case).
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Set-Cookie` header that sets cookie `name`, if any.
    pub fn set_cookie<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.headers_named("set-cookie").find(|c| {
            c.split(';')
                .next()
                .and_then(|p| p.split_once('='))
                .is_some_and(|(k, _)| k.trim() == name)
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client that keeps the cookies a server sets and sends them back, as a browser does.
pub struct WebClient {
    /// `http://host:port`.
    pub base: String,
    pub cookies: std::collections::BTreeMap<String, String>,
}

impl WebClient {
    pub fn new(base: &str) -> WebClient {
        WebClient {
            base: base.trim_end_matches('/').to_owned(),
            cookies: Default::default(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    pub fn get(&mut self, path: &str) -> WebAnswer {
        self.request("GET", path, &[], b"")
    }

    /// POSTs `fields` as `application/x-www-form-urlencoded`.
    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> WebAnswer {
        let body = form_encode(fields);
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    /// One request with this client's cookies and `headers`; remembers the cookies the answer
    /// sets (and forgets those it expires). Panics if the server cannot be reached.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> WebAnswer {
        let a = web_request(
            &format!("{}{path}", self.base),
            method,
            &self.cookie_header(),
            headers,
            body,
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        for c in a.headers_named("set-cookie") {
            let mut parts = c.split(';');
            let Some((k, v)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let expired = v.trim().is_empty() || parts.any(|p| p.trim().eq_ignore_ascii_case("max-age=0"));
            if expired {
                self.cookies.remove(k.trim());
            } else {
                self.cookies.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        a
    }

    /// [`web_request_chunked`] with this client's cookies (it keeps none the answer sets).
    pub fn request_chunked(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        piece: &[u8],
        pieces: usize,
    ) -> WebAnswer {
        web_request_chunked(
            &format!("{}{path}", self.base),
            method,
            &self.cookie_header(),
            headers,
            piece,
            pieces,
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `k=v&k2=v2`, percent-encoded as a browser's form would be.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 request, `Connection: close`, with a `Cookie` header when `cookies` is not
/// empty. A server that answers before reading all of a large body is fine: the answer is
/// read even when sending the rest failed.
pub fn web_request(
    url: &str,
    method: &str,
    cookies: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<WebAnswer> {
    let (mut stream, host, path) = connect_web(url)?;
    let mut req = request_head(method, &host, &path, cookies, headers);
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let _ = stream.write_all(body);
    read_web_answer(stream, method)
}

/// Like [`web_request`], with a body sent `Transfer-Encoding: chunked`, `pieces` of `piece`
/// each, as a client that does not say how much it will send; stops sending, without the
/// last chunk, if the server stops reading (it answered early).
pub fn web_request_chunked(
    url: &str,
    method: &str,
    cookies: &str,
    headers: &[(&str, &str)],
    piece: &[u8],
    pieces: usize,
) -> std::io::Result<WebAnswer> {
    let (mut stream, host, path) = connect_web(url)?;
    let mut req = request_head(method, &host, &path, cookies, headers);
    req.push_str("Transfer-Encoding: chunked\r\n\r\n");
    stream.write_all(req.as_bytes())?;
    let sent = (|| -> std::io::Result<()> {
        for _ in 0..pieces {
            stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
            stream.write_all(piece)?;
            stream.write_all(b"\r\n")?;
        }
        stream.write_all(b"0\r\n\r\n")
    })();
    if let Err(e) = sent {
        // The answer may be there already (a refusal mid-body); a reset may have lost it.
        eprintln!("sending the chunked body stopped: {e}");
    }
    read_web_answer(stream, method)
}

/// A request's line and headers, without the blank line that ends them.
fn request_head(method: &str, host: &str, path: &str, cookies: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if !cookies.is_empty() {
        req.push_str(&format!("Cookie: {cookies}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req
}

/// The socket, `host:port` and path of an `http://` URL.
fn connect_web(url: &str) -> std::io::Result<(std::net::TcpStream, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url:?} is not an http:// URL"));
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} resolves to nothing")))?;
    let stream = std::net::TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    Ok((stream, host.to_owned(), path.to_owned()))
}

/// Reads the answer to a `method` request from `stream`.
fn read_web_answer(stream: std::net::TcpStream, method: &str) -> std::io::Result<WebAnswer> {
    use std::io::{BufRead, BufReader};
    let mut r = BufReader::new(stream);
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut answer_headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            answer_headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let chunked = answer_headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let length = answer_headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut bytes = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
    } else if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(&format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            if bytes.len() + size > HTTP_ANSWER_BYTES_MAX {
                return Err(bad("answer too large"));
            }
            let start = bytes.len();
            bytes.resize(start + size, 0);
            r.read_exact(&mut bytes[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        if n > HTTP_ANSWER_BYTES_MAX {
            return Err(bad("answer too large"));
        }
        bytes.resize(n, 0);
        r.read_exact(&mut bytes)?;
    } else {
        r.take(HTTP_ANSWER_BYTES_MAX as u64).read_to_end(&mut bytes)?;
    }
    Ok(WebAnswer {
        status,
        headers: answer_headers,
        body: bytes,
    })
}

/// The `value` of the first `<input>` (or `<meta>`) in `html` whose `name` is `name`,
/// as written (HTML-escaped). Pages write `name="..."` before `value="..."`/`content="..."`.
pub fn html_input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[at..tag_end];
    let v = tag
        .find("value=\"")
        .map(|i| i + 7)
        .or_else(|| tag.find("content=\"").map(|i| i + 9))?;
    Some(tag[v..].split('"').next()?.to_owned())
}

/// Connects an MQTT client to `addr` (logged in as `login`, if given) and waits up to
/// `within` for the broker's answer; `Err` with the reason when it refuses.
pub async fn mqtt_connect(
    addr: SocketAddr,
    within: Duration,
    client_id: &str,
    login: Option<(String, String)>,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), String> {
    use rumqttc::{ConnectReturnCode, Event, Packet};
    let mut opts = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let max_packet = trove_common::control::PAYLOAD_BYTES_MAX + 4096;
    opts.set_max_packet_size(max_packet, max_packet);
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    let connected = tokio::time::timeout(within, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => return Ok(()),
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Err(format!("refused: {:?}", ack.code)),
                Ok(_) => {}
                Err(e) => return Err(format!("refused: {e}")),
            }
        }
    })
    .await
    .map_err(|_| "no answer from the broker".to_owned())?;
    connected.map(|()| (client, events))
}

/// Publishes every message at QoS 1 (retained or not) and waits up to `within` until the
/// broker has acknowledged them all: what the forged-message tests send really arrived.
pub async fn publish_all(
    client: &rumqttc::AsyncClient,
    events: &mut rumqttc::EventLoop,
    msgs: &[(String, Vec<u8>)],
    retain: bool,
    within: Duration,
) {
    use rumqttc::{Event, Packet, QoS};
    for (topic, payload) in msgs {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, retain, payload.clone())
            .await
            .expect("queueing a publish");
    }
    let mut acked = 0;
    tokio::time::timeout(within, async {
        while acked < msgs.len() {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("MQTT connection failed while publishing: {e}"),
            }
        }
    })
    .await
    .expect("the broker acknowledges the publishes");
}

/// Runs `f` to completion on a fresh current-thread runtime (tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}
