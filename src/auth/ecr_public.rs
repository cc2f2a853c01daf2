//! Amazon ECR Public (`public.ecr.aws/<alias>/<repository>`), asked of the
//! original as upstream PR #379.
//!
//! Pulls need nothing: the registry's own token endpoint hands out
//! anonymous tokens through the ordinary bearer flow. Pushes (and
//! authenticated pulls, which have a larger allowance) need an ECR Public
//! authorization token: with `aws_region` set, the source's AWS credentials
//! (the same chain as ECR: static keys, session token, roles) ask the
//! `ecr-public` API for one. That API lives only in `us-east-1`, whatever
//! region the source names. The token is basic credentials (`AWS:<password>`)
//! for `public.ecr.aws` and goes nowhere else.

use anyhow::{Context, anyhow};

use super::{Credentials, HostGuard, decode_basic, ecr};
use crate::source::Source;

/// ECR Public's one registry host.
pub const HOST: &str = "public.ecr.aws";

/// The region of the `ecr-public` API.
pub const API_REGION: &str = "us-east-1";

/// Whether `host` (`host[:port]`) is ECR Public's registry.
pub fn is_ecr_public_host(host: &str) -> bool {
    host.eq_ignore_ascii_case(HOST)
}

/// Where the ECR Public token may go: `public.ecr.aws` only.
pub fn host_guard() -> HostGuard {
    HostGuard {
        cloud: "ECR Public",
        own_hosts: HOST,
        field: None,
        is_cloud_host: is_ecr_public_host,
        named: Vec::new(),
    }
}

/// Logs in to ECR Public with the source's AWS settings; `registry` is the
/// repository's registry, checked before anything is asked of AWS.
pub async fn login(source: &Source, registry: &str) -> anyhow::Result<Credentials> {
    host_guard().admit(registry, "the ECR Public token")?;
    if source.aws_region != API_REGION {
        tracing::debug!(
            "ECR Public's API is in {API_REGION}: asking there, not in {}",
            source.aws_region
        );
    }
    let (config, provider) = ecr::aws_credentials(source, API_REGION).await?;
    let client = aws_sdk_ecrpublic::Client::from_conf(
        aws_sdk_ecrpublic::config::Builder::from(&config)
            .credentials_provider(provider)
            .build(),
    );
    let answer = client
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| anyhow!("failed to authenticate to ECR Public: {}", ecr::concise(e)))?;
    let token = answer
        .authorization_data()
        .and_then(|data| data.authorization_token())
        .context("ECR Public returned no authorization token")?;
    let (user, password) = decode_basic(token, "the ECR Public authorization token")?;
    Credentials::from_parts(&user, password.trim())
        .context("the ECR Public authorization token is empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_ecr_aws_is_ecr_public() {
        assert!(is_ecr_public_host("public.ecr.aws"));
        assert!(is_ecr_public_host("PUBLIC.ECR.AWS"));
        for other in [
            "public.ecr.aws:443",
            "public.ecr.aws.evil.com",
            "evil.com",
            "1.dkr.ecr.us-east-1.amazonaws.com",
            "ecr.aws",
        ] {
            assert!(!is_ecr_public_host(other), "{other}");
        }
        let refused = host_guard()
            .admit("ghcr.io", "the ECR Public token")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("nothing was sent"), "{refused}");
    }
}
