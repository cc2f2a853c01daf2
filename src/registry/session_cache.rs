//! What `check` keeps between runs: a registry's session (the scheme and
//! the authentication challenge its `/v2/` ping answered) and bearer
//! tokens until shortly before they expire.
//!
//! Why: Concourse keeps a resource's check container and runs `check` in it
//! every minute, for thousands of resources. Without a cache every run pings
//! `/v2/`, fetches a token, then asks for the tag: three requests where one
//! answers the question.
//!
//! Where: one directory in the container's temporary directory
//! (`$TMPDIR/registry-image-<uid>`, or `REGISTRY_IMAGE_CACHE_DIR`; empty
//! turns the cache off). Nothing in it is trusted blindly:
//! - the directory must be ours, a real directory, and closed to others
//!   (mode `0700`), else the cache is not used at all;
//! - a file must be ours, regular, not a link, mode `0600`, small, valid
//!   JSON, and name the key it was stored under (a hash of everything the
//!   answer depends on, credentials included, so another password never
//!   finds a token); anything else is ignored and removed;
//! - what a session file says is checked again as a fresh ping's answer
//!   would be (its scheme against what the source allows, its token realm
//!   against the realm rules), so the file cannot send credentials where a
//!   ping could not;
//! - a refused token, or a cached session the registry no longer agrees
//!   with, is dropped and fetched afresh (see `client.rs`).

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use super::session::{AuthMode, Session};

/// Names the cache directory; an empty value turns the cache off.
pub const CACHE_DIR_ENV: &str = "REGISTRY_IMAGE_CACHE_DIR";

/// A cache file is a few hundred bytes; a token a few KiB.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A token is never kept longer than this, whatever the service says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The lifetime the distribution spec gives a token that names none.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// A token is not used in the last part of its life: a check must not
/// start with a token that expires before its requests are answered.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// The cache directory, checked.
#[derive(Debug)]
pub struct SessionCache {
    dir: PathBuf,
}

/// What a cached session depends on: the host and everything that decides
/// how the ping goes (which schemes are allowed, which roots are trusted).
pub(super) struct SessionKey<'a> {
    pub host: &'a str,
    pub allow_http: bool,
    pub insecure: bool,
    /// A fingerprint of `ca_certs`.
    pub trust: &'a str,
}

/// What a cached token depends on: the token service, what the token is
/// for, and who asked for it.
pub(super) struct TokenKey<'a> {
    pub host: &'a str,
    pub realm: &'a Url,
    pub service: Option<&'a str>,
    pub scope: &'a str,
    /// `(username, password)`, when the token was asked with credentials.
    pub credentials: Option<(&'a str, &'a str)>,
}

#[derive(Serialize, Deserialize)]
struct SessionFile {
    key: String,
    base: String,
    auth: CachedAuth,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
enum CachedAuth {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct TokenFile {
    key: String,
    token: String,
    /// Seconds since the epoch after which the token is not used.
    use_until: u64,
}

impl SessionCache {
    /// The cache named by the environment, or `None` when it is turned off
    /// or its directory cannot be trusted.
    pub fn from_env() -> Option<SessionCache> {
        let dir = match std::env::var_os(CACHE_DIR_ENV) {
            Some(dir) if dir.is_empty() => return None,
            Some(dir) => PathBuf::from(dir),
            None => std::env::temp_dir().join(format!(
                "registry-image-{}",
                rustix::process::geteuid().as_raw()
            )),
        };
        Self::open(&dir)
    }

    /// The cache in `dir`, made if missing; `None` (and a debug line) if it
    /// is not a directory of ours closed to others.
    pub fn open(dir: &Path) -> Option<SessionCache> {
        let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
        match std::fs::symlink_metadata(dir) {
            Ok(meta)
                if meta.is_dir()
                    && meta.uid() == rustix::process::geteuid().as_raw()
                    && meta.permissions().mode() & 0o077 == 0 =>
            {
                Some(SessionCache {
                    dir: dir.to_owned(),
                })
            }
            Ok(_) => {
                tracing::debug!(
                    "not caching sessions in {}: not a directory of ours closed to others",
                    dir.display()
                );
                None
            }
            Err(e) => {
                tracing::debug!("not caching sessions in {}: {e}", dir.display());
                None
            }
        }
    }

