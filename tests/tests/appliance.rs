//! Appliance builds end to end (issue 6): the cross-built `troved` for aarch64 and armv7
//! running under qemu-user in a real fleet, a board provisioned through a real FAT boot
//! partition, and the systemd notifications a real unix datagram socket receives.
//!
//! The cross builds come from `just cross` (or `.ci/run`): `target/<triple>/appliance/troved`,
//! or the directory in `TROVE_CROSS_DIR` (holding `<triple>/troved`). The emulator comes from
//! `qemu-user-static`, the FAT tools from `dosfstools` and `mtools`. When any is missing the
//! test that needs it fails under CI (`CI` set), naming what to install or build, and is
//! skipped with a printed reason elsewhere: the native tests must not need cross toolchains.
//!
//! Build the native binaries first: `cargo build --workspace --bins`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use trove_common::api::NodeView;
use trove_tests::*;

/// Joining and announcing, also under emulation (qemu-user runs troved several times slower).
const ONLINE_DEADLINE: Duration = Duration::from_secs(60);
/// The watchdog period handed to troved in the notify test (it pings every half of it).
const WATCHDOG_PERIOD: Duration = Duration::from_millis(400);
const NOTIFY_DEADLINE: Duration = Duration::from_secs(20);

/// One `just cross` build and how to run it here.
struct CrossBuild {
    triple: &'static str,
    runner: &'static [&'static str],
    binary: PathBuf,
}

const TARGETS: &[(&str, &[&str])] = &[
    ("aarch64-unknown-linux-musl", &["qemu-aarch64-static"]),
    // `-L` mirrors hardware/cargo-cross.toml; the static troved needs no library from it.
    (
        "armv7-unknown-linux-gnueabihf",
        &["qemu-arm-static", "-L", "/usr/arm-linux-gnueabihf"],
    ),
];

/// Fails under CI; elsewhere prints why the caller skips its test.
fn cannot_run(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI must run this test (see .ci/run)");
    }
    eprintln!("SKIPPED: {why} (with CI=1 set this fails instead)");
}

/// `program` on PATH, or in the sbin directories a non-root PATH may lack (mkfs.vfat).
fn find_tool(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Every cross build with its emulator, or `None` (see [`cannot_run`]).
fn cross_builds() -> Option<Vec<CrossBuild>> {
    let dir = match std::env::var_os("TROVE_CROSS_DIR") {
        Some(dir) => PathBuf::from(dir),
        // bin_dir() is target/debug (or the CARGO_TARGET_DIR equivalent).
        None => bin_dir().parent().expect("target directory").to_path_buf(),
    };
    let mut builds = Vec::new();
    for (triple, runner) in TARGETS {
        let candidates = [
            dir.join(triple).join("appliance").join("troved"),
            dir.join(triple).join("troved"),
        ];
        let Some(binary) = candidates.iter().find(|p| p.is_file()) else {
            cannot_run(&format!(
                "no cross-built troved for {triple} at {}: run `just cross`",
                candidates[0].display()
            ));
            return None;
        };
        if find_tool(runner[0]).is_none() {
            cannot_run(&format!("{} not found: apt-get install qemu-user-static", runner[0]));
            return None;
        }
        builds.push(CrossBuild {
            triple,
            runner,
            binary: binary.clone(),
        });
    }
    Some(builds)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trove-appliance-")
        .tempdir()
        .expect("tempdir")
}

/// Runs `program ARGS`; panics with its output unless it succeeds. Returns stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstderr:\n{}\nstdout:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The controller's view of `node`, once it satisfies `cond`.
fn wait_node(c: &Controller, node: &Node, what: &str, cond: impl Fn(&NodeView) -> bool) -> NodeView {
    let id = node.node_id().to_string();
    let deadline = Deadline::after(ONLINE_DEADLINE);
    loop {
        let nodes = c.nodes();
        if let Some(v) = nodes.iter().find(|v| v.id == id && cond(v)) {
            return v.clone();
        }
        if deadline.expired() {
            panic!(
                "timed out waiting for node {id} to be {what}; the controller shows {nodes:#?}\n\
                 === controller ===\n{}\n=== node ===\n{}",
                tail(&c.log(), 60),
                tail(&node.log(), 60)
            );
        }
        std::thread::sleep(POLL_STEP * 10);
    }
}

fn online(v: &NodeView) -> bool {
    v.state == "online"
}

/// Chunks of `m` that `node` holds, asked over the data plane.
fn chunks_held(node: &Node, m: &trove_common::Manifest) -> usize {
    let chunks: Vec<_> = m.chunks().collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut client = node.client().await;
            let mut n = 0;
            for batch in chunks.chunks(trove_common::limits::HAS_CHUNKS_MAX) {
                n += client.has(batch).await.expect("has").into_iter().filter(|h| *h).count();
            }
            n
        })
}

