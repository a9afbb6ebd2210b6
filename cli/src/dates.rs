//! Unix seconds to and from what people type and read: `--since` values and the dates in
//! `trove me`. UTC throughout, so a date means the same on every machine; no time zone
//! database. The calendar itself is `trove_common::dates`, shared with the dashboard.

pub use trove_common::dates::format_utc;
use trove_common::dates::{DAY_S, parse_date};

/// A `--since` value as Unix seconds: `YYYY-MM-DD` (that day's UTC midnight), plain Unix
/// seconds, or an age (`90m`, `24h`, `7d`, `2w`) counted back from `now_s`.
pub fn parse_since(s: &str, now_s: i64) -> Result<i64, String> {
    let s = s.trim();
    let err =
        || format!("{s:?} is not a time: say a date (2026-11-01, UTC), Unix seconds, or an age like 24h, 7d or 2w");
    if s.is_empty() {
        return Err(err());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| err());
    }
    if let Some((digits, unit)) = s.split_at_checked(s.len() - 1)
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        let unit_s = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => DAY_S,
            "w" => 7 * DAY_S,
            _ => return Err(err()),
        };
        let n: i64 = digits.parse().map_err(|_| err())?;
        return n
            .checked_mul(unit_s)
            .map(|age| now_s.saturating_sub(age))
            .ok_or_else(err);
    }
    parse_date(s).ok_or_else(err)
}

/// The current Unix time in seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    fn check(input: &str, expected: Result<i64, ()>) {
        assert_eq!(parse_since(input, NOW).map_err(|_| ()), expected, "{input:?}");
    }

    #[test]
    fn since_takes_dates_seconds_and_ages() {
        check("1970-01-01", Ok(0));
        check("2026-11-01", Ok(1_793_491_200));
        check("2000-02-29", Ok(951_782_400));
        check("1700000000", Ok(1_700_000_000));
        check("0", Ok(0));
        check(" 7d ", Ok(NOW - 7 * 86_400));
        check("24h", Ok(NOW - 86_400));
        check("90m", Ok(NOW - 5_400));
        check("2w", Ok(NOW - 14 * 86_400));
        check("30s", Ok(NOW - 30));
    }

    #[test]
    fn since_refuses_what_it_cannot_read() {
        for bad in [
            "",
            "d",
            "7y",
            "-7d",
            "7 d",
            "1.5h",
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "1900-02-29",
            "2026-1-01",
            "26-01-01",
            "2026-01-01T00:00",
            "99999999999999999999",
            "999999999999999999d",
        ] {
            let e = parse_since(bad, NOW).expect_err(bad);
            assert!(e.contains("7d"), "the error suggests forms: {e}");
        }
    }
}