    /// The session stored for `key`, if any, as checked by `accept` (the
    /// rules a fresh ping's answer goes through).
    pub(super) fn load_session(
        &self,
        key: &SessionKey,
        accept: impl FnOnce(Url, AuthMode) -> anyhow::Result<Session>,
    ) -> Option<Session> {
        let hash = key.hash();
        let path = self.path("session", &hash);
        let file: SessionFile = self.read(&path)?;
        if file.key != hash {
            self.forget(&path);
            return None;
        }
        let base = Url::parse(&file.base).ok()?;
        let auth = match file.auth {
            CachedAuth::Anonymous => AuthMode::Anonymous,
            CachedAuth::Basic => AuthMode::Basic,
            CachedAuth::Bearer { realm, service } => AuthMode::Bearer {
                realm: Url::parse(&realm).ok()?,
                service,
            },
        };
        match accept(base, auth) {
            Ok(session) => Some(session),
            Err(e) => {
                tracing::debug!("ignoring the cached session for {}: {e:#}", key.host);
                self.forget(&path);
                None
            }
        }
    }

    /// Keeps `session` for the next run.
    pub(super) fn store_session(&self, key: &SessionKey, session: &Session) {
        let hash = key.hash();
        let auth = match &session.auth {
            AuthMode::Anonymous => CachedAuth::Anonymous,
            AuthMode::Basic => CachedAuth::Basic,
            AuthMode::Bearer { realm, service } => CachedAuth::Bearer {
                realm: realm.to_string(),
                service: service.clone(),
            },
        };
        let file = SessionFile {
            key: hash.clone(),
            base: session.base.to_string(),
            auth,
        };
        self.write(&self.path("session", &hash), &file);
    }

    /// Drops the session stored for `key`.
    pub(super) fn forget_session(&self, key: &SessionKey) {
        self.forget(&self.path("session", &key.hash()));
    }

    /// The token stored for `key`, if it is still good to use.
    pub(super) fn load_token(&self, key: &TokenKey) -> Option<String> {
        let hash = key.hash();
        let path = self.path("token", &key.file_hash());
        let file: TokenFile = self.read(&path)?;
        if file.key != hash {
            // Other credentials' token (kept: a run with a wrong password
            // must not cost the right one its token).
            return None;
        }
        if file.token.is_empty() || file.use_until <= now_secs() {
            self.forget(&path);
            return None;
        }
        Some(file.token)
    }

    /// Keeps `token` for the next runs, until shortly before the end of
    /// `lifetime` (the service's `expires_in`).
    pub(super) fn store_token(&self, key: &TokenKey, token: &str, lifetime: Option<Duration>) {
        let usable = usable_lifetime(lifetime);
        if usable.is_zero() {
            return;
        }
        let hash = key.hash();
        let file = TokenFile {
            key: hash.clone(),
            token: token.to_owned(),
            use_until: now_secs().saturating_add(usable.as_secs()),
        };
        self.write(&self.path("token", &key.file_hash()), &file);
    }

    /// Drops the token stored for `key`.
    pub(super) fn forget_token(&self, key: &TokenKey) {
        self.forget(&self.path("token", &key.file_hash()));
    }

    fn path(&self, kind: &str, hash: &str) -> PathBuf {
        self.dir.join(format!("{kind}-{hash}.json"))
    }

    /// A cache file's contents, if it is ours, private, small and valid;
    /// a file that is not is removed.
    fn read<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Option<T> {
        let fd = match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return None,
            Err(e) => {
                tracing::debug!("ignoring cache file {}: {e}", path.display());
                self.forget(path);
                return None;
            }
        };
        let mut file = std::fs::File::from(fd);
        let trusted = file.metadata().is_ok_and(|meta| {
            meta.is_file()
                && meta.uid() == rustix::process::geteuid().as_raw()
                && meta.permissions().mode() & 0o077 == 0
                && meta.len() <= MAX_FILE_BYTES
        });
        let mut bytes = Vec::new();
        let parsed = trusted
            && (&mut file)
                .take(MAX_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .is_ok();
        match parsed.then(|| serde_json::from_slice(&bytes)) {
            Some(Ok(value)) => Some(value),
            _ => {
                tracing::debug!("ignoring cache file {}: foreign or corrupt", path.display());
                self.forget(path);
                None
            }
        }
    }

