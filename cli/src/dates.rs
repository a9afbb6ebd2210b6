//! Unix seconds to and from what people type and read: `--since` values and the dates in
//! `trove me`. UTC throughout, so a date means the same on every machine; no time zone
//! database. The calendar arithmetic is Howard Hinnant's `days_from_civil` and
//! `civil_from_days` (proleptic Gregorian).

const DAY_S: i64 = 86_400;

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

/// `YYYY-MM-DD` as the Unix seconds of its UTC midnight; `None` for anything else,
/// including days a month does not have.
fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(y) && all_digits(m) && all_digits(d)) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d) * DAY_S)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2026-11-22 21:05` (UTC).
pub fn format_utc(unix_s: i64) -> String {
    let (y, m, d) = civil_from_days(unix_s.div_euclid(DAY_S));
    let secs = unix_s.rem_euclid(DAY_S);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", secs / 3_600, secs % 3_600 / 60)
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

    #[test]
    fn dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(format_utc(0), "1970-01-01 00:00");
        assert_eq!(format_utc(951_782_400 + 3_600 * 13 + 60 * 7 + 59), "2000-02-29 13:07");
        assert_eq!(format_utc(-1), "1969-12-31 23:59");
    }
}
