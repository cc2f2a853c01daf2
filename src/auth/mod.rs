//! Credentials and the registry authentication handshake: what a registry
//! asks for (`WWW-Authenticate` challenges) and how a bearer token is fetched.
//!
//! Secrets live only in [`Credentials`], whose `Debug` output is redacted, so
//! that no log line or error chain can print them by accident.

pub mod acr;
pub mod challenge;
pub mod cloud_call;
pub mod docker_config;
pub mod ecr;
pub mod ecr_public;
pub mod google;
pub mod token;

use std::fmt;

pub use challenge::Challenge;

/// Where a cloud's credentials may be sent: the cloud's own registry hosts,
/// or hosts the source names explicitly. A registry client holding such
/// credentials sends them to a token realm only on an allowed host.
#[derive(Clone, Debug)]
pub struct HostGuard {
    /// The cloud, for messages.
    pub cloud: &'static str,
    /// The cloud's own hosts, for messages.
    pub own_hosts: &'static str,
    /// The source field that names other hosts, if the cloud has one.
    pub field: Option<&'static str>,
    /// Whether a `host[:port]` is one of the cloud's registry hosts.
    pub is_cloud_host: fn(&str) -> bool,
    /// Hosts (`host[:port]`, as written) the source names.
    pub named: Vec<String>,
}

impl HostGuard {
    /// Whether the credentials may go to `host` (`host[:port]`).
    pub fn allows(&self, host: &str) -> bool {
        (self.is_cloud_host)(host) || self.named.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    /// Before a login asks anything of the cloud: `Ok` when its
    /// credentials (`what`, for the message) may go to `registry`, else the
    /// one line saying nothing was sent, and why.
    pub fn admit(&self, registry: &str, what: &str) -> anyhow::Result<()> {
        if self.allows(registry) {
            return Ok(());
        }
        let other_hosts = match self.field {
            Some(field) => {
                format!("; for another host (a registry's custom domain), name it in {field}")
            }
            None => String::new(),
        };
        anyhow::bail!(
            "nothing was sent: {registry} is not one of {}'s registry hosts ({}), so {what} does \
             not go there{other_hosts}",
            self.cloud,
            self.own_hosts,
        )
    }
}

/// A username and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token; never shown by `Debug`.
    pub password: String,
}

impl Credentials {
    /// Credentials are used only when both parts are non-empty, as the
    /// original resource does; otherwise access is anonymous.
    pub fn from_parts(username: &str, password: &str) -> Option<Self> {
        (!username.is_empty() && !password.is_empty()).then(|| Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// base64 `user:password` (a docker config `auth` entry, an ECR token),
/// decoded; `what` names it in errors. The errors never include the bytes:
/// they are a secret.
pub fn decode_basic(encoded: &str, what: &str) -> anyhow::Result<(String, String)> {
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| anyhow::anyhow!("{what} is not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| anyhow::anyhow!("{what} is not text"))?;
    match text.split_once(':') {
        Some((user, password)) => Ok((user.to_owned(), password.to_owned())),
        None => anyhow::bail!("{what} is not `user:password`"),
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The access a step needs on a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading (`pull`).
    Pull,
    /// Reading and writing (`pull,push`).
    Push,
    /// Deleting manifests (and reading them, to know what is deleted).
    Delete,
}

/// A token scope: `repository:<path>:pull` or `repository:<path>:pull,push`.
pub fn repository_scope(path: &str, access: Access) -> String {
    match access {
        Access::Pull => format!("repository:{path}:pull"),
        Access::Push => format!("repository:{path}:pull,push"),
        Access::Delete => format!("repository:{path}:pull,delete"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let c = Credentials::from_parts("user", "hunter2-secret").unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("user") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn both_parts_are_needed() {
        assert!(Credentials::from_parts("u", "").is_none());
        assert!(Credentials::from_parts("", "p").is_none());
    }

    #[test]
    fn scopes() {
        assert_eq!(
            repository_scope("library/alpine", Access::Pull),
            "repository:library/alpine:pull"
        );
        assert_eq!(
            repository_scope("a/b", Access::Push),
            "repository:a/b:pull,push"
        );
        assert_eq!(
            repository_scope("a/b", Access::Delete),
            "repository:a/b:pull,delete"
        );
    }
}