    /// Writes `value` to `path` whole or not at all: a private temporary
    /// file renamed into place. Failures only cost the next run a request.
    fn write<T: Serialize>(&self, path: &Path, value: &T) {
        let result = (|| -> std::io::Result<()> {
            let bytes = serde_json::to_vec(value)?;
            let mut file = tempfile::Builder::new()
                .prefix(".write-")
                .permissions(std::fs::Permissions::from_mode(0o600))
                .tempfile_in(&self.dir)?;
            file.write_all(&bytes)?;
            file.persist(path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::debug!("cannot write cache file {}: {e}", path.display());
        }
    }

    fn forget(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

impl SessionKey<'_> {
    fn hash(&self) -> String {
        key_hash(&[
            b"session",
            self.host.as_bytes(),
            if self.allow_http { b"http" } else { b"https" },
            if self.insecure {
                b"insecure"
            } else {
                b"secure"
            },
            self.trust.as_bytes(),
        ])
    }
}

impl TokenKey<'_> {
    /// Names the file: one per registry, token service and scope, so
    /// credentials that change between runs (ECR's and ACR's do) replace
    /// the file instead of adding one.
    fn file_hash(&self) -> String {
        key_hash(&[
            b"token file",
            self.host.as_bytes(),
            self.realm.as_str().as_bytes(),
            self.service.unwrap_or("").as_bytes(),
            self.scope.as_bytes(),
        ])
    }

    /// What the file must name: all of the above and the credentials.
    fn hash(&self) -> String {
        let (username, password) = self.credentials.unwrap_or(("", ""));
        key_hash(&[
            b"token",
            self.host.as_bytes(),
            self.realm.as_str().as_bytes(),
            self.service.unwrap_or("").as_bytes(),
            self.scope.as_bytes(),
            if self.credentials.is_some() {
                b"credentials"
            } else {
                b"anonymous"
            },
            username.as_bytes(),
            password.as_bytes(),
        ])
    }
}

/// SHA-256 over the length-prefixed fields, so no two field lists share a
/// hash by moving text from one field to the next.
fn key_hash(fields: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hex::encode(hasher.finalize())
}

/// A fingerprint of the trusted extra roots, for [`SessionKey::trust`].
pub(super) fn trust_fingerprint(roots: &[super::trust::CaCert]) -> String {
    let fields: Vec<&[u8]> = roots.iter().map(|r| r.as_ref()).collect();
    key_hash(&fields)
}

/// How long a token with this lifetime may be used from now: the lifetime
/// (the spec's 60 s when unsaid, at most a day), less a margin of 30 s or
/// half of it, whichever is shorter.
fn usable_lifetime(lifetime: Option<Duration>) -> Duration {
    let lifetime = lifetime
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .min(MAX_TOKEN_LIFETIME);
    lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 2))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, SessionCache) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let cache = SessionCache::open(&path).expect("a fresh cache");
        (dir, cache)
    }

    fn realm() -> Url {
        Url::parse("https://auth.example/token").unwrap()
    }

    fn token_key<'a>(realm: &'a Url, password: &'a str) -> TokenKey<'a> {
        TokenKey {
            host: "registry.example",
            realm,
            service: Some("registry"),
            scope: "repository:a/b:pull",
            credentials: Some(("user", password)),
        }
    }

