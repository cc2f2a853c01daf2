//! AWS ECR (enabled by `source.aws_region`): AWS credentials (the source's
//! static keys with an optional session token, else the SDK's default
//! chain), the `aws_role_arn`/`aws_role_arns` roles assumed in order, then
//! ECR `GetAuthorizationToken`, whose `AWS:<password>` token becomes basic
//! credentials for the registry client. The repository is qualified with the
//! ECR registry host unless it names a registry already.

use anyhow::{Context, anyhow};
use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_ecr::config::{Region, SharedCredentialsProvider};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::{Credentials, decode_basic};
use crate::reference::Repository;
use crate::source::Source;

const SESSION_NAME: &str = "concourse-registry-image";

/// What logging in to ECR gives a step.
pub struct EcrLogin {
    /// The repository, qualified with the account's registry when the source named none.
    pub repository: Repository,
    /// Basic credentials from the ECR authorization token.
    pub credentials: Credentials,
    /// The registry host the token is for (ECR's `proxyEndpoint`, or the
    /// one `aws_account_id` names).
    pub registry: String,
    /// ECR's `proxyEndpoint` host, which the token is for in any case.
    proxy_endpoint: Option<String>,
}

impl EcrLogin {
    /// Whether the token may be sent to `registry` (a host, maybe with a
    /// port): only the registry ECR named, or another ECR registry
    /// (`<account>.dkr.ecr.<region>.amazonaws.com[.cn]`), never a registry
    /// the repository merely happens to name (`ghcr.io/...`).
    pub fn serves(&self, registry: &str) -> bool {
        registry.eq_ignore_ascii_case(&self.registry)
            || self
                .proxy_endpoint
                .as_deref()
                .is_some_and(|p| registry.eq_ignore_ascii_case(p))
            || is_ecr_host(registry)
    }
}

/// `<account>.dkr.ecr.<region>.amazonaws.com` or `.amazonaws.com.cn`.
pub fn is_ecr_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let Some(rest) = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    matches!(parts.as_slice(), [account, "dkr", "ecr", region]
        if !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit())
            && !region.is_empty() && region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Logs in to ECR with the source's AWS settings (static keys, session token, role chain).
pub async fn login(source: &Source, repository: &Repository) -> anyhow::Result<EcrLogin> {
    let region = source.aws_region.clone();
    let (config, provider) = aws_credentials(source, &region).await?;
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&config)
            .credentials_provider(provider)
            .build(),
    );
    let answer = ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| anyhow!("failed to authenticate to ECR: {}", concise(e)))?;
    let data = answer
        .authorization_data()
        .first()
        .context("ECR returned no authorization data")?;
    let credentials = decode_token(data.authorization_token().unwrap_or_default())?;
    let proxy_endpoint = data.proxy_endpoint().map(|endpoint| {
        endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    });
    let host = match source.aws_account_id.as_str() {
        "" => proxy_endpoint
            .clone()
            .context("ECR returned no registry endpoint")?,
        account => registry_host(account, &region),
    };
    Ok(EcrLogin {
        repository: qualify(source, repository, &host)?,
        credentials,
        registry: host,
        proxy_endpoint,
    })
}

/// The SDK's configuration for `region` and the credentials to sign with:
/// the source's static keys (with its session token) or the SDK's default
/// chain, then each of the source's roles assumed in turn. Shared by the
/// ECR and ECR Public logins.
pub(super) async fn aws_credentials(
    source: &Source,
    region: &str,
) -> anyhow::Result<(aws_config::SdkConfig, SharedCredentialsProvider)> {
    let region = region.to_owned();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .http_client(http);
    let secret = source.aws_secret_access_key.expose();
    if !source.aws_access_key_id.is_empty() && !secret.is_empty() {
        let session = Some(source.aws_session_token.expose())
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        loader = loader.credentials_provider(aws_sdk_ecr::config::Credentials::new(
            &source.aws_access_key_id,
            secret,
            session,
            None,
            "concourse-source",
        ));
    }
    let config = loader.load().await;
    let mut provider = config.credentials_provider().context(
        "no AWS credentials: set aws_access_key_id and aws_secret_access_key, \
         or give the worker credentials of its own",
    )?;
    let roles: Vec<&String> = if source.aws_role_arn.is_empty() {
        source.aws_role_arns.iter().collect()
    } else {
        vec![&source.aws_role_arn]
    };
    for arn in roles {
        let assumed = AssumeRoleProvider::builder(arn.as_str())
            .configure(&config)
            .session_name(SESSION_NAME)
            .build_from_provider(provider.clone())
            .await;
        // Assumed now, once: a refused role is reported as such, and the
        // next hop signs with these keys without assuming this role again.
        use aws_credential_types::provider::ProvideCredentials as _;
        let credentials = assumed
            .provide_credentials()
            .await
            .map_err(|e| anyhow!("error assuming role '{arn}': {}", concise(e)))?;
        provider = SharedCredentialsProvider::new(credentials);
    }
    Ok((config, provider))
}

