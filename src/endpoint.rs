//! Where a step's registry requests go, decided once from `source`: the
//! repository (rewritten to the ECR registry when `aws_region` is set), its
//! credentials (source, else ECR's token, else the docker config), and, for
//! Docker Hub repositories read by `check` and `in`, the `registry_mirror`
//! to try first.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::{Access, Credentials, acr, docker_config, ecr, ecr_public, google};
use crate::reference::Repository;
use crate::registry::chunking::{Chunking, DEFAULT_CHUNK_BYTES, ECR_MIN_CHUNK_BYTES};
use crate::registry::retry::RetryPolicy;
use crate::registry::session_cache::SessionCache;
use crate::registry::trust::parse_ca_certs;
use crate::registry::{ClientOptions, RegistryClient};
use crate::source::Source;

/// The origin registry and, maybe, a mirror.
pub struct Endpoint {
    /// The repository requests go to.
    pub repository: Repository,
    /// How the repository is named in metadata and files: as configured,
    /// or as ECR qualified it.
    pub name: String,
    /// The client for the repository's registry.
    pub client: Arc<RegistryClient>,
    /// A pull-through mirror tried first (Docker Hub repositories only).
    pub mirror: Option<Mirror>,
}

/// A Docker Hub mirror: tried first, left at the first failure.
pub struct Mirror {
    /// The same repository path on the mirror.
    pub repository: Repository,
    /// The client for the mirror.
    pub client: Arc<RegistryClient>,
}

/// The mirror gets a short retry budget: the origin is the fallback, and a
/// failing mirror must not hold a step for minutes.
fn mirror_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(2),
        budget: Duration::from_secs(10),
    }
}

impl Endpoint {
    /// Authenticates what needs it up front (ECR) and builds the clients.
    /// `source` must have been validated.
    pub async fn connect(source: &Source, access: Access) -> anyhow::Result<Endpoint> {
        Self::connect_with(source, access, None).await
    }

    /// [`connect`](Self::connect) for `check`: sessions and tokens are
    /// kept between runs in the container's temporary directory
    /// (`registry/session_cache.rs`), since Concourse runs `check` again
    /// and again in one container.
    pub async fn connect_for_check(source: &Source) -> anyhow::Result<Endpoint> {
        let cache = SessionCache::from_env().map(Arc::new);
        Self::connect_with(source, Access::Pull, cache).await
    }

    async fn connect_with(
        source: &Source,
        access: Access,
        session_cache: Option<Arc<SessionCache>>,
    ) -> anyhow::Result<Endpoint> {
        let mut repository = source.repository()?;
        let mut name = source.repository.clone();
        let mut credentials = source.credentials();
        if !source.aws_ecr_registry_id.is_empty() {
            tracing::warn!("aws_ecr_registry_id is no longer required and is ignored");
        }
        let mut credential_hosts = None;
        if !source.aws_region.is_empty() && ecr_public::is_ecr_public_host(repository.registry()) {
            let login = ecr_public::login(source, repository.registry())
                .await
                .context("cannot authenticate with ECR Public")?;
            credentials = Some(login);
            credential_hosts = Some(ecr_public::host_guard());
        } else if !source.aws_region.is_empty() {
            let login = ecr::login(source, &repository)
                .await
                .context("cannot authenticate with ECR")?;
            if login.repository != repository {
                name = login.repository.to_string();
                repository = login.repository.clone();
            }
            if login.serves(repository.registry()) {
                credentials = Some(login.credentials);
            } else {
                tracing::info!(
                    "not sending the ECR token to {}: it is for {}",
                    repository.registry(),
                    login.registry
                );
            }
        }
        let ca_certs = parse_ca_certs(&source.ca_certs).context("source.ca_certs")?;
        if source.azure_acr {
            let http = crate::registry::http::build_client_without_redirects(ca_certs.clone())?;
            let login = acr::login(source, &repository, &http)
                .await
                .context("cannot authenticate with ACR")?;
            credentials = Some(login);
            credential_hosts = Some(acr::host_guard(source));
        }
        if source.google_workload_identity {
            let http = crate::registry::http::build_client_without_redirects(ca_certs.clone())?;
            let login = google::login(source, &repository, &http)
                .await
                .context("cannot authenticate with Google")?;
            credentials = Some(login);
            credential_hosts = Some(google::host_guard(source));
        }
        if credentials.is_none() {
            credentials = docker_credentials(repository.registry()).await;
        }
        if credentials.is_none()
            && access != Access::Pull
            && ecr_public::is_ecr_public_host(repository.registry())
        {
            tracing::warn!(
                "ECR Public takes pushes only with its authorization token: set aws_region and \
                 AWS credentials (the token is asked in {})",
                ecr_public::API_REGION
            );
        }
        let chunk_knob = std::env::var(CHUNK_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok());
        let options = |host: &str, credentials, credential_hosts| ClientOptions {
            credentials,
            insecure: source.insecure,
            ca_certs: ca_certs.clone(),
            access,
            credential_hosts,
            chunking: chunking(host, chunk_knob),
            session_cache: session_cache.clone(),
        };
        let client = RegistryClient::new(
            repository.api_host(),
            options(repository.api_host(), credentials, credential_hosts),
        )?;
        let mirror = match &source.registry_mirror {
            Some(mirror) if access == Access::Pull && repository.is_docker_hub() => {
                let mirror_repository = repository
                    .on_registry(&mirror.host)
                    .context("source.registry_mirror.host")?;
                let credentials =
                    Credentials::from_parts(&mirror.username, mirror.password.expose());
                let client = RegistryClient::new(
                    mirror_repository.api_host(),
                    options(mirror_repository.api_host(), credentials, None),
                )?
                .with_retry(mirror_retry());
                Some(Mirror {
                    repository: mirror_repository,
                    client: Arc::new(client),
                })
            }
            _ => None,
        };
        Ok(Endpoint {
            repository,
            name,
            client: Arc::new(client),
            mirror,
        })
    }
}

