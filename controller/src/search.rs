//! Finding things: search ranked by relevance and availability, history (downloads and
//! views), "me", and recommendations drawn from what other people got.
//!
//! The ranking formula lives with its SQL in `db::files::search`. Recommendations are ranked
//! here, in [`rank_recommendations`], a pure function.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use trove_common::FileId;
use trove_common::api::{EventRequest, KINDS, MeView, Recommendation, SearchHit, SearchResults, TAGS_MAX};

use crate::api::{ApiError, Caller};
use crate::app::{App, now_s};
use crate::db::{FileFacts, Ranked, SearchQuery};
use crate::text;

const PER_PAGE_DEFAULT: u32 = 20;
const PER_PAGE_MAX: u32 = 200;
const PAGE_MAX: u32 = 10_000;
const HISTORY_SHOWN: u32 = 200;
const RECOMMENDATIONS_DEFAULT: u32 = 10;
const RECOMMENDATIONS_MAX: u32 = 100;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/files/{id}/events", post(record_event))
        .route("/api/v1/recommendations", get(recommendations))
}

/// Reads the query string by hand: `tag` may repeat, which serde_urlencoded cannot express.
fn parse_search(raw: Option<&str>) -> Result<(SearchQuery, u32, u32), ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let mut q = SearchQuery::default();
    let mut page = 1u32;
    let mut per_page = PER_PAGE_DEFAULT;
    let number = |key: &str, v: &str| -> Result<u64, ApiError> {
        v.trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("{key} must be a whole number, not {v:?}")))
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let value = value.as_ref();
        match key.as_ref() {
            "q" => q.words = text::query_words(value),
            "kind" if !value.is_empty() => {
                let kind = value.trim().to_lowercase();
                if !KINDS.contains(&kind.as_str()) {
                    return Err(bad(format!("kind {kind:?} is not one of {}", KINDS.join(", "))));
                }
                q.kind = Some(kind);
            }
            "tag" if !value.is_empty() => {
                let tag = trove_common::api::normalize_tag(value);
                if !q.tags.contains(&tag) {
                    // Each tag is one more lookup in the query: as many as a share may carry.
                    if q.tags.len() == TAGS_MAX {
                        return Err(bad(format!("a search may name at most {TAGS_MAX} tags")));
                    }
                    q.tags.push(tag);
                }
            }
            "owner" if !value.is_empty() => q.owner = Some(value.trim().to_owned()),
            "min_size" if !value.is_empty() => q.min_size = Some(number("min_size", value)?),
            "max_size" if !value.is_empty() => q.max_size = Some(number("max_size", value)?),
            "since" if !value.is_empty() => {
                q.since = Some(number("since", value)?.min(i64::MAX as u64) as i64);
            }
            "page" => page = number("page", value)?.clamp(1, u64::from(PAGE_MAX)) as u32,
            "per_page" => per_page = number("per_page", value)?.clamp(1, u64::from(PER_PAGE_MAX)) as u32,
            _ => {}
        }
    }
    q.limit = u64::from(per_page);
    q.offset = u64::from(page - 1) * u64::from(per_page);
    Ok((q, page, per_page))
}

/// A search hit from what the database knows; `relevance` and `score` come from ranking.
fn hit(f: &FileFacts, relevance: f64, score: f64) -> SearchHit {
    let first = f.shares.first();
    let mut tags: Vec<String> = Vec::new();
    let mut owners: Vec<String> = Vec::new();
    for s in &f.shares {
        for t in &s.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        if !owners.contains(&s.owner) {
            owners.push(s.owner.clone());
        }
    }
    SearchHit {
        file_id: f.file_id.to_string(),
        title: first.map(|s| s.title.clone()).unwrap_or_default(),
        kind: first.map(|s| s.kind.clone()).unwrap_or_else(|| "other".into()),
        size: f.size,
        tags,
        owners,
        shared_at: f.shares.iter().map(|s| s.created_at).max().unwrap_or(0),
        relevance,
        availability: f.availability,
        available: f.availability > 0,
        score,
    }
}

