//! Tags as the controller keeps them ([`normalize_tag`]), each once, within [`TAG_BYTES_MAX`] and
//! [`TAGS_MAX`]. `share` and `search` both pass theirs through [`normalize`], so
//! `--tag "Sci Fi"` finds what `--tag sci-fi` shared, and the limits are checked on the form
//! the controller stores.

use trove_common::api::{TAG_BYTES_MAX, TAGS_MAX, normalize_tag};

/// The tags as they will be sent, in the order first given; an error a person can act on
/// for an empty or over-long tag, or too many.
pub fn normalize(tags: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for raw in tags {
        let tag = normalize_tag(raw);
        if tag.is_empty() {
            return Err("a tag cannot be empty".into());
        }
        if tag.len() > TAG_BYTES_MAX {
            return Err(format!(
                "tag {tag:?} is {} bytes long; the most is {TAG_BYTES_MAX}",
                tag.len()
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > TAGS_MAX {
        return Err(format!("{} different tags; the most is {TAGS_MAX}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[&str], expected: Result<&[&str], &str>) {
        let input: Vec<String> = input.iter().map(|s| s.to_string()).collect();
        match (normalize(&input), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input:?}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: {got}"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn tags_are_lowercased_trimmed_and_kept_once() {
        check(&[], Ok(&[]));
        check(&[" Sci-Fi ", "sci-fi", "SCI-FI", "beach"], Ok(&["sci-fi", "beach"]));
        check(
            &["Science   Fiction", "science-fiction", "sci fi"],
            Ok(&["science-fiction", "sci-fi"]),
        );
        check(&["Été"], Ok(&["été"]));
    }

    #[test]
    fn bad_tags_say_what_is_wrong() {
        check(&["ok", "  "], Err("cannot be empty"));
        check(&[&"x".repeat(TAG_BYTES_MAX)], Ok(&[&"x".repeat(TAG_BYTES_MAX)]));
        check(&[&"x".repeat(TAG_BYTES_MAX + 1)], Err("the most is"));
        // Bytes, not characters: 33 two-byte letters are 66 bytes.
        check(&[&"é".repeat(33)], Err("66 bytes"));

        let many: Vec<String> = (0..=TAGS_MAX).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        check(&many, Err("different tags"));
        // Duplicates do not count against the limit.
        let mut dup = many[..TAGS_MAX].to_vec();
        dup.extend(&many[..5]);
        assert_eq!(
            normalize(&dup.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .len(),
            TAGS_MAX
        );
    }
}