/// An SDK error's causes on one line, without the raw responses its Debug
/// form carries.
pub(super) fn concise(error: impl std::error::Error + Send + Sync + 'static) -> String {
    crate::registry::error::one_line(&anyhow::Error::new(error))
}

/// `<account>.dkr.ecr.<region>.<partition domain>`.
pub fn registry_host(account: &str, region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("{account}.dkr.ecr.{region}.{domain}")
}

/// The repository on the ECR registry, unless the configured one already
/// names a registry (the original prefixed it a second time).
fn qualify(source: &Source, repository: &Repository, host: &str) -> anyhow::Result<Repository> {
    if !repository.is_docker_hub() {
        return Ok(repository.clone());
    }
    Repository::parse(&format!(
        "{host}/{}",
        source.repository.trim_start_matches('/')
    ))
    .context("the ECR repository")
}

/// base64 `AWS:<password>` → basic credentials.
fn decode_token(token: &str) -> anyhow::Result<Credentials> {
    let (user, password) = decode_basic(token, "the ECR authorization token")?;
    Credentials::from_parts(&user, password.trim()).context("the ECR authorization token is empty")
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    #[test]
    fn hosts_per_partition() {
        assert_eq!(
            registry_host("123456789012", "us-east-1"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            registry_host("123456789012", "cn-north-1"),
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn tokens() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:secret-pw");
        let c = decode_token(&token).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("AWS", "secret-pw")
        );
        assert!(decode_token("!!").is_err());
        let bad = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(decode_token(&bad).is_err());
    }

    #[test]
    fn repositories_are_qualified_once() {
        let source: Source = serde_json::from_str(r#"{"repository":"team/app"}"#).unwrap();
        let repo = source.repository().unwrap();
        let q = qualify(&source, &repo, "1.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(q.to_string(), "1.dkr.ecr.eu-west-1.amazonaws.com/team/app");
        let single: Source = serde_json::from_str(r#"{"repository":"app"}"#).unwrap();
        let q = qualify(&single, &single.repository().unwrap(), "h.example.com").unwrap();
        assert_eq!(q.path(), "app", "no library/ on ECR");
        let full: Source =
            serde_json::from_str(r#"{"repository":"1.dkr.ecr.eu-west-1.amazonaws.com/team/app"}"#)
                .unwrap();
        let q = qualify(
            &full,
            &full.repository().unwrap(),
            "1.dkr.ecr.eu-west-1.amazonaws.com",
        )
        .unwrap();
        assert_eq!(q.to_string(), "1.dkr.ecr.eu-west-1.amazonaws.com/team/app");
    }

    #[test]
    fn ecr_hosts() {
        assert!(is_ecr_host("123456789012.dkr.ecr.us-east-1.amazonaws.com"));
        assert!(is_ecr_host(
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        ));
        assert!(!is_ecr_host("ghcr.io"));
        assert!(!is_ecr_host("evil.com/.dkr.ecr.x.amazonaws.com"));
        assert!(!is_ecr_host("1.dkr.ecr.us-east-1.amazonaws.com.evil.com"));
        assert!(!is_ecr_host("x.1.dkr.ecr.us-east-1.amazonaws.com"));
        assert!(!is_ecr_host("123.dkr.ecr.us-east-1.amazonaws.com:5000"));
    }
}
