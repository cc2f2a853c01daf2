//! Azure Container Registry with a managed identity (`source.azure_acr`), as
//! the original resource does it:
//!
//! 1. an Azure AD access token from the instance metadata service (IMDS)
//!    for the cloud's management resource, of the user-assigned identity
//!    `azure_client_id` names, else the system-assigned one;
//! 2. the tenant: `azure_tenant_id`, else the `tenant=` of the registry's
//!    anonymous `/v2/` challenge, else `common`;
//! 3. `POST /oauth2/exchange` on the registry turns the AD token into a
//!    refresh token;
//! 4. the refresh token is the password of the user
//!    `00000000-0000-0000-0000-000000000000` in the registry's normal token
//!    flow.
//!
//! The AD token (a management-plane token, far more powerful than a
//! registry credential) and the refresh token go only to ACR's own hosts
//! (`*.azurecr.io`, `*.azurecr.us`, `*.azurecr.cn`) or to hosts the source
//! names in `azure_acr_hosts` (a custom domain): nothing is asked of the
//! identity endpoint for any other registry, the calls follow no redirect,
//! and the registry client sends the refresh token to a token realm only on
//! those hosts ([`host_guard`]).
//!
//! Two HTTP calls do not justify the Azure SDK (~180 crates, `crates.md`);
//! they are written here. Tests point them at stand-ins with
//! `REGISTRY_IMAGE_AZURE_IMDS_URL` (instead of `http://169.254.169.254`) and
//! `REGISTRY_IMAGE_AZURE_EXCHANGE_URL` (instead of the registry's
//! `/oauth2/exchange`).

use anyhow::{Context, bail};
use serde::Deserialize;

use super::cloud_call::{answer, timed};
use super::{Credentials, HostGuard};
use crate::reference::Repository;
use crate::source::Source;

/// The registry host suffixes of ACR in each cloud.
const ACR_SUFFIXES: [&str; 3] = [".azurecr.io", ".azurecr.us", ".azurecr.cn"];

/// Whether `host` (`name[:port]`) is an ACR registry host: a DNS name
/// ending in one of ACR's suffixes, with at least one label before it.
pub fn is_acr_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return false,
        None => host.as_str(),
    };
    ACR_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|labels| {
            !labels.is_empty()
                && labels.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        })
    })
}

/// Where the managed identity's tokens may go, for the registry client's
/// token realm check.
pub fn host_guard(source: &Source) -> HostGuard {
    HostGuard {
        cloud: "Azure",
        own_hosts: "*.azurecr.io, *.azurecr.us, *.azurecr.cn",
        field: Some("source.azure_acr_hosts"),
        is_cloud_host: is_acr_host,
        named: source.azure_acr_hosts.clone(),
    }
}

/// The user ACR's refresh tokens go with.
pub const REFRESH_TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";
const IMDS_URL_ENV: &str = "REGISTRY_IMAGE_AZURE_IMDS_URL";
const EXCHANGE_URL_ENV: &str = "REGISTRY_IMAGE_AZURE_EXCHANGE_URL";
const IMDS_URL: &str = "http://169.254.169.254";

/// An Azure cloud: which management resource its tokens are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    /// Azure (public).
    Public,
    /// Azure US Government.
    Government,
    /// Azure China.
    China,
}

impl Cloud {
    /// `azure_environment` when it names a cloud, else the registry host's
    /// suffix (`.azurecr.us`, `.azurecr.cn`), else public.
    pub fn of(environment: &str, registry: &str) -> Cloud {
        match environment {
            "AzurePublic" => return Cloud::Public,
            "AzureGovernment" => return Cloud::Government,
            "AzureChina" => return Cloud::China,
            "" => {}
            other => tracing::warn!(
                "azure_environment {other:?} is not AzurePublic, AzureGovernment or AzureChina: \
                 telling the cloud by the registry's name"
            ),
        }
        let host = registry.to_ascii_lowercase();
        let host = host.split(':').next().unwrap_or_default();
        if host.ends_with(".azurecr.us") {
            Cloud::Government
        } else if host.ends_with(".azurecr.cn") {
            Cloud::China
        } else {
            Cloud::Public
        }
    }

    /// The resource the managed-identity token is asked for.
    pub fn resource(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com/",
            Cloud::Government => "https://management.usgovcloudapi.net/",
            Cloud::China => "https://management.chinacloudapi.cn/",
        }
    }
}

#[derive(Deserialize)]
struct AccessToken {
    #[serde(default)]
    access_token: String,
}

#[derive(Deserialize)]
struct RefreshToken {
    #[serde(default)]
    refresh_token: String,
}

