//! What people type, made safe and searchable: words folded to lowercase without accents,
//! tags normalised, and full-text queries built from words only, so no input can reach the
//! query syntax of FTS5 or `tsquery` (quotes, `*`, `OR`, `NOT`, `-`, SQL: all just text).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Words per search query, and bytes per word: enough for any real query, and a 1 MB paste
/// costs nothing.
const QUERY_WORDS_MAX: usize = 16;
const WORD_BYTES_MAX: usize = 64;

/// The searchable words of `text`: runs of letters and digits, lowercased, accents removed.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.nfd()
                .filter(|c| !is_combining_mark(*c))
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty() && w.len() <= WORD_BYTES_MAX)
}

/// What a share is indexed by: its title, description and tags as words, one space apart.
pub fn search_text(title: &str, description: &str, tags: &[String]) -> String {
    let mut out: Vec<String> = words(title).collect();
    out.extend(words(description));
    for t in tags {
        out.extend(words(t));
    }
    out.join(" ")
}

/// The words of a query, deduplicated, at most [`QUERY_WORDS_MAX`].
pub fn query_words(q: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in words(q) {
        if !out.contains(&w) {
            out.push(w);
        }
        if out.len() == QUERY_WORDS_MAX {
            break;
        }
    }
    out
}

/// An FTS5 query: every word, as a quoted prefix (`"word"*`), all required. Words hold only
/// letters and digits, so the quotes cannot be broken out of.
pub fn fts5_query(words: &[String]) -> String {
    words.iter().map(|w| format!("\"{w}\"*")).collect::<Vec<_>>().join(" ")
}

/// A PostgreSQL `tsquery` in the same shape: `word:* & word:*`.
pub fn tsquery(words: &[String]) -> String {
    words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fold_case_and_accents_and_drop_punctuation() {
        let got: Vec<String> = words("Café-Crème \"NOT\" *x* debian-12 😀 Ünïcödé").collect();
        assert_eq!(got, ["cafe", "creme", "not", "x", "debian", "12", "unicode"]);
    }

    #[test]
    fn hostile_queries_become_plain_words() {
        for q in [
            "\"",
            "*",
            "NOT",
            "OR",
            "'; DROP TABLE users; --",
            "a\" OR 1=1 --",
            "😀😀",
            "",
        ] {
            let w = query_words(q);
            let fts = fts5_query(&w);
            assert!(!fts.contains('\''), "{q:?} -> {fts:?}");
            assert_eq!(fts.matches('"').count(), 2 * w.len(), "{q:?} -> {fts:?}");
            assert!(tsquery(&w).chars().all(|c| c.is_alphanumeric() || " :*&".contains(c)));
        }
        assert_eq!(query_words("'; DROP TABLE users; --"), ["drop", "table", "users"]);
        let garbage: String = (0..1024).map(|i| char::from(b'!' + (i % 90) as u8)).collect();
        assert!(query_words(&garbage).len() <= QUERY_WORDS_MAX);
        assert!(
            query_words(&"x".repeat(100_000)).is_empty(),
            "one overlong word is no word"
        );
    }

    #[test]
    fn tags_normalise() {
        assert_eq!(
            trove_common::api::normalize_tag("  Science  Fiction "),
            "science-fiction"
        );
        assert_eq!(search_text("The Matrix", "", &["sci-fi".into()]), "the matrix sci fi");
    }
}
