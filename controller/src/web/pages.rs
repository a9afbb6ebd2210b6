//! The people's pages: sign up, log in and out, profiles, search, a file, sharing (upload)
//! and my dashboard. URLs, IDs and classes are the contract in `docs/dashboard.md`.
//!
//! Pages do what the JSON API does by calling the same functions (`accounts::sign_up`,
//! `accounts::log_in`, `search::find`, `api::register_share`, ...), so visibility, ranking,
//! limits and rate limiting cannot drift between the two. They add only what a browser
//! needs: forms, cookies, CSRF checks and HTML.
//!
//! Every response carries [`CSP`] (no inline scripts or styles: the JavaScript is
//! `assets/trove.js`), and every POST whose `Origin` names another host is refused before it
//! reaches a handler, on top of the per-form CSRF tokens (`web::guard`, for all pages).

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;

use super::WebError;
use crate::api::ApiError;
use crate::app::App;

mod accounts;
mod file;
mod find;
mod mine;
mod share;
pub use share::SPOOL_RESERVE_BYTES as UPLOAD_RESERVE_BYTES;

/// The Content-Security-Policy of every page: scripts, styles and media from this origin
/// only, no plugins, no framing.
pub const CSP: &str =
    "default-src 'self'; media-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .merge(accounts::routes())
        .merge(find::routes())
        .merge(file::routes())
        .merge(share::routes())
        .merge(mine::routes())
}

/// The templates' HTML escaper (`controller/askama.toml`): askama's own writes numeric
/// entities (`&#60;`); this one writes the named ones people and tests recognise (`&lt;`),
/// and escapes the same five characters, so text is text in elements and attributes alike.
#[derive(Clone, Copy)]
pub struct HtmlNamed;

impl askama::filters::Escaper for HtmlNamed {
    fn write_escaped_str<W: std::fmt::Write>(&self, mut dest: W, s: &str) -> std::fmt::Result {
        let mut last = 0;
        for (i, b) in s.bytes().enumerate() {
            let entity = match b {
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'&' => "&amp;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            dest.write_str(&s[last..i])?;
            dest.write_str(entity)?;
            last = i + 1;
        }
        dest.write_str(&s[last..])
    }
}

/// The fields of a form (`application/x-www-form-urlencoded`) or a query string.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(bytes: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, or "".
    pub fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or("").to_owned()
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether a checkbox `key` was ticked.
    pub fn checked(&self, key: &str) -> bool {
        matches!(self.get(key), Some("on" | "1" | "true" | "yes"))
    }
}

/// A page with a status other than 200 (a form shown again with its error).
pub fn render_status(status: StatusCode, t: &impl askama::Template) -> Response {
    let mut res = super::render(t);
    if res.status() == StatusCode::OK {
        *res.status_mut() = status;
    }
    res
}

/// The status an API error would answer with, for a form shown again with its message.
/// Internal errors are not shown on a form: they become the error page.
pub fn form_error(e: ApiError) -> Result<(StatusCode, String), WebError> {
    let status = match &e {
        ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::WrongPassword | ApiError::NoToken | ApiError::BadToken => StatusCode::UNAUTHORIZED,
        ApiError::Forbidden => StatusCode::FORBIDDEN,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::Conflict(_) => StatusCode::CONFLICT,
        ApiError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        ApiError::Internal(_) => return Err(e.into()),
    };
    Ok((status, e.to_string()))
}

/// Where a login may send the browser back to: a path on this site, never another site
/// (`//evil.example` and `/\evil.example` are other sites to a browser). Control characters
/// are refused too: a browser drops tabs and newlines from a URL, so `/<TAB>/evil.example`
/// is `//evil.example` to it, and a lone CR or LF is not a valid `Location` header at all.
pub fn local_path(next: &str) -> String {
    let ok =
        next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') && !next.chars().any(char::is_control);
    if ok && !next.starts_with("/login") && !next.starts_with("/signup") {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

pub use trove_common::dates::parse_date;
pub use trove_common::units::format_bytes as bytes_h;

/// Unix seconds as a UTC date and time, `2026-05-04 13:02 UTC`.
pub fn when_h(secs: i64) -> String {
    format!("{} UTC", trove_common::dates::format_utc(secs))
}

/// Tags as a person types them in one box: separated by spaces or commas.
pub fn split_tags(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_nonsense_is_refused() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800));
        assert_eq!(when_h(1_709_164_800 + 3600 + 120), "2024-02-29 01:02 UTC");
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path("/f/abc?x=1"), "/f/abc?x=1");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/login"), "/");
        assert_eq!(local_path(""), "/");
        // Browsers strip tabs and newlines from URLs: these would be `//evil.example`.
        assert_eq!(local_path("/\t/evil.example"), "/");
        assert_eq!(local_path("/\n/evil.example"), "/");
        assert_eq!(local_path("/\r/evil.example"), "/");
        assert_eq!(local_path("/me\x7f"), "/");
    }

    #[test]
    fn html_is_escaped_with_named_entities() {
        use askama::filters::Escaper;
        let mut out = String::new();
        HtmlNamed
            .write_escaped_str(&mut out, "<script>alert('x' & \"y\")</script>é")
            .unwrap();
        assert_eq!(
            out,
            "&lt;script&gt;alert(&#39;x&#39; &amp; &quot;y&quot;)&lt;/script&gt;é"
        );
    }

    #[test]
    fn sizes_and_tags_read_like_people_write_them() {
        assert_eq!(bytes_h(0), "0 B");
        assert_eq!(bytes_h(1536), "1.5 KiB");
        assert_eq!(bytes_h(3 << 30), "3.0 GiB");
        assert_eq!(split_tags(" a, b  c,,").collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