#[test]
fn cross_built_appliances_under_qemu_serve_a_verified_download() {
    let Some(builds) = cross_builds() else { return };
    let c = Controller::start();
    let emulated: Vec<Node> = builds
        .iter()
        .map(|b| {
            Node::joining(&c.enroll_named(Some(b.triple)))
                .program(b.runner, &b.binary)
                .start()
        })
        .collect();
    // A third, native appliance: every chunk is kept on three.
    let mut native = c.start_node();
    for (node, b) in emulated.iter().zip(&builds) {
        // The process really is the emulator running the cross build.
        let exe = fs::read_link(format!("/proc/{}/exe", node.pid())).expect("/proc/PID/exe");
        assert!(exe.ends_with(b.runner[0]), "{} runs as {}", b.triple, exe.display());
        // The state and the info (version, board) are separate messages: wait for both.
        let v = wait_node(&c, node, "online with its info", |v| online(v) && v.version.is_some());
        assert_eq!(v.name.as_deref(), Some(b.triple));
        assert_eq!(v.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }
    wait_node(&c, &native, "online", online);

    let dir = tempdir();
    let file = dir.path().join("holiday.bin");
    random_file(&file, 5 * MIB + 12_345, 6);
    let want = b3sum(&file);
    let share = c.trove_ok([
        "share".as_ref(),
        file.as_os_str(),
        "--wait".as_ref(),
        "--json".as_ref(),
        "--no-progress".as_ref(),
    ]);
    assert!(share.contains(&want), "trove share printed {share}");
    let m = manifest_of(&file, trove_common::limits::CHUNK_BYTES_DEFAULT);
    for (node, b) in emulated.iter().zip(&builds) {
        assert_eq!(
            chunks_held(node, &m),
            m.n_chunks() as usize,
            "{} holds every chunk; log:\n{}",
            b.triple,
            tail(&node.log(), 40)
        );
    }

    // Only the emulated appliances remain to download from.
    assert!(native.terminate(ONLINE_DEADLINE).success());
    wait_node(&c, &native, "offline", |v| v.state == "offline");
    let out = dir.path().join("copy.bin");
    let report = c.trove_ok([
        "get".as_ref(),
        want.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
        "--no-progress".as_ref(),
    ]);
    assert_eq!(b3sum(&out), want, "the download is the shared file");
    let report: serde_json::Value = serde_json::from_str(report.lines().last().expect("JSON line")).expect("JSON");
    let served: Vec<String> = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter(|s| s["chunks"].as_u64().unwrap_or(0) > 0)
        .map(|s| s["addr"].as_str().unwrap_or_default().to_owned())
        .collect();
    let emulated_addrs: Vec<String> = emulated.iter().map(Node::addr_arg).collect();
    assert!(
        !served.is_empty() && served.iter().all(|a| emulated_addrs.contains(a)),
        "chunks came from {served:?}, the emulated appliances are {emulated_addrs:?}"
    );
}

/// What `trove-controller enroll --board B --boot DIR` wrote goes through a FAT file system
/// (as on an SD card's boot partition) and back, and troved joins with it.
#[test]
fn a_board_provisioned_through_a_fat_boot_partition_joins_and_clears_its_secret() {
    let (Some(mkfs), Some(_), Some(_)) = (find_tool("mkfs.vfat"), find_tool("mcopy"), find_tool("mdir")) else {
        return cannot_run("mkfs.vfat, mcopy or mdir not found: apt-get install dosfstools mtools");
    };
    let c = Controller::start();
    let dir = tempdir();
    let mtools = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let (program, rest) = args.split_first().expect("a command");
        let mut cmd = Command::new(program);
        cmd.args(rest.iter().map(|a| a.as_ref()))
            // Images made by mkfs.vfat -C need not match a floppy's geometry.
            .env("MTOOLS_SKIP_CHECK", "1");
        run_ok(&mut cmd)
    };

    // The computer with the card in its reader: enroll onto the mounted boot partition.
    let bootfs = dir.path().join("bootfs");
    fs::create_dir(&bootfs).unwrap();
    let said = run_ok(
        Command::new(bin("trove-controller"))
            .arg("--data")
            .arg(c.data_dir())
            .args(["enroll", "--name", "garage-pi", "--board", "rpi4", "--boot"])
            .arg(&bootfs)
            .env("NO_COLOR", "1"),
    );
    assert!(said.contains("provisioned for a rpi4"), "{said}");
    assert!(!said.contains("trove1-"), "the token is not printed: {said}");
    let token = fs::read_to_string(bootfs.join("trove/join.token")).unwrap();

    // Onto a real FAT image and back off it (no mount needed).
    let image = dir.path().join("bootfs.img");
    run_ok(
        Command::new(&mkfs)
            .args(["-C", "-n", "BOOTFS"])
            .arg(&image)
            .arg("16384"),
    );
    mtools(&[&"mcopy", &"-i", &image, &"-s", &bootfs.join("trove"), &"::/"]);
    let listing = mtools(&[&"mdir", &"-i", &image, &"-b", &"::/trove"]);
    for name in ["join.token", "troved.toml"] {
        assert!(listing.contains(name), "{name} on the FAT image: {listing}");
    }
    fs::remove_dir_all(&bootfs).unwrap();
    let card = dir.path().join("card");
    fs::create_dir(&card).unwrap();
    mtools(&[&"mcopy", &"-i", &image, &"-s", &"::/trove", &card]);
    let firstboot = card.join("trove");
    assert_eq!(fs::read_to_string(firstboot.join("join.token")).unwrap(), token);

    // The board's first start: no key, no token on the command line.
    let mut node = Node::unconfigured().arg("--firstboot").arg(&firstboot).start();
    let v = wait_node(&c, &node, "online as an rpi4", |v| {
        online(v) && v.board.as_deref() == Some("rpi4")
    });
    assert_eq!(v.name.as_deref(), Some("garage-pi"));
    assert!(
        !firstboot.join("join.token").exists(),
        "the secret left the boot partition"
    );
    assert!(firstboot.join("troved.toml").exists());
    let kept = node.data_dir().join("join.token");
    assert_eq!(fs::read_to_string(&kept).unwrap().trim(), token.trim());
    assert_eq!(fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    let provisioned = fs::read_to_string(node.data_dir().join("provisioned.toml")).unwrap();
    assert!(provisioned.contains("board = \"rpi4\""), "{provisioned}");

    // Later boots need nothing from the boot partition.
    node.restart();
    wait_node(&c, &node, "online again", |v| {
        online(v) && v.board.as_deref() == Some("rpi4")
    });

    // The unit's privileged step (`--firstboot-only`) adopts and exits, serving nothing.
    let card2 = dir.path().join("card2");
    fs::create_dir(&card2).unwrap();
    mtools(&[&"mcopy", &"-i", &image, &"-s", &"::/trove", &card2]);
    let data2 = dir.path().join("data2");
    run_ok(
        Command::new(bin("troved"))
            .arg("--data")
            .arg(&data2)
            .arg("--firstboot")
            .arg(card2.join("trove"))
            .arg("--firstboot-only")
            .env("NO_COLOR", "1"),
    );
    assert!(!card2.join("trove/join.token").exists());
    assert_eq!(
        fs::read_to_string(data2.join("join.token")).unwrap().trim(),
        token.trim()
    );
    assert!(data2.join("provisioned.toml").is_file());
    assert!(!data2.join("listen.addr").exists(), "--firstboot-only does not serve");
}

/// Receives what troved tells systemd, on a real unix datagram socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        socket.set_read_timeout(Some(POLL_STEP)).unwrap();
        NotifySocket { socket, path }
    }

    /// The next datagram, if one comes within a poll step.
    fn recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let len = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    }

    /// Datagrams until one satisfies `want`; returns that one.
    fn wait_for(&self, what: &str, node: &Node, want: impl Fn(&str) -> bool) -> String {
        let deadline = Deadline::after(NOTIFY_DEADLINE);
        loop {
            if let Some(m) = self.recv()
                && want(&m)
            {
                return m;
            }
            if deadline.expired() {
                panic!("no {what} from troved; log:\n{}", tail(&node.log(), 40));
            }
        }
    }

    fn drain(&self) -> Vec<String> {
        std::iter::from_fn(|| self.recv()).collect()
    }
}

