//! The HTTP calls a cloud login makes (a metadata endpoint, a token
//! exchange or the IAM API), one way: within a time limit, no redirect
//! followed (the callers' client is built without them, and a 3xx is
//! refused here: the token goes nowhere else), the answer bounded, and a
//! refusal reported with an excerpt of what the endpoint said (an error
//! body holds no token).

use std::time::Duration;

use anyhow::{Context, bail};

/// Each call's time limit, as the original's for Azure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers larger than this are cut (they hold one token).
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// A successful answer: its headers and (bounded) body.
pub struct Answer {
    /// The answer's headers.
    pub headers: reqwest::header::HeaderMap,
    /// The answer's body, at most [`MAX_ANSWER_BYTES`].
    pub body: Vec<u8>,
}

/// Sends `request` and reads its answer; `sending` says what the call
/// does, `refused` starts the line of a non-2xx answer.
pub async fn answer(
    request: reqwest::RequestBuilder,
    sending: &str,
    refused: &str,
) -> anyhow::Result<Answer> {
    let response = timed(request.send()).await.context(sending.to_owned())?;
    let status = response.status();
    if status.is_redirection() {
        bail!(
            "{refused} {} (a redirect): not followed, the token goes nowhere else",
            status.as_u16()
        );
    }
    let headers = response.headers().clone();
    let body = crate::registry::http::read_prefix(response, MAX_ANSWER_BYTES).await;
    if !status.is_success() {
        bail!(
            "{refused} {}: {}",
            status.as_u16(),
            crate::registry::error::excerpt(&body)
        );
    }
    Ok(Answer { headers, body })
}

/// `request` within [`CALL_TIMEOUT`].
pub async fn timed(
    request: impl Future<Output = reqwest::Result<reqwest::Response>>,
) -> anyhow::Result<reqwest::Response> {
    Ok(tokio::time::timeout(CALL_TIMEOUT, request)
        .await
        .context("no answer within 30 s")??)
}
