//! Google Artifact Registry and Container Registry with the worker's
//! service account (`source.google_workload_identity`): GKE workload
//! identity or a GCE instance's account, with no key file.
//!
//! 1. An OAuth access token of the worker's service account from the GCE
//!    metadata server (`GET /computeMetadata/v1/instance/service-accounts/
//!    default/token` with `Metadata-Flavor: Google`; the answer must carry
//!    that header back, as Google's own clients check);
//! 2. with `google_impersonate_service_account`, that token buys a token of
//!    another account from the IAM credentials API
//!    (`POST …/serviceAccounts/<email>:generateAccessToken`);
//! 3. the token is the password of the user `oauth2accesstoken` in the
//!    registry's normal token flow (Google's documented form).
//!
//! The token (a cloud-platform token, far more than a registry credential)
//! goes only to Google's registry hosts (`*-docker.pkg.dev`, `gcr.io`,
//! `*.gcr.io`) or to hosts the source names in `google_registry_hosts`:
//! nothing is asked of the metadata server for any other registry, the two
//! calls follow no redirect, and the registry client sends the token to a
//! token realm only on those hosts ([`host_guard`]).
//!
//! Two HTTP calls do not justify Google's SDK; they are written here. Tests
//! point them at stand-ins with `REGISTRY_IMAGE_GCE_METADATA_URL` (instead
//! of `http://metadata.google.internal`) and `REGISTRY_IMAGE_GOOGLE_IAM_URL`
//! (instead of `https://iamcredentials.googleapis.com`).

use anyhow::{Context, bail};
use serde::Deserialize;

use super::cloud_call::answer;
use super::{Credentials, HostGuard};
use crate::reference::Repository;
use crate::source::Source;

/// The user Google's registries take an access token with.
pub const TOKEN_USER: &str = "oauth2accesstoken";
const METADATA_URL_ENV: &str = "REGISTRY_IMAGE_GCE_METADATA_URL";
const IAM_URL_ENV: &str = "REGISTRY_IMAGE_GOOGLE_IAM_URL";
const METADATA_URL: &str = "http://metadata.google.internal";
const IAM_URL: &str = "https://iamcredentials.googleapis.com";
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Whether `host` (`name[:port]`) is a Google registry host:
/// `<location>-docker.pkg.dev`, `gcr.io` or `<region>.gcr.io`.
pub fn is_google_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return false,
        None => host.as_str(),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
    };
    if name == "gcr.io" {
        return true;
    }
    if let Some(region) = name.strip_suffix(".gcr.io") {
        return label(region);
    }
    name.strip_suffix("-docker.pkg.dev")
        .is_some_and(|location| label(location) && !location.ends_with('-'))
}

/// Where the service account's token may go, for the registry client's
/// token realm check.
pub fn host_guard(source: &Source) -> HostGuard {
    HostGuard {
        cloud: "Google",
        own_hosts: "*-docker.pkg.dev, gcr.io, *.gcr.io",
        field: Some("source.google_registry_hosts"),
        is_cloud_host: is_google_host,
        named: source.google_registry_hosts.clone(),
    }
}

/// Whether `email` can be a service account's address (it goes into a
/// URL path): `name@project.iam.gserviceaccount.com` and the like.
pub fn is_service_account(email: &str) -> bool {
    let Some((name, domain)) = email.split_once('@') else {
        return false;
    };
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    email.len() <= 254 && safe(name) && safe(domain) && domain.contains('.')
}

#[derive(Deserialize)]
struct MetadataToken {
    #[serde(default)]
    access_token: String,
}

#[derive(Deserialize)]
struct IamToken {
    #[serde(rename = "accessToken", default)]
    access_token: String,
}

