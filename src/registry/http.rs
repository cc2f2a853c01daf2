//! The one HTTP client every registry request goes through, with the trust
//! roots a source configures.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, bail};

use super::trust::CaCert;
use tokio::sync::Notify;

const USER_AGENT: &str = concat!("registry-image/", env!("CARGO_PKG_VERSION"));

/// A duration in milliseconds from the environment: the knobs tests use to
/// make timeouts and budgets short (`REGISTRY_IMAGE_*_MS`).
pub fn millis_from_env(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// How long a registry may stay silent while we wait for its bytes: 2
/// minutes, or `REGISTRY_IMAGE_READ_TIMEOUT_MS` (the tests use it). The
/// clock runs only while we are reading: a download paused by our own
/// consumer (layers extract in order) is not a silent server. Read once:
/// it is consulted for every body chunk.
pub fn read_timeout() -> Duration {
    static READ_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *READ_TIMEOUT.get_or_init(|| {
        millis_from_env("REGISTRY_IMAGE_READ_TIMEOUT_MS").unwrap_or(Duration::from_secs(120))
    })
}

/// Waits for `read` (a response's headers, or its next body chunk) at most
/// the read timeout; a silent registry is a `TimedOut` error, which the
/// retry policy retries or resumes.
pub async fn read_or_stall<T>(read: impl Future<Output = T>) -> std::io::Result<T> {
    let limit = read_timeout();
    tokio::time::timeout(limit, read).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the registry sent nothing for {} ms", limit.as_millis()),
        )
    })
}

/// Sends a request and waits for its answer within the read timeout,
/// counted from when the last byte of its body was handed to the connection
/// (at once for a request without a body): an upload may take long to send,
/// but a registry that then stays silent is a stalled server, not a slow
/// link. The error leaves the URL out: its query may hold upload state or a
/// storage backend's signature.
pub async fn send_and_wait(request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
    let (client, request) = request.build_split();
    let mut request = request.map_err(reqwest::Error::without_url)?;
    let method = request.method().clone();
    let sent = Arc::new(Notify::new());
    match request.body_mut().take() {
        Some(body) => {
            *request.body_mut() = Some(reqwest::Body::wrap(WatchedBody::new(body, sent.clone())))
        }
        None => sent.notify_one(),
    }
    let answer = client.execute(request);
    tokio::pin!(answer);
    let answer = tokio::select! {
        biased;
        answer = &mut answer => answer,
        () = sent.notified() => read_or_stall(&mut answer).await?,
    };
    let mut response = answer.map_err(reqwest::Error::without_url)?;
    // Kept for the error a status becomes (`StatusError::from_response`).
    response.extensions_mut().insert(method);
    Ok(response)
}

/// A request body that says when its last byte was handed to the
/// connection: from then on, the registry's silence is what the read
/// timeout measures. reqwest has no such hook, hence this wrapper.
struct WatchedBody {
    inner: reqwest::Body,
    sent: Arc<Notify>,
}

impl WatchedBody {
    fn new(inner: reqwest::Body, sent: Arc<Notify>) -> Self {
        if http_body::Body::is_end_stream(&inner) {
            sent.notify_one();
        }
        WatchedBody { inner, sent }
    }
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, reqwest::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.sent.notify_one();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let ended = self.inner.is_end_stream();
        if ended {
            self.sent.notify_one();
        }
        ended
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The next chunk of a body, within the read timeout.
pub async fn next_chunk(response: &mut reqwest::Response) -> anyhow::Result<Option<bytes::Bytes>> {
    Ok(read_or_stall(response.chunk()).await??)
}

/// Builds the HTTP client: the system trust roots plus `extra_roots`.
pub fn build_client(extra_roots: Vec<CaCert>) -> anyhow::Result<reqwest::Client> {
    client_builder(extra_roots)
        .build()
        .context("cannot set up the HTTP client (are the ca_certs valid certificates?)")
}

/// [`build_client`] following no redirect: for calls that send a cloud's
/// token in their body, which a 307 would carry to wherever it points.
pub fn build_client_without_redirects(extra_roots: Vec<CaCert>) -> anyhow::Result<reqwest::Client> {
    client_builder(extra_roots)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot set up the HTTP client (are the ca_certs valid certificates?)")
}

fn client_builder(extra_roots: Vec<CaCert>) -> reqwest::ClientBuilder {
    // ring, not aws-lc: aws-lc seeds its RNG with CPU jitter entropy on first
    // use, ~50 ms of CPU per process, which would dominate a check. Installing
    // fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        // No reqwest read timeout: its clock also runs while we do not
        // read (a layer download waiting on extraction), so it cut healthy
        // downloads. Waits are bounded where we wait: `read_or_stall`.
        .pool_idle_timeout(Duration::from_secs(60));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let lazy = system_bundle().map(|bundle| {
        super::trust::LazyRoots::new(bundle, extra_roots.clone(), provider).client_config()
    });
    match lazy {
        Some(Ok(config)) => builder.tls_backend_preconfigured(config),
        // No bundle (or `SSL_CERT_DIR` set): the platform verifier, which
        // reads the system's roots when the client is built.
        _ => builder.tls_certs_merge(
            extra_roots
                .iter()
                .filter_map(|cert| reqwest::Certificate::from_der(cert).ok()),
        ),
    }
}

/// The system CA bundle file (`SSL_CERT_FILE`, or the file OpenSSL would
/// use), read at the first TLS handshake ([`super::trust::LazyRoots`]).
///
/// The platform verifier reads that bundle *and* each of the ~300 files of
/// `/etc/ssl/certs`, which hold the same roots: ~8 ms of CPU in every
/// process. When the user points `SSL_CERT_DIR` somewhere, or there is no
/// bundle, the platform verifier is used instead.
fn system_bundle() -> Option<std::path::PathBuf> {
    if std::env::var_os("SSL_CERT_DIR").is_some() {
        return None;
    }
    openssl_probe::probe()
        .cert_file
        .filter(|path| path.is_file())
}

/// Reads a small response body whole, refusing more than `limit` bytes
/// (whatever `Content-Length` claims): every body held in memory has a cap.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> anyhow::Result<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        bail!("the response is larger than {limit} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(&mut response).await? {
        if body.len() + chunk.len() > limit {
            bail!("the response is larger than {limit} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `limit` bytes of a body (an error's, shown as an excerpt); the
/// rest is not read. A body that breaks off gives what arrived.
pub async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match next_chunk(&mut response).await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    body
}