/// Tests and benchmarks set the chunk size of uploads with this variable.
const CHUNK_ENV: &str = "REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES";

/// How uploads to `host` are cut: `knob` bytes per chunk (else the
/// default), never less than ECR's smallest part on an ECR registry.
fn chunking(host: &str, knob: Option<usize>) -> Chunking {
    Chunking {
        bytes: knob.unwrap_or(DEFAULT_CHUNK_BYTES),
        min_bytes: if ecr::is_ecr_host(host) || ecr_public::is_ecr_public_host(host) {
            ECR_MIN_CHUNK_BYTES
        } else {
            0
        },
    }
}

impl Endpoint {
    /// `attempt` on the mirror when there is one, then on the origin if the
    /// mirror failed or `usable` turns its answer down. `what` says what
    /// is attempted, for the log.
    pub async fn mirror_first<T, Fut>(
        &self,
        what: &str,
        usable: impl Fn(&T) -> bool,
        attempt: impl Fn(Arc<RegistryClient>, Repository) -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: Future<Output = anyhow::Result<T>>,
    {
        if let Some(mirror) = &self.mirror {
            match attempt(mirror.client.clone(), mirror.repository.clone()).await {
                Ok(answer) if usable(&answer) => return Ok(answer),
                Ok(_) => tracing::info!(
                    "{what} mirror {}: nothing there; using the origin",
                    mirror.repository
                ),
                Err(e) => tracing::warn!(
                    "{what} mirror {} failed: {e:#}; using the origin",
                    mirror.repository
                ),
            }
        }
        attempt(self.client.clone(), self.repository.clone()).await
    }
}

/// The docker config's credentials; a broken config is reported and skipped
/// (it is a convenience for local use, never required).
async fn docker_credentials(registry: &str) -> Option<Credentials> {
    match docker_config::lookup(registry).await {
        Ok(found) => {
            if found.is_some() {
                tracing::debug!("using credentials for {registry} from the docker config");
            }
            found
        }
        Err(e) => {
            tracing::warn!("ignoring the docker config: {e:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_registries_get_chunks_of_at_least_five_mib() {
        let ecr = chunking(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            Some(64 << 10),
        );
        assert_eq!(ecr.min_bytes, ECR_MIN_CHUNK_BYTES);
        let other = chunking("127.0.0.1:5000", Some(64 << 10));
        assert_eq!((other.bytes, other.min_bytes), (64 << 10, 0));
        assert_eq!(chunking("127.0.0.1:5000", None).bytes, DEFAULT_CHUNK_BYTES);
    }
}