    fn session_key() -> SessionKey<'static> {
        SessionKey {
            host: "registry.example",
            allow_http: false,
            insecure: false,
            trust: "",
        }
    }

    fn accept_any(base: Url, auth: AuthMode) -> anyhow::Result<Session> {
        Ok(Session {
            base,
            auth,
            cached: true,
        })
    }

    #[test]
    fn a_token_is_found_only_with_the_same_credentials_and_scope() {
        let (_dir, cache) = cache();
        let realm = realm();
        cache.store_token(&token_key(&realm, "right"), "T", None);
        assert_eq!(
            cache.load_token(&token_key(&realm, "right")).as_deref(),
            Some("T")
        );
        assert_eq!(cache.load_token(&token_key(&realm, "wrong")), None);
        let other_scope = TokenKey {
            scope: "repository:a/c:pull",
            ..token_key(&realm, "right")
        };
        assert_eq!(cache.load_token(&other_scope), None);
        let anonymous = TokenKey {
            credentials: None,
            ..token_key(&realm, "right")
        };
        assert_eq!(cache.load_token(&anonymous), None);
        // New credentials replace the file of the old ones.
        cache.store_token(&token_key(&realm, "rotated"), "U", None);
        assert_eq!(std::fs::read_dir(&cache.dir).unwrap().count(), 1);
        assert_eq!(cache.load_token(&token_key(&realm, "right")), None);
    }

    #[test]
    fn lifetimes_keep_a_margin() {
        assert_eq!(usable_lifetime(None), Duration::from_secs(30));
        assert_eq!(
            usable_lifetime(Some(Duration::from_secs(300))),
            Duration::from_secs(270)
        );
        assert_eq!(
            usable_lifetime(Some(Duration::from_secs(10))),
            Duration::from_secs(5)
        );
        assert_eq!(usable_lifetime(Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            usable_lifetime(Some(Duration::from_secs(u64::MAX))),
            MAX_TOKEN_LIFETIME - EXPIRY_MARGIN
        );
    }

    #[test]
    fn an_expired_token_is_not_used() {
        let (_dir, cache) = cache();
        let realm = realm();
        let key = token_key(&realm, "right");
        let hash = key.hash();
        cache.write(
            &cache.path("token", &key.file_hash()),
            &TokenFile {
                key: hash.clone(),
                token: "T".into(),
                use_until: now_secs() - 1,
            },
        );
        assert_eq!(cache.load_token(&key), None);
        assert!(!cache.path("token", &key.file_hash()).exists(), "removed");
    }

    #[test]
    fn sessions_round_trip_through_the_acceptance_rules() {
        let (_dir, cache) = cache();
        let session = Session {
            base: Url::parse("https://registry.example/").unwrap(),
            auth: AuthMode::Bearer {
                realm: realm(),
                service: Some("registry".into()),
            },
            cached: false,
        };
        cache.store_session(&session_key(), &session);
        let loaded = cache.load_session(&session_key(), accept_any).unwrap();
        assert_eq!(loaded.base, session.base);
        assert!(
            matches!(loaded.auth, AuthMode::Bearer { ref realm, .. } if realm.as_str() == "https://auth.example/token")
        );
        let other = SessionKey {
            allow_http: true,
            ..session_key()
        };
        assert!(cache.load_session(&other, accept_any).is_none());
        // What the acceptance rules refuse is dropped.
        assert!(
            cache
                .load_session(&session_key(), |_, _| anyhow::bail!("refused"))
                .is_none()
        );
        assert!(cache.load_session(&session_key(), accept_any).is_none());
    }

    #[test]
    fn foreign_corrupt_and_renamed_files_are_ignored() {
        let (_dir, cache) = cache();
        let realm = realm();
        let key = token_key(&realm, "right");
        let path = cache.path("token", &key.file_hash());
        // Readable by others.
        cache.store_token(&key, "T", None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(cache.load_token(&key), None);
        assert!(!path.exists());
        // Not JSON.
        cache.store_token(&key, "T", None);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(cache.load_token(&key), None);
        // A link to a good file.
        let other = TokenKey {
            scope: "repository:a/c:pull",
            ..token_key(&realm, "right")
        };
        cache.store_token(&other, "T", None);
        std::os::unix::fs::symlink(cache.path("token", &other.file_hash()), &path).unwrap();
        assert_eq!(cache.load_token(&key), None);
        // Another key's file under this key's name.
        std::fs::copy(cache.path("token", &other.file_hash()), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(cache.load_token(&key), None);
        // Too large.
        std::fs::write(&path, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(cache.load_token(&key), None);
    }

    #[test]
    fn a_directory_open_to_others_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(SessionCache::open(&path).is_none());
        let link = dir.path().join("link");
        let private = dir.path().join("private");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .unwrap();
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(SessionCache::open(&link).is_none(), "a link is not used");
        assert!(SessionCache::open(&private).is_some());
    }
}
