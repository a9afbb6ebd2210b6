//! The stylesheet and scripts, compiled into the binary so the controller stays one file.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes). Names carry no version: pages are small and the cache
/// lifetime short, so a new controller's assets arrive within minutes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "trove.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/trove.css"),
    ),
    (
        "trove.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/trove.js"),
    ),
];

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
