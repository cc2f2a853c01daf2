//! A real CNCF distribution registry (`docker-registry`) on a free loopback
//! port with its own temp dir, in one of four flavours: plain HTTP, htpasswd
//! basic auth, TLS with a generated CA, or token auth with our token server.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command};

use reqwest::header::{CONTENT_TYPE, LOCATION};

use super::image::TestImage;
use super::s3::S3Storage;
use super::tls::{self, TlsMaterial};
use super::token_server::{self, TokenServer};
use super::{free_port, runtime};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    Basic { username: String, password: String },
    Token { username: String, password: String },
}

/// How to start a registry (see the constructors).
struct Setup<'a> {
    auth: Auth,
    tls: Option<TlsMaterial>,
    s3: Option<&'a S3Storage>,
    address: SocketAddr,
    /// A token server with its realm and service, instead of one made for
    /// [`Auth::Token`].
    token: Option<(TokenServer, String, String)>,
}

impl Setup<'_> {
    fn new(auth: Auth, address: SocketAddr) -> Self {
        Setup {
            auth,
            tls: None,
            s3: None,
            address,
            token: None,
        }
    }
}

pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    address: IpAddr,
    pub port: u16,
    pub tls: Option<TlsMaterial>,
    pub auth: Auth,
    pub token_server: Option<TokenServer>,
    http: reqwest::Client,
}

impl TestRegistry {
    pub fn plain() -> Self {
        Self::start(Auth::Anonymous, false)
    }

    pub fn basic(username: &str, password: &str) -> Self {
        Self::start(
            Auth::Basic {
                username: username.into(),
                password: password.into(),
            },
            false,
        )
    }

    pub fn tls() -> Self {
        Self::start(Auth::Anonymous, true)
    }

    pub fn token(username: &str, password: &str) -> Self {
        Self::start(
            Auth::Token {
                username: username.into(),
                password: password.into(),
            },
            false,
        )
    }

    pub fn start(auth: Auth, use_tls: bool) -> Self {
        Self::start_with(auth, use_tls, None)
    }

    /// A registry storing into `s3` (its blob GETs then answer 307 to
    /// presigned URLs on the storage host) with `auth`.
    pub fn on_s3(auth: Auth, s3: &S3Storage) -> Self {
        Self::start_with(auth, false, Some(s3))
    }

