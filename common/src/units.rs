//! Sizes as people write them: `1048576`, `512KiB`, `10 GB`, `1.5GiB`.

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("not a size: {0:?}")]
    NotANumber(alloc::string::String),
    #[error("unknown size unit {0:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)")]
    Unit(alloc::string::String),
}

/// Parses a byte count with an optional decimal (KB = 1000) or binary (KiB = 1024) unit.
pub fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
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
        other => return Err(SizeError::Unit(other.into())),
    };
    // Whole numbers stay exact; a fraction goes through f64 (plenty for sizes people type).
    if let Ok(whole) = num.parse::<u64>() {
        return whole.checked_mul(mult).ok_or_else(|| SizeError::NotANumber(s.into()));
    }
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * (mult as f64) < u64::MAX as f64 => Ok((n * mult as f64) as u64),
        _ => Err(SizeError::NotANumber(s.into())),
    }
}

/// A byte count for people: `0 B`, `999 B`, `1.5 KiB`, `3.2 GiB` (binary units).
pub fn format_bytes(n: u64) -> alloc::string::String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        alloc::format!("{n} B")
    } else {
        alloc::format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("10 GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert!(matches!(parse_bytes("12 parsecs"), Err(SizeError::Unit(_))));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("99999999999999999999TiB").is_err());
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
    }
}