/// Logs in to the ACR `repository` is on: the credentials for its token
/// flow.
pub async fn login(
    source: &Source,
    repository: &Repository,
    http: &reqwest::Client,
) -> anyhow::Result<Credentials> {
    let registry = repository.registry();
    host_guard(source).admit(registry, "the managed identity's token")?;
    let cloud = Cloud::of(&source.azure_environment, registry);
    let aad = managed_identity_token(http, cloud, &source.azure_client_id).await?;
    let scheme = if source.insecure { "http" } else { "https" };
    let tenant = if source.azure_tenant_id.is_empty() {
        discover_tenant(http, &format!("{scheme}://{}/v2/", repository.api_host())).await
    } else {
        source.azure_tenant_id.clone()
    };
    let exchange_url = std::env::var(EXCHANGE_URL_ENV)
        .unwrap_or_else(|_| format!("{scheme}://{}/oauth2/exchange", repository.api_host()));
    let form = [
        ("grant_type", "access_token"),
        ("service", registry),
        ("tenant", &tenant),
        ("access_token", &aad),
    ];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let request = http
        .post(&exchange_url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body);
    let body = answer(
        request,
        "ACR token exchange",
        "ACR token exchange returned status",
    )
    .await?
    .body;
    let answer: RefreshToken =
        serde_json::from_slice(&body).context("failed to decode ACR token exchange response")?;
    Credentials::from_parts(REFRESH_TOKEN_USER, &answer.refresh_token)
        .context("the ACR token exchange gave no refresh token")
}

/// An Azure AD access token for `cloud` from the instance metadata service.
async fn managed_identity_token(
    http: &reqwest::Client,
    cloud: Cloud,
    client_id: &str,
) -> anyhow::Result<String> {
    let base = std::env::var(IMDS_URL_ENV).unwrap_or_else(|_| IMDS_URL.to_owned());
    let mut url = reqwest::Url::parse(&format!("{base}/metadata/identity/oauth2/token"))
        .with_context(|| format!("{IMDS_URL_ENV} {base:?}"))?;
    url.query_pairs_mut()
        .append_pair("api-version", "2018-02-01")
        .append_pair("resource", cloud.resource());
    if !client_id.is_empty() {
        url.query_pairs_mut().append_pair("client_id", client_id);
    }
    let body = answer(
        http.get(url).header("Metadata", "true"),
        "asking the managed identity endpoint (IMDS) for a token",
        "the managed identity endpoint (IMDS) answered",
    )
    .await?
    .body;
    let token: AccessToken = serde_json::from_slice(&body)
        .context("the managed identity endpoint's answer is not a token")?;
    if token.access_token.is_empty() {
        bail!("the managed identity endpoint (IMDS) gave no access token");
    }
    Ok(token.access_token)
}

/// The `tenant=` of the registry's anonymous challenge, else `common`.
async fn discover_tenant(http: &reqwest::Client, v2: &str) -> String {
    let challenge = match timed(http.get(v2).send()).await {
        Ok(response) if response.status() == reqwest::StatusCode::UNAUTHORIZED => response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        _ => None,
    };
    challenge
        .as_deref()
        .and_then(tenant_of)
        .unwrap_or_else(|| "common".to_owned())
}

/// `tenant=<value>` of a Bearer challenge (the value ends at `"` or `&`).
fn tenant_of(challenge: &str) -> Option<String> {
    if !challenge.starts_with("Bearer ") {
        return None;
    }
    let start = challenge.find("tenant=")? + "tenant=".len();
    let value: String = challenge[start..]
        .trim_start_matches('"')
        .chars()
        .take_while(|c| *c != '"' && *c != '&' && *c != ',')
        .collect();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_by_name_then_by_suffix() {
        assert_eq!(Cloud::of("", "x.azurecr.io"), Cloud::Public);
        assert_eq!(Cloud::of("", "MyRegistry.AzureCR.US"), Cloud::Government);
        assert_eq!(Cloud::of("", "x.azurecr.cn:443"), Cloud::China);
        assert_eq!(
            Cloud::of("AzureChina", "x.azurecr.us"),
            Cloud::China,
            "explicit wins"
        );
        assert_eq!(
            Cloud::of("Mars", "x.azurecr.us"),
            Cloud::Government,
            "unknown: suffix"
        );
    }

    #[test]
    fn acr_hosts() {
        assert!(is_acr_host("myregistry.azurecr.io"));
        assert!(is_acr_host("MyRegistry.AzureCR.us:443"));
        assert!(is_acr_host("reg.westeurope.data.azurecr.cn"));
        assert!(!is_acr_host("azurecr.io"));
        assert!(!is_acr_host(".azurecr.io"));
        assert!(!is_acr_host("evil.com"));
        assert!(!is_acr_host("myregistry.azurecr.io.evil.com"));
        assert!(!is_acr_host("evil.com/.azurecr.io"));
        assert!(!is_acr_host("a..azurecr.io"));
        assert!(!is_acr_host("x.azurecr.io:evil"));
        let named = HostGuard {
            named: vec!["registry.contoso.com".into()],
            ..host_guard(&Source::default())
        };
        assert!(named.allows("registry.contoso.com"));
        assert!(named.allows("x.azurecr.io"));
        assert!(!named.allows("registry.contoso.com:5000"));
        assert!(!named.allows("other.contoso.com"));
    }

    #[test]
    fn tenants_from_challenges() {
        assert_eq!(
            tenant_of(r#"Bearer realm="https://x/oauth2/token",service="x",tenant="abc-123""#),
            Some("abc-123".into())
        );
        assert_eq!(
            tenant_of("Bearer realm=https://x/?foo=bar&tenant=abc-123&baz=qux"),
            Some("abc-123".into())
        );
        assert_eq!(tenant_of(r#"Bearer realm="https://x""#), None);
        assert_eq!(tenant_of(r#"Bearer tenant="""#), None);
        assert_eq!(tenant_of(r#"Basic realm="x",tenant="t""#), None);
    }
}