    /// A plain registry on the IPv6 loopback: named `[::1]:<port>`.
    pub fn plain_ipv6() -> Self {
        Self::launch(Setup::new(
            Auth::Anonymous,
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), free_port()),
        ))
    }

    /// A plain-HTTP registry with basic auth on `address` (a private
    /// network's non-loopback address, say).
    pub fn basic_at(address: SocketAddr, username: &str, password: &str) -> Self {
        Self::launch(Setup::new(
            Auth::Basic {
                username: username.into(),
                password: password.into(),
            },
            address,
        ))
    }

    /// A registry on the IPv6 loopback with token auth whose realm is on
    /// the IPv6 loopback too (`http://[::1]:<port>/token`).
    pub fn token_ipv6(username: &str, password: &str) -> Self {
        let server = TokenServer::start_ipv6(username, password);
        let realm = server.realm();
        let mut setup = Setup::new(
            Auth::Token {
                username: username.into(),
                password: password.into(),
            },
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), free_port()),
        );
        setup.token = Some((server, realm, token_server::SERVICE.to_owned()));
        Self::launch(setup)
    }

    /// [`TestRegistry::start`] with the storage in `s3`, or in its temp dir.
    pub fn start_with(auth: Auth, use_tls: bool, s3: Option<&S3Storage>) -> Self {
        let mut setup = Setup::new(
            auth,
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port()),
        );
        setup.tls = use_tls.then(tls::generate);
        setup.s3 = s3;
        Self::launch(setup)
    }

    /// A plain-HTTP registry on a loopback port with token auth by
    /// `token_server` under another registry's realm and service (the
    /// realm is served by a front such as [`FaultProxy::tls_front`]).
    ///
    /// [`FaultProxy::tls_front`]: super::proxy::FaultProxy::tls_front
    pub fn token_as(token_server: TokenServer, realm: &str, service: &str) -> Self {
        let mut setup = Setup::new(
            Auth::Token {
                username: token_server.username.clone(),
                password: token_server.password.clone(),
            },
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port()),
        );
        setup.token = Some((token_server, realm.to_owned(), service.to_owned()));
        Self::launch(setup)
    }

    /// Docker Hub as a private network namespace sees it (the test's
    /// `/etc/hosts` names `registry-1.docker.io` 127.0.0.1): TLS with
    /// `tls` on 127.0.0.1:443, token auth as Docker Hub's
    /// (`realm="https://auth.docker.io/token",service="registry.docker.io"`)
    /// by `token_server`, which must sign for that service.
    pub fn docker_hub(token_server: TokenServer, tls: TlsMaterial) -> Self {
        let mut setup = Setup::new(
            Auth::Token {
                username: token_server.username.clone(),
                password: token_server.password.clone(),
            },
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 443),
        );
        setup.tls = Some(tls);
        setup.token = Some((
            token_server,
            "https://auth.docker.io/token".to_owned(),
            "registry.docker.io".to_owned(),
        ));
        Self::launch(setup)
    }

    fn launch(setup: Setup<'_>) -> Self {
        assert!(
            std::path::Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: run scripts/setup"
        );
        super::install_crypto();
        let Setup {
            auth,
            tls: tls_material,
            s3,
            address: listen,
            mut token,
        } = setup;
        let dir = tempfile::tempdir().unwrap();
        let (address, port) = (listen.ip(), listen.port());
        let storage = match s3 {
            Some(s3) => s3.registry_config(),
            None => format!(
                "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
                dir.path().join("storage").display()
            ),
        };
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             {storage}http:\n  addr: \"{listen}\"\n"
        );
        let mut http = reqwest::Client::builder();
        if let Some(m) = &tls_material {
            std::fs::write(dir.path().join("cert.pem"), &m.cert_pem).unwrap();
            std::fs::write(dir.path().join("key.pem"), &m.key_pem).unwrap();
            writeln!(
                config,
                "  tls:\n    certificate: {}\n    key: {}",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            )
            .unwrap();
            http = http.tls_certs_merge(
                reqwest::Certificate::from_pem_bundle(m.ca_pem.as_bytes()).unwrap(),
            );
        }
        let mut token_server = None;
        match &auth {
            Auth::Anonymous => {}
            Auth::Basic { username, password } => {
                let hash = bcrypt::hash_with_result(password, 4)
                    .unwrap()
                    .format_for_version(bcrypt::Version::TwoY);
                std::fs::write(dir.path().join("htpasswd"), format!("{username}:{hash}\n"))
                    .unwrap();
                writeln!(
                    config,
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}",
                    dir.path().join("htpasswd").display()
                )
                .unwrap();
            }
            Auth::Token { username, password } => {
                let (server, realm, service) = token.take().unwrap_or_else(|| {
                    let server = TokenServer::start(username, password);
                    let realm = server.realm();
                    (server, realm, token_server::SERVICE.to_owned())
                });
                std::fs::write(dir.path().join("token-root.pem"), &server.signer.cert_pem).unwrap();
                writeln!(
                    config,
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {}\n    rootcertbundle: {}",
                    token_server::ISSUER,
                    dir.path().join("token-root.pem").display()
                )
                .unwrap();
                token_server = Some(server);
            }
        }
        std::fs::write(dir.path().join("config.yml"), &config).unwrap();
        let mut command = Command::new(REGISTRY_BIN);
        // The S3 driver's AWS SDK reads the machine's AWS settings (a CA
        // bundle it cannot load, profiles): the test S3 needs none.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        command.arg("serve").arg(dir.path().join("config.yml"));
        let child = super::spawn_logged(
            &mut command,
            &dir.path().join("registry.log"),
            "docker-registry",
        );
        let mut registry = TestRegistry {
            child,
            dir,
            address,
            port,
            tls: tls_material,
            auth,
            token_server,
            http: http.build().unwrap(),
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let log = self.dir.path().join("registry.log");
        let address = SocketAddr::new(self.address, self.port);
        super::wait_listening(&mut self.child, address, "docker-registry", &log);
    }

    /// `127.0.0.1:<port>` (`[::1]:<port>` on IPv6).
    pub fn host(&self) -> String {
        SocketAddr::new(self.address, self.port).to_string()
    }

    /// `<host>/<path>`, as written in `source.repository`.
    pub fn repo(&self, path: &str) -> String {
        format!("{}/{path}", self.host())
    }

    pub fn ca_pem(&self) -> &str {
        &self.tls.as_ref().expect("not a TLS registry").ca_pem
    }

    /// The registry's storage root (filesystem storage only).
    pub fn storage_root(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry stores a blob's bytes (to corrupt it in tests).
    pub fn blob_path(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn base(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    fn authorize(&self, request: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Anonymous => request,
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
            Auth::Token { username, .. } => {
                let signer = &self.token_server.as_ref().unwrap().signer;
                let actions = ["pull", "push", "delete"].map(str::to_owned).to_vec();
                request.bearer_auth(signer.token(username, &[(repo.to_owned(), actions)]))
            }
        }
    }

    /// Uploads one blob (POST, then a monolithic PUT) and returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = super::image::sha256(bytes);
        runtime().block_on(async {
            let start = self
                .authorize(
                    self.http
                        .post(format!("{}/v2/{repo}/blobs/uploads/", self.base())),
                    repo,
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                start.status(),
                202,
                "start upload: {}",
                start.text().await.unwrap()
            );
            let location = start.headers()[LOCATION].to_str().unwrap().to_owned();
            let mut url = reqwest::Url::parse(&self.base())
                .unwrap()
                .join(&location)
                .unwrap();
            url.query_pairs_mut().append_pair("digest", &digest);
            let done = self
                .authorize(self.http.put(url), repo)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                done.status(),
                201,
                "finish upload: {}",
                done.text().await.unwrap()
            );
        });
        digest
    }

    /// PUTs a manifest under `reference` (tag or digest); returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        runtime().block_on(async {
            let response = self
                .authorize(
                    self.http
                        .put(format!("{}/v2/{repo}/manifests/{reference}", self.base())),
                    repo,
                )
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                201,
                "put manifest: {}",
                response.text().await.unwrap()
            );
        });
        super::image::sha256(bytes)
    }

    /// Pushes `image` (blobs, then the manifest) as `repo:tag`; returns the
    /// manifest digest.
    pub fn push(&self, repo: &str, tag: &str, image: &TestImage) -> String {
        for blob in image.blobs() {
            self.put_blob(repo, blob);
        }
        self.put_manifest(repo, tag, &image.manifest_media_type, &image.manifest)
    }

    /// The digest `repo:reference` resolves to (HEAD), or `None` on 404.
    pub fn digest_of(&self, repo: &str, reference: &str) -> Option<String> {
        let (status, _, _, digest) = self.fetch_manifest(repo, reference, true);
        (status == 200).then(|| digest.expect("Docker-Content-Digest"))
    }

    /// A manifest's bytes and content type, as served.
    pub fn manifest(&self, repo: &str, reference: &str) -> (Vec<u8>, String) {
        let (status, bytes, content_type, _) = self.fetch_manifest(repo, reference, false);
        assert_eq!(status, 200, "GET manifest {repo}:{reference}");
        (bytes, content_type)
    }

    fn fetch_manifest(
        &self,
        repo: &str,
        reference: &str,
        head: bool,
    ) -> (u16, Vec<u8>, String, Option<String>) {
        runtime().block_on(async {
            let url = format!("{}/v2/{repo}/manifests/{reference}", self.base());
            let request = if head {
                self.http.head(url)
            } else {
                self.http.get(url)
            };
            let response = self
                .authorize(request, repo)
                .header("accept", super::image::MANIFEST_ACCEPT)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let content_type = header("content-type").unwrap_or_default();
            let digest = header("docker-content-digest");
            let bytes = response.bytes().await.unwrap().to_vec();
            (status, bytes, content_type, digest)
        })
    }

    /// The repository's tags, sorted (empty when it does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        runtime().block_on(async {
            let response = self
                .authorize(
                    self.http
                        .get(format!("{}/v2/{repo}/tags/list", self.base())),
                    repo,
                )
                .send()
                .await
                .unwrap();
            if response.status() == 404 {
                return Vec::new();
            }
            let body: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            let mut tags: Vec<String> =
                serde_json::from_value(body["tags"].clone()).unwrap_or_default();
            tags.sort();
            tags
        })
    }

    /// Deletes a manifest by digest (which drops every tag pointing at it).
    pub fn delete_manifest(&self, repo: &str, digest: &str) {
        runtime().block_on(async {
            let response = self
                .authorize(
                    self.http
                        .delete(format!("{}/v2/{repo}/manifests/{digest}", self.base())),
                    repo,
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                202,
                "delete manifest: {}",
                response.text().await.unwrap()
            );
        });
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
