//! Finding files: `search` (text, kind, tags, owner, size, date; ranked by the controller)
//! and `recommend` (from my download and view history). `--json` prints the controller's
//! JSON as it came, relevance, availability and score included.

use trove_common::api::{Recommendation, SearchHit, SearchResults};

use crate::api::{self, Api};
use crate::human_bytes;
use crate::table::{clip, one_line, print_table};

/// The most characters of a title shown in a table row.
const TITLE_CHARS_MAX: usize = 48;

/// What `trove search` asks for; everything optional, all of it combined.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub text: Option<String>,
    /// Already checked by [`crate::kind::parse`].
    pub kind: Option<String>,
    /// Already normalized by [`crate::tags::normalize`].
    pub tags: Vec<String>,
    pub owner: Option<String>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Unix seconds.
    pub since: Option<i64>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

impl Query {
    /// The request path: one query parameter per field given, `tag=` once per tag.
    pub fn path(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(text) = self.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            pairs.push(("q", text.to_owned()));
        }
        if let Some(kind) = &self.kind {
            pairs.push(("kind", kind.clone()));
        }
        for tag in &self.tags {
            pairs.push(("tag", tag.clone()));
        }
        if let Some(owner) = &self.owner {
            pairs.push(("owner", owner.clone()));
        }
        let numbers = [
            ("min_size", self.min_size.map(|n| n.to_string())),
            ("max_size", self.max_size.map(|n| n.to_string())),
            ("since", self.since.map(|n| n.to_string())),
            ("page", self.page.map(|n| n.to_string())),
            ("per_page", self.per_page.map(|n| n.to_string())),
        ];
        pairs.extend(numbers.into_iter().filter_map(|(k, v)| Some((k, v?))));
        api::path(&["search"], &pairs)
    }
}

pub async fn search(api: &Api, query: &Query, json: bool) -> anyhow::Result<()> {
    if let (Some(min), Some(max)) = (query.min_size, query.max_size)
        && min > max
    {
        anyhow::bail!("--min-size is above --max-size: nothing could match");
    }
    let answer = api.get::<SearchResults>(&query.path()).await?;
    if json {
        println!("{}", answer.text.trim());
        return Ok(());
    }
    let r = answer.value;
    if r.hits.is_empty() {
        eprintln!(
            "{}",
            if r.total == 0 {
                "nothing found".to_owned()
            } else {
                format!("no results on page {} ({} in all)", r.page, r.total)
            }
        );
        return Ok(());
    }
    let rows: Vec<[String; 6]> = r.hits.iter().map(hit_row).collect();
    print_table(["TITLE", "KIND", "SIZE", "OWNERS", "ONLINE", "FILE ID"], &rows);
    let pages = r.total.div_ceil(u64::from(r.per_page.max(1)));
    let more = if u64::from(r.page) < pages {
        format!("; --page {} for more", r.page + 1)
    } else {
        String::new()
    };
    eprintln!("{} found, page {} of {pages}{more}", r.total, r.page);
    Ok(())
}

/// A hit as a table row. ONLINE is how many appliances hold the scarcest chunk, or
/// "unavailable" when some chunk has no live holder (it cannot be downloaded now).
fn hit_row(h: &SearchHit) -> [String; 6] {
    [
        clip(&one_line(&h.title), TITLE_CHARS_MAX),
        h.kind.clone(),
        human_bytes(h.size),
        clip(&h.owners.join(", "), 30),
        if h.available {
            h.availability.to_string()
        } else {
            "unavailable".into()
        },
        h.file_id.clone(),
    ]
}

pub async fn recommend(api: &Api, limit: Option<u32>, json: bool) -> anyhow::Result<()> {
    let pairs: Vec<(&str, String)> = limit.map(|n| ("limit", n.to_string())).into_iter().collect();
    let answer = api
        .get::<Vec<Recommendation>>(&api::path(&["recommendations"], &pairs))
        .await?;
    if json {
        println!("{}", answer.text.trim());
        return Ok(());
    }
    if answer.value.is_empty() {
        eprintln!("no suggestions yet: they come from what you and others download and watch");
        return Ok(());
    }
    let rows: Vec<[String; 5]> = answer
        .value
        .iter()
        .map(|r| {
            let h = &r.hit;
            [
                clip(&one_line(&h.title), TITLE_CHARS_MAX),
                h.kind.clone(),
                human_bytes(h.size),
                h.file_id.clone(),
                if h.available {
                    one_line(&r.reason)
                } else {
                    format!("{} (unavailable now)", one_line(&r.reason))
                },
            ]
        })
        .collect();
    print_table(["TITLE", "KIND", "SIZE", "FILE ID", "WHY"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_becomes_an_encoded_parameter() {
        assert_eq!(Query::default().path(), "/search");
        assert_eq!(
            Query {
                text: Some("  ".into()),
                ..Query::default()
            }
            .path(),
            "/search",
            "blank text is no text"
        );
        let q = Query {
            text: Some("\"debian-12\" OR 1=1; <b>".into()),
            kind: Some("software".into()),
            tags: vec!["sci-fi".into(), "a+b c".into()],
            owner: Some("al&ice".into()),
            min_size: Some(10 << 20),
            max_size: Some(2 << 30),
            since: Some(1_793_491_200),
            page: Some(2),
            per_page: Some(50),
        };
        assert_eq!(
            q.path(),
            "/search?q=%22debian-12%22+OR+1%3D1%3B+%3Cb%3E&kind=software&tag=sci-fi&tag=a%2Bb+c\
             &owner=al%26ice&min_size=10485760&max_size=2147483648&since=1793491200&page=2&per_page=50"
        );
    }

    #[test]
    fn unavailable_hits_are_marked() {
        let mut h = SearchHit {
            file_id: "ab".repeat(32),
            title: "Holiday\n2026".into(),
            kind: "video".into(),
            size: 3 << 29,
            tags: vec![],
            owners: vec!["alice".into(), "bob".into()],
            shared_at: 0,
            relevance: 1.0,
            availability: 3,
            available: true,
            score: 1.0,
        };
        assert_eq!(
            hit_row(&h),
            ["Holiday 2026", "video", "1.5 GiB", "alice, bob", "3", &"ab".repeat(32)].map(String::from)
        );
        h.available = false;
        h.availability = 0;
        assert_eq!(hit_row(&h)[4], "unavailable");
    }
}
