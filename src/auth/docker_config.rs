//! Credentials from the Docker CLI's `config.json`, for local use when the
//! source names none: `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`. Per registry, a `credHelpers` entry wins, then
//! an `auths` entry (`auth` = base64 `user:password`, or `username` and
//! `password`), then the `credsStore` helper. Helpers run as
//! `docker-credential-<name> get` with the server on stdin.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{Credentials, decode_basic};

/// The key Docker uses for Docker Hub in `auths` and with helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: String,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

fn config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".docker/config.json")),
    }
}

/// Credentials for `registry` (as in references, `index.docker.io` for
/// Docker Hub), or `None` when the config has none.
pub async fn lookup(registry: &str) -> anyhow::Result<Option<Credentials>> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: ConfigFile =
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
    let docker_hub = registry == "index.docker.io";
    let server = if docker_hub { DOCKER_HUB_KEY } else { registry };
    if let Some(helper) = config
        .cred_helpers
        .iter()
        .find(|(key, _)| key_matches(key, registry, docker_hub))
        .map(|(_, helper)| helper)
    {
        return run_helper(helper, server).await;
    }
    if let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| key_matches(key, registry, docker_hub))
        .map(|(_, entry)| entry)
        && let Some(credentials) = from_entry(entry)?
    {
        return Ok(Some(credentials));
    }
    if !config.creds_store.is_empty() {
        return run_helper(&config.creds_store, server).await;
    }
    Ok(None)
}

/// Whether an `auths`/`credHelpers` key names `registry`: keys may carry a
/// scheme and a path (`https://index.docker.io/v1/`).
fn key_matches(key: &str, registry: &str, docker_hub: bool) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    if docker_hub {
        matches!(
            host,
            "index.docker.io" | "docker.io" | "registry-1.docker.io"
        )
    } else {
        host == registry
    }
}

fn from_entry(entry: &AuthEntry) -> anyhow::Result<Option<Credentials>> {
    if !entry.auth.is_empty() {
        let (username, password) =
            decode_basic(&entry.auth, "an `auth` entry of the docker config")?;
        return Ok(Credentials::from_parts(&username, &password));
    }
    Ok(Credentials::from_parts(&entry.username, &entry.password))
}

/// `docker-credential-<helper> get`; `None` when it has nothing for the
/// server. Its output is never shown (it holds the secret).
async fn run_helper(helper: &str, server: &str) -> anyhow::Result<Option<Credentials>> {
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("invalid credential helper name {helper:?} in the docker config");
    }
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {program} (named by the docker config)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).await?;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{program} did not answer within 30 s"))??;
    if !output.status.success() {
        // "credentials not found" is the helpers' usual way to say so.
        tracing::debug!("{program} has no credentials for {server}");
        return Ok(None);
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|_| anyhow::anyhow!("{program} answered something other than its JSON"))?;
    if answer.username == "<token>" {
        tracing::debug!("{program} gave an identity token for {server}; not supported, ignored");
        return Ok(None);
    }
    Ok(Credentials::from_parts(&answer.username, &answer.secret))
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    #[test]
    fn keys_match_registries() {
        assert!(key_matches(DOCKER_HUB_KEY, "index.docker.io", true));
        assert!(key_matches("docker.io", "index.docker.io", true));
        assert!(key_matches("https://ghcr.io", "ghcr.io", false));
        assert!(key_matches("localhost:5000", "localhost:5000", false));
        assert!(!key_matches("localhost:5001", "localhost:5000", false));
        assert!(!key_matches("ghcr.io", "index.docker.io", true));
    }

    #[test]
    fn auth_entries() {
        let entry = AuthEntry {
            auth: base64::engine::general_purpose::STANDARD.encode("user:pa:ss"),
            ..Default::default()
        };
        let c = from_entry(&entry).unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        let entry = AuthEntry {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert_eq!(from_entry(&entry).unwrap().unwrap().username, "u");
        assert!(from_entry(&AuthEntry::default()).unwrap().is_none());
    }
}
