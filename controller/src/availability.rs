//! Keeps `files.availability` (live appliances holding a file's scarcest chunk) current, so
//! search ranks by it without reading holdings per query.
//!
//! Two triggers: chunks whose holdings changed (marked by `App::touch_chunks`, from `have`
//! deltas and shares) recompute just their files; a change in which nodes are online
//! recomputes every file, a page at a time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{debug, warn};
use trove_common::{ChunkId, NodeId};

use crate::app::App;

const TICK: Duration = Duration::from_secs(1);
/// Availability only orders search results: during an announce storm it waits for ingest (which
/// needs SQLite's one write lock far more), up to this long.
const DEFER_MAX: Duration = Duration::from_secs(10);
const DEFER_POLL: Duration = Duration::from_millis(50);
/// Files per statement of a full recompute. Each statement holds SQLite's one write lock; a
/// changed bucket rewrites the file's shares and tags (migration 0003's triggers), so a page of
/// 2,000 could hold it for over 2 s at 1M files. Between pages the loop pauses and lets queued
/// ingest go first, so writers wait at most one page.
const FILES_PER_PAGE: u32 = 500;
const PAGE_PAUSE: Duration = Duration::from_millis(5);

pub async fn availability_loop(app: Arc<App>) {
    let mut online: Option<BTreeSet<NodeId>> = None;
    loop {
        tokio::time::sleep(TICK).await;
        defer_to_ingest(&app).await;
        if let Err(e) = refresh(&app, &mut online).await {
            warn!(error = %e, "availability refresh failed; will retry");
            online = None;
        }
    }
}

/// Waits while ingest has messages queued, up to [`DEFER_MAX`].
async fn defer_to_ingest(app: &App) {
    let deferred = tokio::time::Instant::now();
    while app.ingest_queued.load(Ordering::Relaxed) > 0 && deferred.elapsed() < DEFER_MAX {
        tokio::time::sleep(DEFER_POLL).await;
    }
}

async fn refresh(app: &App, online: &mut Option<BTreeSet<NodeId>>) -> anyhow::Result<()> {
    let now_online: BTreeSet<NodeId> = app
        .db
        .nodes()
        .await?
        .into_iter()
        .filter(|n| n.state == "online")
        .map(|n| n.id)
        .collect();
    let touched: Vec<ChunkId> = std::mem::take(&mut *app.availability_dirty.lock().expect("availability lock"))
        .into_iter()
        .collect();
    if online.as_ref() != Some(&now_online) {
        let started = std::time::Instant::now();
        let mut after = Vec::new();
        let mut pages = 0;
        while let Some(last) = app.db.refresh_availability_page(&after, FILES_PER_PAGE).await? {
            after = last;
            pages += 1;
            tokio::time::sleep(PAGE_PAUSE).await;
            defer_to_ingest(app).await;
        }
        debug!(
            pages,
            ms = started.elapsed().as_millis() as u64,
            "availability of every file recomputed"
        );
        *online = Some(now_online);
    } else if !touched.is_empty() {
        app.db.refresh_availability_of_chunks(&touched).await?;
    }
    Ok(())
}
