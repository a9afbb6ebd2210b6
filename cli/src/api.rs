//! A small client for the controller's JSON API v1 (`trove_common::api`).
//!
//! Every call sends `Authorization: Bearer <token>` when a token is configured. An answer
//! outside 2xx becomes an error carrying the controller's own message
//! ([`ApiErrorBody::message`]), so `trove` prints what the controller said and exits
//! non-zero. This module only moves JSON: it does not interpret what it carries.

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

/// The error for a non-2xx answer: the controller's message when it sent an
/// [`ApiErrorBody`], else the status and the start of whatever it sent.
fn api_error(status: StatusCode, text: &str) -> anyhow::Error {
    match serde_json::from_str::<ApiErrorBody>(text) {
        Ok(body) => anyhow!("{}", body.message),
        Err(_) => {
            let mut quote: String = text.trim().chars().take(ERROR_QUOTE_BYTES_MAX).collect();
            if quote.is_empty() {
                quote = "(empty body)".into();
            }
            anyhow!("the controller answered {status}: {quote}")
        }
    }
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
    fn urls_join_without_double_slashes() {
        let api = Api::new("http://127.0.0.1:8080/", None).unwrap();
        assert_eq!(api.url("/nodes"), "http://127.0.0.1:8080/api/v1/nodes");
        assert!(Api::new("127.0.0.1:8080", None).is_err());
        assert!(Api::new("http://x", Some("  ".into())).unwrap().token.is_none());
    }
}
