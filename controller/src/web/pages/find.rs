//! Search: `/` and `/search`, the same query and ranking as `GET /api/v1/search`
//! (`search::find`), in a form people can fill in: tags in one box, sizes with units
//! (`10MB`), a date for "since".

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use trove_common::api::{KINDS, SearchHit};

use super::{Fields, bytes_h, form_error, parse_date, render_status, split_tags};
use crate::app::App;
use crate::web::{Chrome, Session, WebError, render};

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/", get(search)).route("/search", get(search))
}

/// One result as a page shows it.
pub struct HitRow {
    pub file_id: String,
    pub title: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub owners: Vec<String>,
    pub size: String,
    pub available: bool,
    pub availability: String,
    pub score: String,
}

pub fn hit_rows(hits: &[SearchHit]) -> Vec<HitRow> {
    hits.iter()
        .map(|h| HitRow {
            file_id: h.file_id.clone(),
            title: h.title.clone(),
            kind: h.kind.clone(),
            tags: h.tags.clone(),
            owners: h.owners.clone(),
            size: bytes_h(h.size),
            available: h.available,
            availability: copies_online(h.availability),
            score: format!("{:.2}", h.score),
        })
        .collect()
}

/// "unavailable", "1 copy online", "3 copies online".
pub fn copies_online(n: u32) -> String {
    match n {
        0 => "unavailable".into(),
        1 => "1 copy online".into(),
        n => format!("{n} copies online"),
    }
}

#[derive(askama::Template)]
#[template(path = "search.html")]
struct SearchPage {
    chrome: Chrome,
    kinds: &'static [&'static str],
    /// What the form shows: the fields as typed.
    q: String,
    kind: String,
    tags: String,
    owner: String,
    min_size: String,
    max_size: String,
    since: String,
    searched: bool,
    error: Option<String>,
    hits: Vec<HitRow>,
    total: u64,
    page: u32,
    prev: Option<String>,
    next: Option<String>,
}

/// The API's query string for what the form says: tags split, sizes and dates turned into
/// numbers. Refuses what cannot be read.
fn api_query(form: &Fields) -> Result<String, String> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for key in ["q", "kind", "owner", "page"] {
        if let Some(v) = form.get(key) {
            out.append_pair(key, v);
        }
    }
    for t in form.all("tag") {
        for t in split_tags(t) {
            out.append_pair("tag", t);
        }
    }
    for key in ["min_size", "max_size"] {
        if let Some(v) = form.get(key).map(str::trim).filter(|v| !v.is_empty()) {
            let n = trove_common::units::parse_bytes(v).map_err(|e| format!("{key}: {e}"))?;
            out.append_pair(key, &n.to_string());
        }
    }
    if let Some(v) = form.get("since").map(str::trim).filter(|v| !v.is_empty()) {
        let secs = match v.parse::<u64>() {
            Ok(n) => i64::try_from(n).map_err(|_| format!("since: {v} is too far in the future"))?,
            Err(_) => parse_date(v).ok_or_else(|| format!("since: {v:?} is not a date like 2024-12-31"))?,
        };
        out.append_pair("since", &secs.to_string());
    }
    Ok(out.finish())
}

/// This search's URL on page `page`.
fn page_url(form: &Fields, page: u32) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for key in ["q", "kind", "tag", "owner", "min_size", "max_size", "since"] {
        for v in form.all(key).filter(|v| !v.is_empty()) {
            out.append_pair(key, v);
        }
    }
    out.append_pair("page", &page.to_string());
    format!("/search?{}", out.finish())
}

async fn search(State(app): State<Arc<App>>, s: Session, RawQuery(raw): RawQuery) -> Result<Response, WebError> {
    let form = Fields::parse(raw.unwrap_or_default().as_bytes());
    let mut page = SearchPage {
        chrome: s.chrome("Search"),
        kinds: &KINDS,
        q: form.text("q"),
        kind: form.text("kind"),
        tags: form.all("tag").collect::<Vec<_>>().join(" "),
        owner: form.text("owner"),
        min_size: form.text("min_size"),
        max_size: form.text("max_size"),
        since: form.text("since"),
        searched: !form.0.is_empty(),
        error: None,
        hits: Vec::new(),
        total: 0,
        page: 1,
        prev: None,
        next: None,
    };
    let found = match api_query(&form) {
        Ok(query) => crate::search::find(&app, &s.caller, Some(&query))
            .await
            .map_err(form_error),
        Err(message) => Err(Ok((StatusCode::BAD_REQUEST, message))),
    };
    match found {
        Ok(r) => {
            page.hits = hit_rows(&r.hits);
            page.total = r.total;
            page.page = r.page;
            page.prev = (r.page > 1).then(|| page_url(&form, r.page - 1));
            let shown = u64::from(r.page) * u64::from(r.per_page);
            page.next = (shown < r.total).then(|| page_url(&form, r.page + 1));
            Ok(render(&page))
        }
        Err(e) => {
            let (status, message) = e?;
            page.error = Some(message);
            Ok(render_status(status, &page))
        }
    }
}
