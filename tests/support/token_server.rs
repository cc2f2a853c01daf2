//! A token service for distribution's `token` auth: checks Basic credentials
//! and issues ES256 JWTs whose `x5c` header carries a self-signed certificate
//! that the registry trusts through `rootcertbundle`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{CertificateParams, KeyPair};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

pub const ISSUER: &str = "registry-image-test-issuer";
pub const SERVICE: &str = "registry-image-test";

/// Signs registry tokens.
pub struct Signer {
    /// The service tokens are for (`aud`), as the registry is configured.
    audience: String,
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    pub cert_pem: String,
}

impl Signer {
    pub fn new() -> Self {
        Self::for_service(SERVICE)
    }

    /// A signer of tokens for `service`.
    pub fn for_service(service: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["token-signer".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "token-signer");
        let cert = params.self_signed(&key).unwrap();
        let signing = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        Signer {
            audience: service.to_owned(),
            key: signing,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        }
    }

    /// A token granting `access` entries of `(repository, actions)`.
    pub fn token(&self, subject: &str, access: &[(String, Vec<String>)]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({
            "alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let access: Vec<_> = access
            .iter()
            .map(|(name, actions)| serde_json::json!({"type": "repository", "name": name, "actions": actions}))
            .collect();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": self.audience,
            "exp": now + 600, "nbf": now - 60, "iat": now,
            "jti": format!("{now}-{}", rand_u64()), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    SystemRandom::new().fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

struct ServerState {
    signer: Arc<Signer>,
    username: String,
    password: String,
    requests: Arc<AtomicUsize>,
    queries: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<Vec<TokenFault>>>,
    reply: Arc<Mutex<TokenReply>>,
    anonymous_pull: Arc<AtomicBool>,
}

/// The JSON a token is given in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenReply {
    /// `{"token", "expires_in"}`, as distribution's spec shows.
    Token,
    /// `{"access_token"}` only, no lifetime (ACR; spinnaker/clouddriver#2275).
    AccessTokenOnly,
    /// `{"token"}` only, no lifetime (Docker Hub in 2016; distribution#1589).
    TokenOnly,
    /// `{"token", "expires_in"}` with this many seconds.
    Lifetime(u64),
}

/// What the token service does instead of issuing a token.
#[derive(Clone, Copy, Debug)]
pub enum TokenFault {
    /// Answer with this status (a busy or failing service).
    Status(u16),
    /// Answer 200 with a JSON-looking body of this many bytes.
    Flood(u64),
}

/// A running token service on a loopback port.
pub struct TokenServer {
    pub port: u16,
    address: std::net::IpAddr,
    pub signer: Arc<Signer>,
    /// The credentials it grants access for.
    pub username: String,
    pub password: String,
    requests: Arc<AtomicUsize>,
    queries: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<Vec<TokenFault>>>,
    reply: Arc<Mutex<TokenReply>>,
    anonymous_pull: Arc<AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TokenServer {
    pub fn start(username: &str, password: &str) -> Self {
        Self::serve(username, password, Signer::new(), super::serve)
    }

    /// A token service on a loopback port signing for `service`.
    pub fn for_service(username: &str, password: &str, service: &str) -> Self {
        Self::serve(
            username,
            password,
            Signer::for_service(service),
            super::serve,
        )
    }

    /// Anonymous callers get pull access from now on (public repositories,
    /// as ECR Public and Docker Hub grant).
    pub fn allow_anonymous_pull(&self) {
        self.anonymous_pull.store(true, Ordering::SeqCst);
    }

    /// A token service on the IPv6 loopback: its realm is
    /// `http://[::1]:<port>/token`.
    pub fn start_ipv6(username: &str, password: &str) -> Self {
        let mut server = Self::serve(username, password, Signer::new(), |app| {
            super::serve_on(app, (std::net::Ipv6Addr::LOCALHOST, 0).into())
        });
        server.address = std::net::Ipv6Addr::LOCALHOST.into();
        server
    }

    /// Docker Hub's token service as a private network namespace sees it
    /// (`auth.docker.io` is 127.0.0.2 in the test's `/etc/hosts`): HTTPS
    /// with `tls` on 127.0.0.2:443, tokens for `registry.docker.io`.
    pub fn docker_hub(username: &str, password: &str, tls: &super::tls::TlsMaterial) -> Self {
        let address: std::net::SocketAddr = ([127, 0, 0, 2], 443).into();
        Self::serve(
            username,
            password,
            Signer::for_service("registry.docker.io"),
            |app| super::serve_tls(app, address, tls),
        )
    }

    fn serve(
        username: &str,
        password: &str,
        signer: Signer,
        serve: impl FnOnce(axum::Router) -> (u16, tokio::sync::oneshot::Sender<()>),
    ) -> Self {
        let signer = Arc::new(signer);
        let requests = Arc::new(AtomicUsize::new(0));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(Mutex::new(TokenReply::Token));
        let anonymous_pull = Arc::new(AtomicBool::new(false));
        let state = Arc::new(ServerState {
            anonymous_pull: anonymous_pull.clone(),
            reply: reply.clone(),
            signer: signer.clone(),
            username: username.to_owned(),
            password: password.to_owned(),
            requests: requests.clone(),
            queries: queries.clone(),
            faults: faults.clone(),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(issue))
            .with_state(state);
        let (port, tx) = serve(app);
        TokenServer {
            port,
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            signer,
            username: username.to_owned(),
            password: password.to_owned(),
            requests,
            queries,
            faults,
            reply,
            anonymous_pull,
            shutdown: Some(tx),
        }
    }

    /// Give tokens in this shape from now on.
    pub fn reply_with(&self, reply: TokenReply) {
        *self.reply.lock().unwrap() = reply;
    }

    /// The query strings of the token requests so far (`service`, `scope`).
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }

    pub fn realm(&self) -> String {
        format!(
            "http://{}/token",
            std::net::SocketAddr::new(self.address, self.port)
        )
    }

    /// Answer the next `times` token requests with `fault`.
    pub fn inject(&self, fault: TokenFault, times: usize) {
        let mut faults = self.faults.lock().unwrap();
        faults.extend(std::iter::repeat_n(fault, times));
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// Faults not yet used up.
    pub fn pending_faults(&self) -> usize {
        self.faults.lock().unwrap().len()
    }

    /// How many token requests arrived.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn issue(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state
        .queries
        .lock()
        .unwrap()
        .push(query.clone().unwrap_or_default());
    let fault = {
        let mut faults = state.faults.lock().unwrap();
        (!faults.is_empty()).then(|| faults.remove(0))
    };
    match fault {
        Some(TokenFault::Status(code)) => {
            return (
                StatusCode::from_u16(code).unwrap(),
                [("content-type", "application/json")],
                format!(r#"{{"errors":[{{"code":"INJECTED","message":"injected {code}"}}]}}"#),
            )
                .into_response();
        }
        Some(TokenFault::Flood(bytes)) => {
            return axum::response::Response::builder()
                .header("content-type", "application/json")
                .body(super::flood_body(bytes, b' '))
                .unwrap();
        }
        None => {}
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let subject = match presented {
        None => None,
        Some(pair) if pair == format!("{}:{}", state.username, state.password) => {
            Some(state.username.clone())
        }
        Some(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid credentials"}]}"#,
            )
                .into_response();
        }
    };
    // Anonymous callers get a token without access, as real services do
    // for private repositories, or pull access for public ones.
    let anonymous_pull = subject.is_none() && state.anonymous_pull.load(Ordering::SeqCst);
    let mut access = Vec::new();
    if subject.is_some() || anonymous_pull {
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if key != "scope" {
                continue;
            }
            for scope in value.split(' ') {
                let mut parts = scope.splitn(3, ':');
                if let (Some("repository"), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    let actions = actions
                        .split(',')
                        .filter(|a| subject.is_some() || *a == "pull")
                        .map(str::to_owned)
                        .collect();
                    access.push((name.to_owned(), actions));
                }
            }
        }
    }
    let token = state
        .signer
        .token(subject.as_deref().unwrap_or("anonymous"), &access);
    (
        [("content-type", "application/json")],
        match *state.reply.lock().unwrap() {
            TokenReply::Token => serde_json::json!({"token": token, "expires_in": 600}),
            TokenReply::AccessTokenOnly => serde_json::json!({"access_token": token}),
            TokenReply::TokenOnly => serde_json::json!({ "token": token }),
            TokenReply::Lifetime(seconds) => {
                serde_json::json!({"token": token, "expires_in": seconds})
            }
        }
        .to_string(),
    )
        .into_response()
}
