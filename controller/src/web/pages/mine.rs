//! My dashboard, `/me`: the space my shares take, each share with how many people got it
//! and watched it, what I got and watched, and what I might like (with why). The same data
//! as `GET /api/v1/me` and `GET /api/v1/recommendations` (`search::me_view`,
//! `search::recommend`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use trove_common::api::{MeView, MyEvent, MyShare};

use super::find::{HitRow, hit_rows};
use super::{bytes_h, when_h};
use crate::app::App;
use crate::web::{Chrome, Session, WebError, render};

/// Recommendations shown on the dashboard.
const RECOMMENDATIONS_SHOWN: u32 = 10;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/me", get(me))
}

struct Reco {
    hit: HitRow,
    reason: String,
}

#[derive(askama::Template)]
#[template(path = "me.html")]
struct MePage {
    chrome: Chrome,
    display_name: String,
    space_used: String,
    space_used_bytes: u64,
    shares: Vec<(MyShare, String, String)>,
    history: Vec<(MyEvent, String)>,
    recommendations: Vec<Reco>,
}

async fn me(State(app): State<Arc<App>>, s: Session) -> Result<Response, WebError> {
    let MeView {
        user,
        shares,
        history,
        shared_bytes,
    } = crate::search::me_view(&app, &s.caller).await?;
    let recs = crate::search::recommend(&app, &s.caller, RECOMMENDATIONS_SHOWN).await?;
    let hits: Vec<_> = recs.iter().map(|r| r.hit.clone()).collect();
    let page = MePage {
        chrome: s.chrome("My Trove"),
        display_name: user.display_name,
        space_used: bytes_h(shared_bytes),
        space_used_bytes: shared_bytes,
        shares: shares
            .into_iter()
            .map(|sh| {
                let (size, at) = (bytes_h(sh.size), when_h(sh.shared_at));
                (sh, size, at)
            })
            .collect(),
        history: history
            .into_iter()
            .map(|e| {
                let at = when_h(e.at);
                (e, at)
            })
            .collect(),
        recommendations: hit_rows(&hits)
            .into_iter()
            .zip(recs)
            .map(|(hit, r)| Reco { hit, reason: r.reason })
            .collect(),
    };
    Ok(render(&page))
}
