//! Test harness: runs the real binary as Concourse does (through files named
//! `check`, `in`, `out`, JSON on stdin) against real CNCF distribution
//! registries that it starts on free loopback ports.

#![allow(dead_code, unused_imports)]

pub mod aws;
pub mod cosign_peer;
pub mod image;
pub mod layer_grammar;
pub mod private_network;
pub mod proxy;
pub mod quirks;
pub mod raw_tar;
pub mod registry;
pub mod s3;
pub mod sandbox;
pub mod signatures;
pub mod sigstore_peer;
pub mod tls;
pub mod token_server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use image::TestImage;
pub use registry::{Auth, TestRegistry};

/// The TLS crypto provider for the harness's own HTTP clients (reqwest is
/// built without a default one, as in the product).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The shared async runtime for harness servers and requests.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    install_crypto();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// A directory with `check`, `in` and `out` linked to the built binary.
pub fn resource_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("opt-resource");
        std::fs::create_dir_all(&dir).unwrap();
        link_steps(Path::new(env!("CARGO_BIN_EXE_registry-image")), &dir);
        dir
    })
}

/// Links `check`, `in` and `out` in `dir` to `binary`.
pub fn link_steps(binary: &Path, dir: &Path) {
    for step in ["check", "in", "out"] {
        let link = dir.join(step);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(binary, &link).unwrap();
    }
}