/// Logs in to the Google registry `repository` is on: `oauth2accesstoken`
/// and the worker's (or the impersonated account's) access token.
pub async fn login(
    source: &Source,
    repository: &Repository,
    http: &reqwest::Client,
) -> anyhow::Result<Credentials> {
    host_guard(source).admit(repository.registry(), "the service account's token")?;
    let token = metadata_token(http).await?;
    let token = match source.google_impersonate_service_account.as_str() {
        "" => token,
        account => impersonate(http, &token, account).await?,
    };
    Credentials::from_parts(TOKEN_USER, &token).context("the service account's token is empty")
}

/// The worker's service account token from the metadata server.
async fn metadata_token(http: &reqwest::Client) -> anyhow::Result<String> {
    let base = std::env::var(METADATA_URL_ENV).unwrap_or_else(|_| METADATA_URL.to_owned());
    let url = reqwest::Url::parse(&format!(
        "{base}/computeMetadata/v1/instance/service-accounts/default/token"
    ))
    .with_context(|| format!("{METADATA_URL_ENV} {base:?}"))?;
    let answer = answer(
        http.get(url).header("Metadata-Flavor", "Google"),
        "asking the GCE metadata server for the service account's token",
        "the GCE metadata server answered",
    )
    .await?;
    // A server that does not say it is the metadata server is not trusted
    // with the answer (what Google's own clients check).
    let flavor = answer
        .headers
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok());
    if flavor != Some("Google") {
        bail!("the GCE metadata server's answer lacks Metadata-Flavor: Google; not using it");
    }
    let token: MetadataToken = serde_json::from_slice(&answer.body)
        .context("the GCE metadata server's answer is not a token")?;
    if token.access_token.is_empty() {
        bail!("the GCE metadata server gave no access token");
    }
    Ok(token.access_token)
}

/// A token of `account`, bought with `token` from the IAM credentials API.
async fn impersonate(http: &reqwest::Client, token: &str, account: &str) -> anyhow::Result<String> {
    let base = std::env::var(IAM_URL_ENV).unwrap_or_else(|_| IAM_URL.to_owned());
    let url = format!("{base}/v1/projects/-/serviceAccounts/{account}:generateAccessToken");
    let url = reqwest::Url::parse(&url).with_context(|| format!("{IAM_URL_ENV} {base:?}"))?;
    let request = http
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "scope": [CLOUD_PLATFORM_SCOPE] }).to_string());
    let answer = answer(
        request,
        &format!("asking the IAM credentials API for a token of {account}"),
        &format!("the IAM credentials API, asked for a token of {account}, answered"),
    )
    .await?;
    let token: IamToken = serde_json::from_slice(&answer.body)
        .context("the IAM credentials API's answer is not a token")?;
    if token.access_token.is_empty() {
        bail!("the IAM credentials API gave no access token for {account}");
    }
    Ok(token.access_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_hosts_and_their_look_alikes() {
        for host in [
            "gcr.io",
            "eu.gcr.io",
            "us.gcr.io:443",
            "europe-west1-docker.pkg.dev",
            "US-docker.pkg.dev",
        ] {
            assert!(is_google_host(host), "{host}");
        }
        for host in [
            "docker.pkg.dev",
            "-docker.pkg.dev",
            "x-docker.pkg.dev.evil.com",
            "evil.com/-docker.pkg.dev",
            "gcr.io.evil.com",
            "evilgcr.io",
            ".gcr.io",
            "a.b.gcr.io",
            "gcr.io:",
            "gcr.io:x",
            "eu.gcr.io:443:1",
        ] {
            assert!(!is_google_host(host), "{host}");
        }
    }

    #[test]
    fn service_accounts_are_safe_in_a_path() {
        assert!(is_service_account(
            "pusher@my-project.iam.gserviceaccount.com"
        ));
        for bad in [
            "",
            "no-at",
            "a@b",
            "a/b@c.d",
            "a@c.d/../x",
            "a@c.d?x=1",
            "a@@c.d",
            "a b@c.d",
        ] {
            assert!(!is_service_account(bad), "{bad}");
        }
    }
}
