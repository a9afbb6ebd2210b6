//! First start from a provisioned SD card.
//!
//! `trove-controller enroll --board B --boot BOOTFS` leaves two files on the card's boot
//! partition (FAT, readable from any computer), in `trove/`:
//!
//! - `join.token`: the enrollment token (it holds the node's secret);
//! - `troved.toml`: the board profile's settings (capacity, disk reserve, scrub speed, board
//!   name), in troved's config format.
//!
//! At start troved looks in that directory (`--firstboot DIR`, default [`DEFAULT_DIR`]). A
//! token there means "provisioned, not yet adopted": the settings are copied to
//! `DATA/provisioned.toml` (read at every later start, under the config file and flags), the
//! token goes to `DATA/join.token` through [`crate::identity`], and only then is the token
//! deleted from the boot partition, so the secret does not stay on a FAT file system anyone
//! can read. A crash before the deletion adopts the same files again at the next start.
//!
//! Deleting from the boot partition needs root (it is mounted root-owned), while troved runs
//! as its own user: the systemd unit runs `troved --firstboot-only` as root before the
//! service proper, and [`hand_over`] gives what that wrote to the data directory's owner.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tracing::info;
use trove_common::control::JoinToken;

use crate::config::FileConfig;
use crate::identity;

/// Where Raspberry Pi OS mounts the boot partition (Bookworm on), plus `trove/`.
pub const DEFAULT_DIR: &str = "/boot/firmware/trove";
pub const TOKEN_FILE: &str = "join.token";
pub const CONFIG_FILE: &str = "troved.toml";
/// The adopted settings, in the data directory.
pub const PROVISIONED_FILE: &str = "provisioned.toml";

/// A provisioning found on the boot partition and taken into the data directory.
#[derive(Debug)]
pub struct Adopted {
    pub token: JoinToken,
    token_path: PathBuf,
}

/// Takes a provisioning left in `dir` into `data` (created if missing): validates both
/// files, keeps the settings in `DATA/provisioned.toml`, and returns the token for
/// [`identity::resolve`]. Call [`Adopted::finish`] once the token is kept. `None` when `dir`
/// holds no token.
pub fn adopt(dir: &Path, data: &Path) -> anyhow::Result<Option<Adopted>> {
    let token_path = dir.join(TOKEN_FILE);
    let text = match std::fs::read_to_string(&token_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", token_path.display())),
    };
    // Not echoed: the token holds the node's secret.
    let token =
        JoinToken::decode(&text).with_context(|| format!("{} is not a valid join token", token_path.display()))?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let config_path = dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&config_path) {
        Ok(settings) => {
            check_settings(&settings).with_context(|| format!("{}", config_path.display()))?;
            identity::write_atomically(&data.join(PROVISIONED_FILE), settings.as_bytes(), 0o644)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
    }
    info!(from = %dir.display(), node = %token.node_id, "adopting the first-boot provisioning");
    Ok(Some(Adopted { token, token_path }))
}

impl Adopted {
    /// The token is kept in the data directory: take it off the boot partition.
    pub fn finish(self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.token_path).with_context(|| {
            format!(
                "deleting {} (the join token is kept in the data directory now; \
                 delete it by hand, it holds the node's secret)",
                self.token_path.display()
            )
        })?;
        if let Some(dir) = self.token_path.parent() {
            // FAT has no directory fsync on some kernels; the deletion is best made durable.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        info!(path = %self.token_path.display(), "join token removed from the boot partition");
        Ok(())
    }
}

/// The settings a provisioning may make: everything but where the data lives (the install
/// decides that, and the sandbox only lets troved write there), the token (its own file)
/// and the first-boot directory itself.
fn check_settings(text: &str) -> anyhow::Result<FileConfig> {
    check(toml::from_str(text).context("parsing")?)
}

fn check(c: FileConfig) -> anyhow::Result<FileConfig> {
    for (key, set) in [
        ("data", c.data.is_some()),
        ("join", c.join.is_some()),
        ("firstboot", c.firstboot.is_some()),
    ] {
        if set {
            bail!("`{key}` cannot be provisioned: set it in the config file or with a flag");
        }
    }
    Ok(c)
}

