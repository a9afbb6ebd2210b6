//! HTTP Range (RFC 9110 §14) and the validators that go with it, as pure functions.
//!
//! Only the `bytes` unit exists. A `Range` header that does not parse is ignored (the whole
//! representation is sent, as §14.2 allows); one whose every range starts past the end is
//! unsatisfiable (416). Several ranges are answered as one: the smallest span covering all
//! the satisfiable ones (§14.2 lets a server coalesce ranges), so no multipart body exists.
//! More than [`RANGES_MAX`] ranges is treated as abuse and ignored.

/// The most ranges one `Range` header may list before it is ignored.
pub const RANGES_MAX: usize = 64;
/// The longest `Range` header value looked at.
pub const RANGE_HEADER_BYTES_MAX: usize = 4096;

/// What a request asks for, once its `Range` header is read against a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// No (usable) range: all of it, 200.
    All,
    /// Bytes `start..=end` (inclusive, as `Content-Range` writes them), 206.
    Part { start: u64, end: u64 },
    /// Nothing of it can be given, 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

impl Wanted {
    /// The half-open byte span to send for a representation of `len` bytes.
    pub fn span(self, len: u64) -> Option<(u64, u64)> {
        match self {
            Wanted::All => Some((0, len)),
            Wanted::Part { start, end } => Some((start, end + 1)),
            Wanted::Unsatisfiable => None,
        }
    }
}

/// One range-spec as written, before it meets the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    From { first: u64, last: Option<u64> },
    /// `-suffix`.
    Suffix(u64),
}

/// Digits only, as RFC 9110's `1*DIGIT`; a number too big for u64 saturates (it is past
/// the end of any representation anyway).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.bytes()
            .fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))),
    )
}

fn spec(s: &str) -> Option<Spec> {
    let (a, b) = s.trim_matches([' ', '\t']).split_once('-')?;
    if a.is_empty() {
        return Some(Spec::Suffix(number(b)?));
    }
    let first = number(a)?;
    let last = if b.is_empty() { None } else { Some(number(b)?) };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some(Spec::From { first, last })
}

