//! troved's configuration: a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use trove_common::PublicKey;

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

/// Parses "1048576", "512KiB", "10 GB", "1.5GiB".
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("not a size: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => bail!("unknown size unit {other:?} in {s:?}"),
    };
    if !(num.is_finite() && num >= 0.0) {
        bail!("not a size: {s:?}");
    }
    Ok((num * mult as f64) as u64)
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
}

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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("10 GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

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
    }
}