#[test]
fn troved_tells_systemd_it_is_ready_alive_and_stopping() {
    let c = Controller::start();
    let dir = tempdir();
    let notify = NotifySocket::bind(dir.path());
    let mut node = Node::joining(&c.enroll())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", WATCHDOG_PERIOD.as_micros().to_string())
        .start();

    // READY=1 comes first, and only once the listener is bound and the store open.
    let first = notify.wait_for("READY=1", &node, |_| true);
    assert_eq!(
        first,
        format!("READY=1\nSTATUS=serving 0 chunks on {}", node.addr()),
        "the first notification is readiness"
    );
    for _ in 0..2 {
        notify.wait_for("WATCHDOG=1", &node, |m| m == "WATCHDOG=1");
    }

    // The data disk goes away: the health probe fails and the pings stop, so systemd would
    // restart troved. They come back with the disk.
    let chunks = node.data_dir().join("chunks");
    let away = node.data_dir().join("chunks.unplugged");
    fs::rename(&chunks, &away).unwrap();
    node.wait_for_log("health probe failed", 1, NOTIFY_DEADLINE);
    notify.drain();
    let until = Instant::now() + WATCHDOG_PERIOD * 3;
    while Instant::now() < until {
        if let Some(m) = notify.recv() {
            assert_ne!(m, "WATCHDOG=1", "pinged with the data directory gone");
        }
    }
    fs::rename(&away, &chunks).unwrap();
    notify.wait_for("WATCHDOG=1 after recovery", &node, |m| m == "WATCHDOG=1");

    // SIGTERM: STOPPING=1, then still the goodbye to the controller, then a clean exit.
    wait_node(&c, &node, "online", online);
    let status = node.terminate(NOTIFY_DEADLINE);
    assert!(status.success(), "exit status {status}; log:\n{}", node.log());
    let rest = notify.drain();
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "{rest:?}");
    assert_eq!(
        node.log_count("announced offline and disconnected"),
        1,
        "log:\n{}",
        node.log()
    );
    wait_node(&c, &node, "offline", |v| v.state == "offline");
}