/// Reads a `Range` header value against a representation of `len` bytes.
pub fn parse(header: &str, len: u64) -> Wanted {
    if header.len() > RANGE_HEADER_BYTES_MAX {
        return Wanted::All;
    }
    let Some((unit, set)) = header.trim().split_once('=') else {
        return Wanted::All;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Wanted::All;
    }
    let mut specs = Vec::new();
    // Empty list elements are allowed and skipped (RFC 9110 §5.6.1).
    for part in set.split(',').filter(|p| !p.trim_matches([' ', '\t']).is_empty()) {
        let Some(s) = spec(part) else {
            return Wanted::All;
        };
        specs.push(s);
        if specs.len() > RANGES_MAX {
            return Wanted::All;
        }
    }
    if specs.is_empty() {
        return Wanted::All;
    }
    let mut span: Option<(u64, u64)> = None;
    for s in specs {
        // Inclusive bounds within the representation, if this one is satisfiable.
        let r = match s {
            Spec::From { first, .. } if first >= len => None,
            Spec::From { first, last } => Some((first, last.map_or(len - 1, |l| l.min(len - 1)))),
            Spec::Suffix(0) => None,
            Spec::Suffix(_) if len == 0 => None,
            Spec::Suffix(n) => Some((len - n.min(len), len - 1)),
        };
        if let Some((a, b)) = r {
            span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
    }
    match span {
        Some((start, end)) => Wanted::Part { start, end },
        None => Wanted::Unsatisfiable,
    }
}

/// The strong entity tag of a file: its ID, which names its bytes exactly.
pub fn etag(file_hex: &str) -> String {
    format!("\"{file_hex}\"")
}

/// The tags in an `If-None-Match`/`If-Match` list; `W/` prefixes kept.
fn tags(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// `If-None-Match` against our tag, with the weak comparison §13.1.2 asks for: true when
/// the client's copy is current (answer 304).
pub fn none_match(header: &str, etag: &str) -> bool {
    tags(header).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// `If-Range` (§13.1.5): the range applies only if the client's validator is our strong
/// tag. A date never matches: we send no `Last-Modified`, and a weak tag never matches.
pub fn if_range_holds(header: &str, etag: &str) -> bool {
    header.trim() == etag
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(header: &str, len: u64, expected: Wanted) {
        assert_eq!(parse(header, len), expected, "Range: {header:?} over {len} bytes");
    }

    fn part(start: u64, end: u64) -> Wanted {
        Wanted::Part { start, end }
    }

    #[test]
    fn single_ranges() {
        check("bytes=0-0", 10, part(0, 0));
        check("bytes=0-9", 10, part(0, 9));
        check("bytes=2-5", 10, part(2, 5));
        check("bytes=5-", 10, part(5, 9));
        check("bytes=-3", 10, part(7, 9));
        check("bytes=-30", 10, part(0, 9));
        check("bytes=5-100", 10, part(5, 9));
        check("bytes=9-9", 10, part(9, 9));
        check("Bytes = 1-2", 10, part(1, 2));
        check("bytes=0-99999999999999999999999", 10, part(0, 9));
    }

    #[test]
    fn unsatisfiable() {
        check("bytes=10-", 10, Wanted::Unsatisfiable);
        check("bytes=10-20", 10, Wanted::Unsatisfiable);
        check("bytes=-0", 10, Wanted::Unsatisfiable);
        check("bytes=0-", 0, Wanted::Unsatisfiable);
        check("bytes=-5", 0, Wanted::Unsatisfiable);
        check("bytes=99999999999999999999-", 10, Wanted::Unsatisfiable);
        check("bytes=20-30, 40-", 10, Wanted::Unsatisfiable);
    }

    #[test]
    fn ignored_when_malformed_or_foreign() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=+1-2",
            "bytes=1 -2x",
            "items=0-1",
            "bytes=0x1-2",
            "bytes=-",
            "bytes=1-2,junk",
        ] {
            check(h, 10, Wanted::All);
        }
        let many = format!("bytes={}", vec!["0-0"; RANGES_MAX + 1].join(","));
        check(&many, 10, Wanted::All);
    }

    #[test]
    fn several_ranges_are_coalesced() {
        check("bytes=0-1, 5-6", 10, part(0, 6));
        check("bytes=8-, 0-0", 10, part(0, 9));
        check("bytes=-2,1-1", 10, part(1, 9));
        // An unsatisfiable one among satisfiable ones is dropped.
        check("bytes=50-60, 2-3", 10, part(2, 3));
        check("bytes=1-2,,", 10, part(1, 2));
    }

    #[test]
    fn validators() {
        let e = etag("ab12");
        assert_eq!(e, "\"ab12\"");
        assert!(none_match("\"ab12\"", &e));
        assert!(none_match("\"x\", W/\"ab12\"", &e));
        assert!(none_match("*", &e));
        assert!(!none_match("\"ab1\"", &e));
        assert!(!none_match("", &e));
        assert!(if_range_holds(" \"ab12\" ", &e));
        assert!(!if_range_holds("W/\"ab12\"", &e));
        assert!(!if_range_holds("Tue, 15 Nov 1994 08:12:31 GMT", &e));
    }

    proptest! {
        #[test]
        fn accepted_ranges_lie_within_the_file(
            len in 0u64..1 << 40,
            specs in proptest::collection::vec((proptest::option::of(0u64..1 << 41), proptest::option::of(0u64..1 << 41)), 1..5),
        ) {
            let h = format!("bytes={}", specs.iter().map(|(a, b)| format!(
                "{}-{}",
                a.map(|v| v.to_string()).unwrap_or_default(),
                b.map(|v| v.to_string()).unwrap_or_default()
            )).collect::<Vec<_>>().join(","));
            if let Wanted::Part { start, end } = parse(&h, len) {
                prop_assert!(start <= end && end < len, "{h} over {len}: {start}-{end}");
            }
        }

        #[test]
        fn garbage_never_panics(h in "\\PC{0,80}", len in any::<u64>()) {
            if let Wanted::Part { start, end } = parse(&h, len) {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn near_miss_garbage_never_panics(h in "[bytes=0-9 ,\\-]{0,40}", len in 0u64..100) {
            if let Wanted::Part { start, end } = parse(&h, len) {
                prop_assert!(start <= end && end < len);
            }
        }
    }
}
