//! Provisioning a new board: `trove-controller enroll --board B --boot BOOTFS` writes a
//! first-boot configuration onto a freshly flashed SD card's boot partition, mounted at
//! BOOTFS on the computer that runs the controller.
//!
//! It writes `BOOTFS/trove/troved.toml` (the board profile's `[troved]` settings) and
//! `BOOTFS/trove/join.token` (a fresh enrollment); `troved` adopts both at its first start
//! and deletes the token (see `firmware/src/firstboot.rs`). The boot partition is FAT, so
//! names are short and lowercase, and nothing relies on Unix modes.
//!
//! The profiles are `hardware/boards/*.toml`, compiled in. This module only copies their
//! `[troved]` table as text and reads their `target` line: the controller carries no TOML
//! parser, and troved (which parses the table at first boot) checks every profile in its
//! tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Directory on the boot partition, and the files in it (troved's `firstboot.rs` has the
/// same names).
pub const BOOT_SUBDIR: &str = "trove";
pub const TOKEN_FILE: &str = "join.token";
pub const CONFIG_FILE: &str = "troved.toml";

/// A board profile from `hardware/boards/`.
#[derive(Debug)]
pub struct Board {
    pub name: &'static str,
    profile: &'static str,
}

macro_rules! boards {
    ($($name:literal),* $(,)?) => {
        &[$(Board { name: $name, profile: include_str!(concat!("../../hardware/boards/", $name, ".toml")) }),*]
    };
}

pub const BOARDS: &[Board] = boards!["rpi2", "rpi3", "rpi3-32", "rpi4", "rpi5", "rpizero2w"];

impl Board {
    pub fn named(name: &str) -> anyhow::Result<&'static Board> {
        match BOARDS.iter().find(|b| b.name == name) {
            Some(b) => Ok(b),
            None => {
                let known: Vec<_> = BOARDS.iter().map(|b| b.name).collect();
                bail!("no board profile {name:?}; known: {}", known.join(", "))
            }
        }
    }

    /// The `target = "..."` line: which `just cross` build runs on it.
    pub fn target(&self) -> &'static str {
        self.top_level_string("target")
            .expect("every profile names its target (tested)")
    }

    fn top_level_string(&self, key: &str) -> Option<&'static str> {
        self.profile
            .lines()
            .take_while(|l| !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"'))
    }

    /// The `[troved]` table's lines, without its header: troved's config format.
    pub fn troved_settings(&self) -> &'static str {
        let start = self
            .profile
            .find("\n[troved]\n")
            .map(|i| i + "\n[troved]\n".len())
            .expect("every profile has a [troved] table (tested)");
        let rest = &self.profile[start..];
        // Up to the next table, if a profile ever grows one.
        let end = rest.find("\n[").map_or(rest.len(), |i| i + 1);
        &rest[..end]
    }
}

/// Writes the first-boot files for `board` with `token` into `boot`/trove/, returning that
/// directory. `boot` must exist: it is the mounted boot partition, and a typo must not
/// create a directory that no board will ever read.
pub fn write_boot_files(boot: &Path, board: &Board, node_id: &str, token: &str) -> anyhow::Result<PathBuf> {
    if !boot.is_dir() {
        bail!(
            "{} is not a directory: give the mounted boot partition of the SD card (it holds config.txt)",
            boot.display()
        );
    }
    let dir = boot.join(BOOT_SUBDIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let settings = format!(
        "# First-boot settings for troved on a {board} (node {node_id}), from hardware/boards/{board}.toml.\n\
         # troved adopts them at its first start into DATA/provisioned.toml; the config file and\n\
         # flags still override them.\n{settings}",
        board = board.name,
        settings = board.troved_settings(),
    );
    write_synced(&dir.join(CONFIG_FILE), settings.as_bytes())?;
    write_synced(&dir.join(TOKEN_FILE), format!("{token}\n").as_bytes())?;
    Ok(dir)
}

/// The card is about to be pulled out of the reader: flush each file before saying done.
fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_file_is_compiled_in_and_well_formed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hardware/boards");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".toml").map(str::to_owned)
            })
            .collect();
        on_disk.sort();
        let mut compiled: Vec<String> = BOARDS.iter().map(|b| b.name.to_owned()).collect();
        compiled.sort();
        assert_eq!(on_disk, compiled, "hardware/boards/ and BOARDS differ");
        for b in BOARDS {
            assert!(b.target().ends_with("-linux-musl") || b.target().ends_with("-linux-gnueabihf"));
            let settings = b.troved_settings();
            assert!(settings.contains(&format!("board = \"{}\"", b.name)), "{settings}");
            assert!(!settings.contains('['), "{}: only the [troved] table", b.name);
        }
        assert_eq!(Board::named("rpi4").unwrap().target(), "aarch64-unknown-linux-musl");
        assert_eq!(Board::named("rpi2").unwrap().target(), "armv7-unknown-linux-gnueabihf");
        let err = Board::named("rpi9").unwrap_err().to_string();
        assert!(err.contains("rpi4") && err.contains("rpizero2w"), "{err}");
    }

    #[test]
    fn boot_files_land_under_trove_and_need_a_real_boot_dir() {
        let boot = tempfile::tempdir().unwrap();
        let board = Board::named("rpizero2w").unwrap();
        let dir = write_boot_files(boot.path(), board, "00ff", "trove1-abc").unwrap();
        assert_eq!(dir, boot.path().join("trove"));
        assert_eq!(std::fs::read_to_string(dir.join(TOKEN_FILE)).unwrap(), "trove1-abc\n");
        let settings = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
        assert!(settings.contains("board = \"rpizero2w\"\ncapacity = "), "{settings}");
        assert!(write_boot_files(&boot.path().join("typo"), board, "00ff", "t").is_err());
        assert!(!boot.path().join("typo").exists());
    }
}
