//! troved's configuration: a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use trove_common::PublicKey;
use trove_common::control::JoinToken;

/// The file form. Every field is optional: flags and defaults fill the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    /// Bytes, or a size with a unit: "500MB", "32GiB".
    pub capacity: Option<Size>,
    /// Hex ed25519 public key of the controller that signs write grants.
    pub trusted_key: Option<String>,
    pub disk_reserve: Option<Size>,
    pub scrub_bytes_per_sec: Option<Size>,
    pub scrub_pause_secs: Option<u64>,
    /// A join token (`trove1-...`) from the controller: joins the fleet over MQTT. Kept in
    /// `DATA/join.token` afterwards, so later starts need not repeat it.
    pub join: Option<String>,
    /// The data address others should dial, when the listen address is not it (NAT, a
    /// wildcard listen address on a multi-homed board).
    pub advertise: Option<SocketAddr>,
    /// The board profile name reported to the controller (see hardware/).
    pub board: Option<String>,
    /// Where a provisioned SD card's first-boot files are (see `firstboot.rs`); "" for
    /// nowhere.
    pub firstboot: Option<PathBuf>,
}

impl FileConfig {
    /// Each setting from `self`, or else from `lower`.
    pub fn or(self, lower: FileConfig) -> FileConfig {
        FileConfig {
            listen: self.listen.or(lower.listen),
            data: self.data.or(lower.data),
            capacity: self.capacity.or(lower.capacity),
            trusted_key: self.trusted_key.or(lower.trusted_key),
            disk_reserve: self.disk_reserve.or(lower.disk_reserve),
            scrub_bytes_per_sec: self.scrub_bytes_per_sec.or(lower.scrub_bytes_per_sec),
            scrub_pause_secs: self.scrub_pause_secs.or(lower.scrub_pause_secs),
            join: self.join.or(lower.join),
            advertise: self.advertise.or(lower.advertise),
            board: self.board.or(lower.board),
            firstboot: self.firstboot.or(lower.firstboot),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(#[serde(deserialize_with = "de_size")] u64),
}

impl Size {
    pub fn bytes(self) -> u64 {
        match self {
            Size::Bytes(b) | Size::Text(b) => b,
        }
    }
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map_err(serde::de::Error::custom)
}

/// Parses "1048576", "512KiB", "10 GB", "1.5GiB" (see `trove_common::units`).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    Ok(trove_common::units::parse_bytes(s)?)
}

/// What troved runs with, after merging file, flags and defaults.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub capacity_bytes: u64,
    pub trusted_key: Option<PublicKey>,
    pub disk_reserve_bytes: u64,
    pub scrub_bytes_per_sec: u64,
    pub scrub_pause_secs: u64,
    /// A token given now (flag or file); one persisted earlier is read by `identity`.
    pub join: Option<JoinToken>,
    pub advertise: Option<SocketAddr>,
    pub board: String,
}

pub const DEFAULT_BOARD: &str = "generic";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7070";
pub const DEFAULT_CAPACITY_BYTES: u64 = 16 << 30;
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 64 << 20;
/// Slow enough that an SD card keeps serving while it scrubs.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 8 << 20;
pub const DEFAULT_SCRUB_PAUSE_SECS: u64 = 6 * 3600;

pub fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
}

impl Config {
    pub fn merge(file: FileConfig, flags: FileConfig) -> anyhow::Result<Config> {
        let data = flags
            .data
            .or(file.data)
            .context("no data directory: pass --data DIR or set `data` in the config")?;
        let trusted_key = match flags.trusted_key.or(file.trusted_key) {
            Some(hex) => Some(
                hex.parse::<PublicKey>()
                    .with_context(|| format!("trusted_key {hex:?}"))?,
            ),
            None => None,
        };
        let join = match flags.join.or(file.join) {
            // Not echoed: the token holds the node's secret.
            Some(text) => Some(JoinToken::decode(&text).context("the join token is not valid")?),
            None => None,
        };
        let board = flags.board.or(file.board).unwrap_or_else(|| DEFAULT_BOARD.into());
        if board.is_empty() || board.len() > 64 || board.chars().any(char::is_control) {
            bail!("board name {board:?}: want 1 to 64 printable characters");
        }
        Ok(Config {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            data,
            capacity_bytes: flags
                .capacity
                .or(file.capacity)
                .map_or(DEFAULT_CAPACITY_BYTES, Size::bytes),
            trusted_key,
            disk_reserve_bytes: flags
                .disk_reserve
                .or(file.disk_reserve)
                .map_or(DEFAULT_DISK_RESERVE_BYTES, Size::bytes),
            scrub_bytes_per_sec: flags
                .scrub_bytes_per_sec
                .or(file.scrub_bytes_per_sec)
                .map_or(DEFAULT_SCRUB_BYTES_PER_SEC, Size::bytes),
            scrub_pause_secs: flags
                .scrub_pause_secs
                .or(file.scrub_pause_secs)
                .unwrap_or(DEFAULT_SCRUB_PAUSE_SECS),
            join,
            advertise: flags.advertise.or(file.advertise),
            board,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let file: FileConfig = toml::from_str("data = \"/a\"\ncapacity = \"1GiB\"\nlisten = \"127.0.0.1:1\"").unwrap();
        let flags = FileConfig {
            data: Some("/b".into()),
            ..Default::default()
        };
        let c = Config::merge(file, flags).unwrap();
        assert_eq!(c.data, PathBuf::from("/b"));
        assert_eq!(c.capacity_bytes, 1 << 30);
        assert_eq!(c.listen.port(), 1);
        assert!(toml::from_str::<FileConfig>("typo = 1").is_err());
        assert_eq!(c.board, DEFAULT_BOARD);
        assert!(c.join.is_none() && c.advertise.is_none());
    }

    #[test]
    fn fleet_settings_from_file_and_flags() {
        let key = trove_common::grant::SigningKey::from_secret(&[1; 32]);
        let token = JoinToken {
            broker: "10.0.0.2:1883".into(),
            node_id: trove_common::NodeId([7; 16]),
            secret: trove_common::control::NodeSecret([8; 32]),
            controller_key: key.public().to_bytes(),
        };
        let text = format!(
            "data = \"/a\"\njoin = \"{}\"\nadvertise = \"192.168.1.5:7070\"\nboard = \"pi4\"",
            token.encode()
        );
        let file: FileConfig = toml::from_str(&text).unwrap();
        let c = Config::merge(file, FileConfig::default()).unwrap();
        assert_eq!(c.join, Some(token));
        assert_eq!(c.advertise, Some("192.168.1.5:7070".parse().unwrap()));
        assert_eq!(c.board, "pi4");
        let flags = FileConfig {
            board: Some("rock5".into()),
            ..Default::default()
        };
        let file: FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(Config::merge(file, flags).unwrap().board, "rock5");

        let bad = FileConfig {
            data: Some("/a".into()),
            join: Some("trove1-00".into()),
            ..Default::default()
        };
        let err = format!("{:#}", Config::merge(FileConfig::default(), bad).unwrap_err());
        assert!(err.contains("join token"), "{err}");
    }
}