/// The adopted settings, if any: the lowest layer under the config file and flags.
pub fn load_provisioned(data: &Path) -> anyhow::Result<FileConfig> {
    let path = data.join(PROVISIONED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => check_settings(&text).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// When run as root (the unit's `--firstboot-only` step), gives the files written to `data`
/// to whoever owns `data` (the `troved` user), who must read them later.
pub fn hand_over(data: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let owner = match std::fs::metadata(data) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", data.display())),
    };
    for name in [PROVISIONED_FILE, identity::JOIN_TOKEN_FILE, identity::NODE_ID_FILE] {
        let path = data.join(name);
        match std::fs::metadata(&path) {
            Ok(m) if (m.uid(), m.gid()) != (owner.uid(), owner.gid()) => {
                std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))
                    .with_context(|| format!("handing {} to uid {}", path.display(), owner.uid()))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_common::NodeId;
    use trove_common::control::NodeSecret;
    use trove_common::grant::SigningKey;

    fn token() -> JoinToken {
        JoinToken {
            broker: "192.168.1.2:1883".into(),
            node_id: NodeId([5; 16]),
            secret: NodeSecret([6; 32]),
            controller_key: SigningKey::from_secret(&[1; 32]).public().to_bytes(),
        }
    }

    #[test]
    fn nothing_to_adopt_without_a_token() {
        let boot = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(boot.path().join(CONFIG_FILE), "board = \"rpi4\"").unwrap();
        assert!(adopt(boot.path(), data.path()).unwrap().is_none());
        assert!(adopt(&boot.path().join("missing"), data.path()).unwrap().is_none());
        assert!(!data.path().join(PROVISIONED_FILE).exists());
    }

    #[test]
    fn adoption_keeps_settings_and_token_then_clears_the_boot_partition() {
        let boot = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let data = data.path().join("data");
        std::fs::write(boot.path().join(TOKEN_FILE), format!("{}\n", token().encode())).unwrap();
        std::fs::write(
            boot.path().join(CONFIG_FILE),
            "board = \"rpi4\"\ncapacity = \"100GiB\"\n",
        )
        .unwrap();
        let adopted = adopt(boot.path(), &data).unwrap().unwrap();
        assert_eq!(adopted.token, token());
        let kept = identity::resolve(&data, Some(adopted.token.clone()), None).unwrap();
        assert_eq!(kept.node_id, token().node_id);
        adopted.finish().unwrap();
        assert!(!boot.path().join(TOKEN_FILE).exists(), "the secret left the FAT");
        assert!(boot.path().join(CONFIG_FILE).exists(), "settings hold no secret");
        let settings = load_provisioned(&data).unwrap();
        assert_eq!(settings.board.as_deref(), Some("rpi4"));
        assert_eq!(settings.capacity.map(crate::config::Size::bytes), Some(100 << 30));
        // The next start finds nothing new and keeps the token from the data directory.
        assert!(adopt(boot.path(), &data).unwrap().is_none());
        assert_eq!(identity::resolve(&data, None, None).unwrap().join, Some(token()));
        hand_over(&data).unwrap();
    }

    #[test]
    fn bad_provisionings_are_refused_and_left_in_place() {
        let boot = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(boot.path().join(TOKEN_FILE), "trove1-00").unwrap();
        let err = format!("{:#}", adopt(boot.path(), data.path()).unwrap_err());
        assert!(err.contains("not a valid join token"), "{err}");

        std::fs::write(boot.path().join(TOKEN_FILE), token().encode()).unwrap();
        for (settings, want) in [
            ("data = \"/elsewhere\"", "`data` cannot be provisioned"),
            ("capacity = \"lots\"", "parsing"),
            ("colour = 1", "parsing"),
        ] {
            std::fs::write(boot.path().join(CONFIG_FILE), settings).unwrap();
            let err = format!("{:#}", adopt(boot.path(), data.path()).unwrap_err());
            assert!(err.contains(want), "{settings}: {err}");
        }
        assert!(boot.path().join(TOKEN_FILE).exists());
        assert!(!data.path().join(PROVISIONED_FILE).exists());
    }

    /// Every board profile in hardware/boards/ carries a `[troved]` table that troved
    /// accepts as a provisioning, naming its own board.
    #[test]
    fn board_profiles_provision_valid_settings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hardware/boards");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let profile: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for key in ["name", "description", "target", "data", "notes"] {
                assert!(profile.get(key).and_then(|v| v.as_str()).is_some(), "{name}: no {key}");
            }
            assert_eq!(profile["name"].as_str(), Some(name.as_str()));
            let target = profile["target"].as_str().unwrap();
            assert!(
                ["aarch64-unknown-linux-musl", "armv7-unknown-linux-gnueabihf"].contains(&target),
                "{name}: target {target} is not one `just cross` builds"
            );
            let settings: FileConfig = profile["troved"]
                .clone()
                .try_into()
                .unwrap_or_else(|e| panic!("{name}: [troved]: {e}"));
            let c = check(settings).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(c.board.as_deref(), Some(name.as_str()));
            assert!(c.capacity.is_some() && c.disk_reserve.is_some(), "{name}");
            n += 1;
        }
        assert!(n >= 5, "only {n} board profiles in {}", dir.display());
    }
}
