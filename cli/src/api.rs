//! A small client for the controller's JSON API v1 (`trove_common::api`).
//!
//! Every call sends `Authorization: Bearer <token>` when a token is configured. An answer
//! outside 2xx becomes a [`Refusal`] carrying the controller's own message
//! ([`ApiErrorBody::message`]), so `trove` prints what the controller said and exits
//! non-zero. This module only moves JSON: it does not interpret what it carries. Paths with
//! user-given parts are built by [`path`], which percent-encodes them.

use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use trove_common::api::ApiErrorBody;

/// How long one API call may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to the controller may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a non-JSON error body quoted in an error message.
const ERROR_QUOTE_BYTES_MAX: usize = 200;

/// The controller at `base` (e.g. `http://127.0.0.1:8080`), as one user.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An answer that parsed as `T`, with the JSON text it came in (for `--json`).
pub struct Answer<T> {
    pub value: T,
    pub text: String,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Api> {
        let base = base.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--controller {base:?} is not an http:// URL");
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: base.to_owned(),
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    /// `GET /api/v1{path}`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer<T>> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `POST /api/v1{path}` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<Answer<T>> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `POST /api/v1{path}` without a body.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer<T>> {
        self.call(Method::POST, path, None::<&()>).await
    }

    /// `POST /api/v1{path}` for a route that answers 204: any 2xx is success.
    pub async fn post_no_answer<B: Serialize>(&self, path: &str, body: Option<&B>) -> anyhow::Result<()> {
        self.send(Method::POST, path, body).await.map(|_| ())
    }

    /// `PATCH /api/v1{path}` with a JSON body.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<Answer<T>> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// The controller's URL, as used (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `DELETE /api/v1{path}`; any 2xx is success and the body is ignored.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, path, None::<&()>).await.map(|_| ())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Answer<T>> {
        let url = self.url(path);
        let text = self.send(method, path, body).await?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("the controller's answer to {url} is not what this trove expects"))?;
        Ok(Answer { value, text })
    }

    /// Sends one request; returns the body of a 2xx answer, or the controller's error.
    async fn send<B: Serialize>(&self, method: Method, path: &str, body: Option<&B>) -> anyhow::Result<String> {
        let url = self.url(path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.trim());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the controller at {}: {}", self.base, error_chain(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the controller's answer to {method} {url}"))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(api_error(status, &text))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }
}

/// A non-2xx answer. Callers that treat some refusals specially (a token the controller no
/// longer knows) downcast to it; everyone else just prints it.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    /// The controller's message when it sent an [`ApiErrorBody`], else the status and the
    /// start of whatever it sent.
    message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// The error for a non-2xx answer.
fn api_error(status: StatusCode, text: &str) -> anyhow::Error {
    let message = match serde_json::from_str::<ApiErrorBody>(text) {
        Ok(body) => body.message,
        Err(_) => {
            let mut quote: String = text.trim().chars().take(ERROR_QUOTE_BYTES_MAX).collect();
            if quote.is_empty() {
                quote = "(empty body)".into();
            }
            format!("the controller answered {status}: {quote}")
        }
    };
    anyhow::Error::new(Refusal { status, message })
}

/// The status of a refusal, if `e` is one (and not, say, an unreachable controller).
pub fn refused_with(e: &anyhow::Error) -> Option<StatusCode> {
    e.downcast_ref::<Refusal>().map(|r| r.status)
}

/// An API path from its segments, each percent-encoded (so a user name or token ID cannot
/// add a segment, climb with `..`, or start a query), and a query string of `pairs` in
/// order (a key may repeat), form-encoded as the controller's query parser expects.
pub fn path<S: AsRef<str>>(segments: &[&str], pairs: &[(&str, S)]) -> String {
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        let dots_only = segment.bytes().all(|b| b == b'.');
        for b in segment.bytes() {
            // Unreserved characters (RFC 3986) stay, except the dots of `.` and `..`,
            // which a URL parser would otherwise resolve away.
            if (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) && !dots_only {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if !pairs.is_empty() {
        // Only the query of this URL is used; the host is a placeholder.
        let mut url = reqwest::Url::parse("http://trove.invalid/").expect("a valid URL");
        url.query_pairs_mut()
            .extend_pairs(pairs.iter().map(|(k, v)| (k, v.as_ref())));
        out.push('?');
        out.push_str(url.query().unwrap_or_default());
    }
    out
}

/// reqwest's errors keep the useful part (connection refused, timed out) in their sources.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_controllers_message() {
        let e = api_error(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized","message":"missing or wrong API token"}"#,
        );
        assert_eq!(e.to_string(), "missing or wrong API token");
        let e = api_error(StatusCode::BAD_GATEWAY, "<html>oops</html>");
        assert_eq!(
            e.to_string(),
            "the controller answered 502 Bad Gateway: <html>oops</html>"
        );
        let e = api_error(StatusCode::NOT_FOUND, "");
        assert_eq!(e.to_string(), "the controller answered 404 Not Found: (empty body)");
    }

    #[test]
    fn refusals_keep_their_status() {
        let e = api_error(StatusCode::UNAUTHORIZED, "");
        assert_eq!(refused_with(&e), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(refused_with(&anyhow!("connection refused")), None);
        assert_eq!(refused_with(&e.context("logging out")), Some(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn paths_encode_every_part() {
        let none: &[(&str, &str)] = &[];
        assert_eq!(path(&["users", "alice"], none), "/users/alice");
        assert_eq!(path(&["users", "a/b?c d#e%"], none), "/users/a%2Fb%3Fc%20d%23e%25");
        assert_eq!(path(&["users", ".."], none), "/users/%2E%2E");
        assert_eq!(path(&["users", "."], none), "/users/%2E");
        assert_eq!(
            path(&["users", "a.b_c~d-e", "disable"], none),
            "/users/a.b_c~d-e/disable"
        );
        assert_eq!(path(&["users", "j\u{f6}rg"], none), "/users/j%C3%B6rg");
        assert_eq!(
            path(
                &["search"],
                &[
                    ("q", "rock & roll \"live\""),
                    ("tag", "sci-fi"),
                    ("tag", "a=b+c"),
                    ("page", "2")
                ]
            ),
            "/search?q=rock+%26+roll+%22live%22&tag=sci-fi&tag=a%3Db%2Bc&page=2"
        );
        assert_eq!(path(&["search"], &[("q", "caf\u{e9}")]), "/search?q=caf%C3%A9");
    }

    #[test]
    fn urls_join_without_double_slashes() {
        let api = Api::new("http://127.0.0.1:8080/", None).unwrap();
        assert_eq!(api.url("/nodes"), "http://127.0.0.1:8080/api/v1/nodes");
        assert!(Api::new("127.0.0.1:8080", None).is_err());
        assert!(Api::new("http://x", Some("  ".into())).unwrap().token.is_none());
    }
}