/// `program`, reachable by every user as `<dir>/<name>` (a hard link, or a
/// copy across filesystems), for runs as an unprivileged user: the checkout
/// holding the build may not be readable by them. The directory goes with
/// the returned guard.
pub fn world_runnable(program: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("world-runnable")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join(name);
    // The file itself, not a symlink to it.
    let program = std::fs::canonicalize(program).unwrap();
    if std::fs::hard_link(&program, &path).is_err() {
        std::fs::copy(&program, &path).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
}

/// What a step printed and how it exited.
#[derive(Debug)]
pub struct StepOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl StepOutput {
    /// The stdout JSON of a successful step; panics with stderr otherwise.
    pub fn json(&self) -> serde_json::Value {
        assert!(self.success, "step failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// The `metadata` of a successful step, as (name, value) pairs.
    pub fn metadata(&self) -> Vec<(String, String)> {
        self.json()["metadata"]
            .as_array()
            .expect("metadata is an array")
            .iter()
            .map(|field| {
                (
                    field["name"].as_str().unwrap().to_owned(),
                    field["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The single error line of a failed step.
    /// Asserts that none of `canaries` is on stdout or stderr; `context`
    /// says which run, in the failure message.
    pub fn assert_none_leaked(&self, canaries: &[&str], context: &str) {
        for canary in canaries {
            assert!(
                !self.stdout.contains(canary) && !self.stderr.contains(canary),
                "{context}{canary} leaked: stdout {:?} stderr {:?}",
                self.stdout,
                self.stderr
            );
        }
    }

    pub fn error_line(&self) -> &str {
        assert!(
            !self.success,
            "step unexpectedly succeeded: {}",
            self.stdout
        );
        assert_eq!(self.code, Some(1), "exit code; stderr: {}", self.stderr);
        assert!(
            self.stdout.is_empty(),
            "a failed step printed to stdout: {:?}",
            self.stdout
        );
        self.stderr
            .lines()
            .rfind(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line in stderr: {:?}", self.stderr))
    }
}

/// The versions a `check` printed, as (tag, digest); each must have exactly
/// those two keys.
pub fn versions(out: &StepOutput) -> Vec<(String, String)> {
    out.json()
        .as_array()
        .expect("check prints an array")
        .iter()
        .map(|v| {
            let obj = v.as_object().unwrap();
            assert_eq!(obj.len(), 2, "a version has exactly tag and digest: {v}");
            (
                v["tag"].as_str().unwrap().to_owned(),
                v["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs `/opt/resource/<step> [args]` with `request` on stdin.
pub fn run_step(step: &str, args: &[&str], request: &serde_json::Value) -> StepOutput {
    run_program(
        &resource_dir().join(step),
        args,
        request.to_string().as_bytes(),
    )
}

/// [`run_step`] with extra environment variables.
pub fn run_step_env(
    step: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    request: &serde_json::Value,
) -> StepOutput {
    run_program_env(
        &resource_dir().join(step),
        args,
        envs,
        request.to_string().as_bytes(),
    )
}

/// Runs `program` with raw bytes on stdin, with a clean environment as
/// Concourse gives (no proxies; no HOME secrets).
pub fn run_program(program: &Path, args: &[&str], stdin: &[u8]) -> StepOutput {
    run_program_env(program, args, &[], stdin)
}

pub fn run_program_env(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: &[u8],
) -> StepOutput {
    // `check` keeps sessions and tokens between runs; every run here
    // starts cold unless a test names the cache (or the temporary
    // directory it defaults to).
    let cache_named = envs
        .iter()
        .any(|(k, _)| *k == "REGISTRY_IMAGE_CACHE_DIR" || *k == "TMPDIR");
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs((!cache_named).then_some(("REGISTRY_IMAGE_CACHE_DIR", "")))
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    StepOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs skopeo (the interop referee) and returns its stdout; panics with
/// its stderr when it fails.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs one of the project's `scripts/` with `args` and `envs` and returns
/// its stdout; panics with its stderr when it fails.
///
/// The script gets the environment a shell would give it, without what
/// cargo adds for a test (`CARGO_PKG_*`, `CARGO`, `LD_LIBRARY_PATH`,
/// rustup's toolchain pin): a cargo the script runs must find the builds
/// `scripts/test` made fresh, not rebuild them for another environment.
pub fn project_script(name: &str, args: &[&std::ffi::OsStr], envs: &[(&str, &Path)]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let mut command = Command::new(script);
    for (var, _) in std::env::vars_os() {
        let text = var.to_string_lossy();
        let added_by_cargo = (text.starts_with("CARGO") && text != "CARGO_HOME")
            || matches!(
                &*text,
                "LD_LIBRARY_PATH"
                    | "RUST_RECURSION_COUNT"
                    | "RUSTUP_TOOLCHAIN"
                    | "RUSTUP_TOOLCHAIN_SOURCE"
            );
        if added_by_cargo {
            command.env_remove(&var);
        }
    }
    let out = command
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("scripts print UTF-8")
}

/// Serves `app` on a free loopback port until the returned sender is used
/// (or dropped): the harness's small HTTP servers.
pub fn serve(app: axum::Router) -> (u16, tokio::sync::oneshot::Sender<()>) {
    serve_on(app, ([127, 0, 0, 1], 0).into())
}

/// [`serve`] on `address` (`[::1]:0` for the IPv6 loopback).
pub fn serve_on(
    app: axum::Router,
    address: std::net::SocketAddr,
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = runtime()
        .block_on(tokio::net::TcpListener::bind(address))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, spawn_server(listener, app))
}

/// Serves `app` on `listener` in the background until the returned
/// sender is dropped or fired.
fn spawn_server<L>(listener: L, app: axum::Router) -> tokio::sync::oneshot::Sender<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    runtime().spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    tx
}

/// Serves `app` over HTTPS with `tls`'s certificate on `address` (a
/// private network namespace's 127.0.0.2:443, say); returns the port and
/// the shutdown handle, as [`serve`].
pub fn serve_tls(
    app: axum::Router,
    address: std::net::SocketAddr,
    tls: &tls::TlsMaterial,
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    install_crypto();
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let tcp = runtime()
        .block_on(tokio::net::TcpListener::bind(address))
        .unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
    };
    (port, spawn_server(listener, app))
}

/// A TCP listener whose connections are TLS (a failed handshake is
/// dropped and the next connection taken).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A body of `bytes` copies of `fill`, streamed in 1 MiB chunks without a
/// length: a hostile server's flood, never held whole.
pub fn flood_body(bytes: u64, fill: u8) -> axum::body::Body {
    const CHUNK: u64 = 1 << 20;
    let chunk = bytes::Bytes::from(vec![fill; CHUNK as usize]);
    let stream = futures_util::stream::iter((0..bytes.div_ceil(CHUNK)).map(move |i| {
        let left = bytes - i * CHUNK;
        Ok::<_, std::io::Error>(chunk.slice(..left.min(CHUNK) as usize))
    }));
    axum::body::Body::from_stream(stream)
}

/// A free loopback port (the listener is closed before returning; the small
/// race with other processes is acceptable on a test machine).
/// Starts `command` (a server) with stdin closed and stdout and stderr
/// into the file `log`; panics naming `what` if it cannot start.
pub fn spawn_logged(command: &mut Command, log: &Path, what: &str) -> std::process::Child {
    let file = std::fs::File::create(log).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"))
}

/// Waits (30 s at most) until `child` listens on `address`; panics
/// with its `log` if it exits or never does. Every loop is bounded.
pub fn wait_listening(
    child: &mut std::process::Child,
    address: std::net::SocketAddr,
    what: &str,
    log: &Path,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}): {}", log());
        }
        if std::net::TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{what} did not start: {}", log());
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
