//! Registry error answers: the HTTP status plus the distribution spec's
//! `{"errors":[{"code","message"}]}` body, kept as a typed error so callers
//! can tell "not found" from everything else.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::rate_limit::RateLimit;

/// A request the registry answered with an unexpected status.
#[derive(Debug)]
pub struct StatusError {
    /// The request's method.
    pub method: Method,
    /// The request's path.
    pub path: String,
    /// The status the registry answered.
    pub status: StatusCode,
    /// Error codes from the body, e.g. `MANIFEST_UNKNOWN`.
    pub codes: Vec<String>,
    /// A short, single-line description from the body.
    pub detail: String,
    /// The server's `Retry-After`, when it sent one in seconds.
    pub retry_after: Option<std::time::Duration>,
    /// The rate limit the answer stated (`RateLimit-*` headers), if any.
    pub rate_limit: Option<RateLimit>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The answers that mean "stored" to a PUT (the spec says 201; registries
/// also answer 200, 202 or 204).
pub const STORED: &[StatusCode] = &[
    StatusCode::CREATED,
    StatusCode::OK,
    StatusCode::ACCEPTED,
    StatusCode::NO_CONTENT,
];

/// What is read of an error response: enough for the registry's JSON error
/// list, never what a hostile server would like to send.
pub const MAX_ERROR_BODY: usize = 64 << 10;

impl StatusError {
    /// `response` when its status is one of `expected`; otherwise the
    /// registry's error, read from it. The one status check of every
    /// request whose answers are not told apart further.
    pub async fn expect(
        response: reqwest::Response,
        expected: &[StatusCode],
    ) -> anyhow::Result<reqwest::Response> {
        if expected.contains(&response.status()) {
            Ok(response)
        } else {
            Err(anyhow::Error::new(Self::from_response(response).await))
        }
    }

    /// Reads the rest of `response` to build the error (the request's
    /// method is the one `http::send_and_wait` recorded on it).
    pub async fn from_response(response: reqwest::Response) -> Self {
        let method = response
            .extensions()
            .get::<Method>()
            .cloned()
            .unwrap_or(Method::GET);
        let status = response.status();
        let path = response.url().path().to_owned();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let rate_limit = RateLimit::from_headers(response.headers());
        let body = super::http::read_prefix(response, MAX_ERROR_BODY).await;
        let mut error = Self::new(method, path, status, &body);
        error.retry_after = retry_after;
        error.rate_limit = rate_limit;
        error
    }

    /// An error for `status`, with the codes and message of `body` when it is the spec's JSON.
    pub fn new(method: Method, path: String, status: StatusCode, body: &[u8]) -> Self {
        let (codes, detail) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) if !parsed.errors.is_empty() => (
                parsed.errors.iter().map(|e| e.code.clone()).collect(),
                parsed
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => (Vec::new(), excerpt(body)),
        };
        StatusError {
            method,
            path,
            status,
            codes,
            detail,
            retry_after: None,
            rate_limit: None,
        }
    }

    /// Whether the registry said 404.
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.method, self.path, self.status)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", excerpt(self.detail.as_bytes()))?;
        }
        // A refusal for load names the limit and the wait asked for.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(limit) = &self.rate_limit {
                write!(f, "; {limit}")?;
            }
            if let Some(wait) = self.retry_after {
                write!(f, "; retry after {} s", wait.as_secs())?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for StatusError {}

/// Whether an error chain contains a registry 404.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<StatusError>()
            .is_some_and(StatusError::is_not_found)
    })
}

/// A short single-line rendering of a response body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > MAX {
        let mut cut = MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// An error with all its causes on one line, without the repeats reqwest's
/// chain carries (it hides the useful part, such as "invalid peer
/// certificate", deep in its source chain).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distribution_errors() {
        let e = StatusError::new(
            Method::HEAD,
            "/v2/x/manifests/y".into(),
            StatusCode::NOT_FOUND,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert!(e.is_not_found());
        assert_eq!(e.codes, ["MANIFEST_UNKNOWN"]);
        assert_eq!(
            e.to_string(),
            "HEAD /v2/x/manifests/y: 404 Not Found (MANIFEST_UNKNOWN: manifest unknown)"
        );
        assert!(is_not_found(&anyhow::Error::new(e).context("outer")));
    }

    #[test]
    fn plain_bodies_become_one_short_line() {
        let body = format!("line one\nline two {}", "x".repeat(500));
        let e = StatusError::new(
            Method::GET,
            "/v2/".into(),
            StatusCode::BAD_GATEWAY,
            body.as_bytes(),
        );
        let shown = e.to_string();
        assert!(!shown.contains('\n') && shown.len() < 300, "{shown}");
        assert!(e.codes.is_empty());
    }
}
