//! The end-to-end harness: starts the real `troved` and `trove` binaries on 127.0.0.1 with
//! temporary directories and port 0, and gives tests what they need to look at the result.
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
    capacity_bytes: u64,
    scrub_pause_secs: u64,
}

impl NodeBuilder {
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
        let mut node = Node {
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
            capacity_bytes: 1 << 30,
            scrub_pause_secs: 3600,
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
        let mut cmd = Command::new(bin("troved"));
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
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if let Some(key) = &self.config.trusted_key {
            cmd.arg("--trusted-key").arg(key);
        }
        let child = cmd.spawn().expect("spawning troved");
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
    cmd.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
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

fn decode_hex(s: &str) -> Option<Vec<u8>> {
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