/// Pins a stall found by bench/appliance.sh while filling a store with small chunks: troved
/// held its replies whenever part of the next request was buffered, while `trove put` holds
/// back the rest of its pipeline until it sees replies. Each waited for the other until
/// troved's body timeout closed the connection a minute later.
#[test]
fn pipelined_small_puts_do_not_stall_on_unflushed_replies() {
    let key = TestKey::new("small-puts");
    let node = Node::start(&key);
    let dir = tempdir();
    let file = dir.path().join("small.bin");
    let n_chunks = 256;
    let chunk_bytes = trove_common::limits::CHUNK_BYTES_MIN;
    random_file(&file, n_chunks * u64::from(chunk_bytes), 9);
    let mut put = Spawned::spawn(trove_command([
        "put".as_ref(),
        file.as_os_str(),
        "--key".as_ref(),
        key.secret_path().as_os_str(),
        "--node".as_ref(),
        node.addr_arg().as_ref(),
        "--replicas".as_ref(),
        "1".as_ref(),
        "--chunk-bytes".as_ref(),
        chunk_bytes.to_string().as_ref(),
        "--manifest-out".as_ref(),
        dir.path().join("small.manifest").as_os_str(),
        "--no-progress".as_ref(),
    ]));
    // Well under troved's 60 s body timeout, which is what ended the stall.
    let status = put.wait(Duration::from_secs(40), "trove put of small pipelined chunks");
    assert!(
        status.success(),
        "trove put failed: {}\nnode log:\n{}",
        put.stderr(),
        tail(&node.log(), 20)
    );
    assert_eq!(node.chunk_files().len() as u64, n_chunks);
}
