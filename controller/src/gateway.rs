//! The streaming gateway: `GET /api/v1/files/{id}/content` with HTTP Range, fetching and
//! verifying only the chunks a range needs. (Being built; see issue 5.)

use std::sync::Arc;

use axum::Router;

use crate::app::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
}