/// A search hit: availability as the ranking saw it, so that it agrees with the hit's score
/// and place (the facts come from a later statement; the availability loop may have moved
/// it in between).
fn search_hit(f: &FileFacts, r: &Ranked) -> SearchHit {
    let mut h = hit(f, r.relevance, r.score);
    h.availability = r.availability;
    h.available = r.availability > 0;
    h
}

async fn search(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<SearchResults>, ApiError> {
    Ok(Json(find(&app, &caller, raw.as_deref()).await?))
}

/// Runs the search a query string asks for (`q`, `kind`, `tag`..., `owner`, `min_size`,
/// `max_size`, `since`, `page`, `per_page`), as `caller` may see it. The API's search and
/// the dashboard's.
pub async fn find(app: &App, caller: &Caller, raw: Option<&str>) -> Result<SearchResults, ApiError> {
    let (q, page, per_page) = parse_search(raw)?;
    let (ranked, total) = app.db.search(&q, caller.user_id).await?;
    let ids: Vec<FileId> = ranked.iter().map(|r| r.file_id).collect();
    let facts: HashMap<FileId, FileFacts> = app
        .db
        .file_facts(&ids, caller.user_id)
        .await?
        .into_iter()
        .map(|f| (f.file_id, f))
        .collect();
    let hits = ranked
        .iter()
        .filter_map(|r| Some(search_hit(facts.get(&r.file_id)?, r)))
        .collect();
    Ok(SearchResults {
        hits,
        total,
        page,
        per_page,
    })
}

async fn record_event(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<EventRequest>,
) -> Result<StatusCode, ApiError> {
    if req.kind != "download" && req.kind != "view" {
        return Err(ApiError::BadRequest(format!(
            "an event is a \"download\" or a \"view\", not {:?}",
            req.kind
        )));
    }
    let id = crate::api::parse_file_id(&id)?;
    if app.db.visible_file(&id, caller.user_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no file {id}")));
    }
    app.db.add_event(caller.user_id, &id, &req.kind, now_s()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<MeView>, ApiError> {
    Ok(Json(me_view(&app, &caller).await?))
}

/// What `GET /api/v1/me` and the dashboard's `/me` show.
pub async fn me_view(app: &App, caller: &Caller) -> Result<MeView, ApiError> {
    let user = app
        .db
        .user_view(&caller.name, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("your account is gone".into()))?;
    Ok(MeView {
        user,
        shares: app.db.my_shares(caller.user_id).await?,
        history: app.db.my_history(caller.user_id, HISTORY_SHOWN).await?,
        shared_bytes: app.db.shared_bytes(caller.user_id).await?,
    })
}

/// What recommendations are made from.
pub struct Evidence<'a> {
    /// (candidate, file in my history, people who got both).
    pub co_downloads: &'a [(FileId, FileId, u64)],
    /// Files I must not be offered: what I downloaded, viewed or share.
    pub have: &'a HashSet<FileId>,
    /// Facts about candidates and about my history's files, as I may see them.
    pub facts: &'a HashMap<FileId, FileFacts>,
    /// Tags and kinds of my history's files.
    pub my_tags: &'a HashSet<String>,
    pub my_kinds: &'a HashSet<String>,
}

/// Ranks candidates: each co-downloading person counts 1, each tag shared with my history
/// 0.5, a kind I have got before 0.5. Among equals, newest first, then most available. Never
/// what I have, never a file I cannot see (someone else's private file), never one with no
/// co-download at all. Each comes with its reason: the file of mine most people got it with.
pub fn rank_recommendations(e: &Evidence<'_>, limit: usize) -> Vec<(FileId, f64, FileId)> {
    let mut score: HashMap<FileId, f64> = HashMap::new();
    let mut because: HashMap<FileId, (u64, FileId)> = HashMap::new();
    for &(candidate, mine, people) in e.co_downloads {
        if e.have.contains(&candidate) || !e.facts.contains_key(&candidate) {
            continue;
        }
        *score.entry(candidate).or_default() += people as f64;
        let best = because.entry(candidate).or_insert((0, mine));
        if people > best.0 || (people == best.0 && mine < best.1) {
            *best = (people, mine);
        }
    }
    let mut out: Vec<(FileId, f64, FileId)> = score
        .into_iter()
        .map(|(f, s)| {
            let facts = &e.facts[&f];
            let tags: HashSet<&String> = facts.shares.iter().flat_map(|s| &s.tags).collect();
            let shared_tags = tags.iter().filter(|t| e.my_tags.contains(**t)).count();
            let kind_match = facts.shares.iter().any(|s| e.my_kinds.contains(&s.kind));
            let s = s + 0.5 * shared_tags as f64 + if kind_match { 0.5 } else { 0.0 };
            (f, s, because[&f].1)
        })
        .collect();
    let newest = |f: &FileId| e.facts[f].shares.iter().map(|s| s.created_at).max().unwrap_or(0);
    out.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| newest(&b.0).cmp(&newest(&a.0)))
            .then_with(|| e.facts[&b.0].availability.cmp(&e.facts[&a.0].availability))
            .then_with(|| a.0.cmp(&b.0))
    });
    out.truncate(limit);
    out
}

