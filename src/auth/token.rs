//! The bearer-token flow of the distribution spec: `GET <realm>?service=…&scope=…`
//! with Basic credentials when we have them, answered by `{"token": …}` or
//! `{"access_token": …}`.

use anyhow::{Context, bail};
use serde::Deserialize;
use url::Url;

use super::Credentials;

/// A token response is a small JSON object; real tokens are a few KiB.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Seconds; any JSON number is accepted and only a whole one used.
    #[serde(default)]
    expires_in: Option<serde_json::Number>,
}

/// A bearer token and how long the service says it lasts.
pub struct Token {
    /// The token.
    pub value: String,
    /// `expires_in`, when the service gave a usable one.
    pub lifetime: Option<std::time::Duration>,
}

/// Asks the token service at `realm` for a token covering `scopes`.
pub async fn fetch(
    http: &reqwest::Client,
    realm: &Url,
    service: Option<&str>,
    scopes: &[String],
    credentials: Option<&Credentials>,
) -> anyhow::Result<Token> {
    let mut url = realm.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        for scope in scopes {
            query.append_pair("scope", scope);
        }
    }
    let mut request = http.get(url.clone());
    if let Some(c) = credentials {
        request = request.basic_auth(&c.username, Some(&c.password));
    }
    let shown = without_query(&url);
    let response = crate::registry::http::send_and_wait(request)
        .await
        .with_context(|| format!("token request to {shown} failed"))?;
    let status = response.status();
    if crate::registry::retry::is_retryable_status(status) {
        // A busy or failing token service: typed, so the retry policy
        // tries again as it does for the registry's own answers.
        let error = crate::registry::error::StatusError::from_response(response).await;
        return Err(anyhow::anyhow!(error).context(format!("token request to {shown} failed")));
    }
    let body = if status.is_success() {
        crate::registry::http::read_limited(response, MAX_TOKEN_RESPONSE)
            .await
            .with_context(|| format!("reading the token from {shown}"))?
    } else {
        crate::registry::http::read_prefix(response, crate::registry::error::MAX_ERROR_BODY).await
    };
    if !status.is_success() {
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED && credentials.is_some() {
            " (check username and password)"
        } else if status == reqwest::StatusCode::UNAUTHORIZED {
            " (the registry requires credentials: set username and password)"
        } else {
            ""
        };
        bail!(
            "token request to {shown} failed with {status}{hint}: {}",
            crate::registry::error::excerpt(&body)
        );
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .with_context(|| format!("token service {shown} answered with invalid JSON"))?;
    let lifetime = parsed
        .expires_in
        .and_then(|n| n.as_u64())
        .map(std::time::Duration::from_secs);
    match parsed.token.or(parsed.access_token) {
        Some(value) if !value.is_empty() => Ok(Token { value, lifetime }),
        _ => bail!("token service {shown} answered without a token"),
    }
}

/// A URL for messages: the query may carry scopes we asked for but never
/// secrets; we drop it anyway to keep lines short.
fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}