async fn recommendations(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Recommendation>>, ApiError> {
    let mut limit = RECOMMENDATIONS_DEFAULT;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if k == "limit" {
            limit = v
                .trim()
                .parse::<u32>()
                .map_err(|_| ApiError::BadRequest(format!("limit must be a whole number, not {v:?}")))?
                .clamp(1, RECOMMENDATIONS_MAX);
        }
    }
    Ok(Json(recommend(&app, &caller, limit).await?))
}

/// Up to `limit` files for `caller`, each with its reason. The API's recommendations and
/// the dashboard's.
pub async fn recommend(app: &App, caller: &Caller, limit: u32) -> Result<Vec<Recommendation>, ApiError> {
    let limit = limit.clamp(1, RECOMMENDATIONS_MAX);
    let me = caller.user_id;
    let (history, shared) = app.db.files_of_user(me).await?;
    let have: HashSet<FileId> = history.iter().chain(&shared).copied().collect();
    let co = app.db.co_downloads(me).await?;
    let mut wanted: Vec<FileId> = co.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
    wanted.extend(&history);
    wanted.sort_unstable();
    wanted.dedup();
    let facts: HashMap<FileId, FileFacts> = app
        .db
        .file_facts(&wanted, me)
        .await?
        .into_iter()
        .map(|f| (f.file_id, f))
        .collect();
    let mine = history.iter().filter_map(|f| facts.get(f));
    let my_tags: HashSet<String> = mine
        .clone()
        .flat_map(|f| f.shares.iter().flat_map(|s| s.tags.clone()))
        .collect();
    let my_kinds: HashSet<String> = mine.flat_map(|f| f.shares.iter().map(|s| s.kind.clone())).collect();
    let ranked = rank_recommendations(
        &Evidence {
            co_downloads: &co,
            have: &have,
            facts: &facts,
            my_tags: &my_tags,
            my_kinds: &my_kinds,
        },
        limit as usize,
    );
    let title = |f: &FileId| {
        facts
            .get(f)
            .and_then(|x| x.shares.first())
            .map_or_else(|| f.to_string(), |s| s.title.clone())
    };
    let mut out: Vec<Recommendation> = ranked
        .iter()
        .map(|(f, score, anchor)| Recommendation {
            hit: hit(&facts[f], 1.0, *score),
            reason: format!("people who got {:?} also got this", title(anchor)),
        })
        .collect();
    if out.len() < limit as usize {
        // Too little history to go on: what most people got, then what is new.
        let have_now: HashSet<FileId> = have.iter().copied().chain(ranked.iter().map(|r| r.0)).collect();
        let popular = app.db.popular(limit * 4).await?;
        let newest = app.db.newest_visible(me, limit * 4).await?;
        let extra: Vec<FileId> = popular
            .iter()
            .map(|(f, _)| *f)
            .chain(newest)
            .filter(|f| !have_now.contains(f))
            .collect();
        let people: HashMap<FileId, u64> = popular.into_iter().collect();
        let mut seen = HashSet::new();
        for f in app.db.file_facts(&extra, me).await? {
            if out.len() >= limit as usize {
                break;
            }
            if !seen.insert(f.file_id) {
                continue;
            }
            let n = people.get(&f.file_id).copied().unwrap_or(0);
            let reason = match n {
                0 => "new here".to_owned(),
                1 => "popular: 1 person got this".to_owned(),
                n => format!("popular: {n} people got this"),
            };
            out.push(Recommendation {
                hit: hit(&f, 1.0, n as f64),
                reason,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_common::Hash32;
    use trove_common::api::ShareView;

    fn id(i: u8) -> FileId {
        FileId(Hash32([i; 32]))
    }

    fn facts(i: u8, kind: &str, tags: &[&str], at: i64) -> (FileId, FileFacts) {
        (
            id(i),
            FileFacts {
                file_id: id(i),
                size: 1,
                availability: 3,
                shares: vec![ShareView {
                    owner: "x".into(),
                    title: format!("f{i}"),
                    kind: kind.into(),
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    description: String::new(),
                    private: false,
                    created_at: at,
                }],
            },
        )
    }

    #[test]
    fn co_downloads_rank_first_then_tags_then_newness_and_what_i_have_never_shows() {
        // I got 1. Others who got 1 also got 2 (two people), 3 (one), 4 (one, newer, shares my
        // tag), and 5, which is invisible to me (not in facts), and 1 itself.
        let co = [
            (id(2), id(1), 2),
            (id(3), id(1), 1),
            (id(4), id(1), 1),
            (id(5), id(1), 3),
            (id(6), id(1), 1),
        ];
        let facts: HashMap<FileId, FileFacts> = [
            facts(1, "video", &["scifi"], 10),
            facts(2, "audio", &[], 5),
            facts(3, "audio", &[], 50),
            facts(4, "audio", &["scifi"], 20),
            facts(6, "audio", &[], 60),
        ]
        .into_iter()
        .collect();
        let have: HashSet<FileId> = [id(1), id(6)].into_iter().collect();
        let my_tags: HashSet<String> = ["scifi".to_string()].into_iter().collect();
        let my_kinds: HashSet<String> = ["video".to_string()].into_iter().collect();
        let got = rank_recommendations(
            &Evidence {
                co_downloads: &co,
                have: &have,
                facts: &facts,
                my_tags: &my_tags,
                my_kinds: &my_kinds,
            },
            10,
        );
        let order: Vec<FileId> = got.iter().map(|r| r.0).collect();
        assert_eq!(order, [id(2), id(4), id(3)]);
        assert!(got.iter().all(|r| r.2 == id(1)));
    }

    #[test]
    fn search_parameters_parse_and_refuse_nonsense() {
        let (q, page, per) = parse_search(Some(
            "q=Caf%C3%A9+%22NOT%22&tag=Sci+Fi&tag=b&kind=Video&page=2&per_page=5",
        ))
        .unwrap();
        assert_eq!(q.words, ["cafe", "not"]);
        assert_eq!(q.tags, ["sci-fi", "b"]);
        assert_eq!(q.kind.as_deref(), Some("video"));
        assert_eq!((page, per, q.offset, q.limit), (2, 5, 5, 5));
        assert!(parse_search(Some("kind=movie")).is_err());
        // Tags are capped (each is a lookup), repeats are one tag.
        let many = |n: usize| (0..n).map(|i| format!("tag=t{i}")).collect::<Vec<_>>().join("&");
        assert_eq!(parse_search(Some(&many(TAGS_MAX))).unwrap().0.tags.len(), TAGS_MAX);
        assert!(parse_search(Some(&many(TAGS_MAX + 1))).is_err());
        let (q, ..) = parse_search(Some(&"tag=Same&".repeat(1000))).unwrap();
        assert_eq!(q.tags, ["same"]);
        assert!(parse_search(Some("min_size=-1")).is_err());
        assert!(parse_search(Some("per_page=100000000000000000000000")).is_err());
        let (q, ..) = parse_search(Some("q=%27%3B+DROP+TABLE+users%3B+--")).unwrap();
        assert_eq!(q.words, ["drop", "table", "users"]);
    }
}
