//! A stand-in for the two AWS APIs an ECR login calls, on loopback (tests
//! point the SDK at it with `AWS_ENDPOINT_URL`): STS `AssumeRole` (form
//! POST, XML answer) hands out one set of keys per role, and ECR
//! `GetAuthorizationToken` (JSON 1.1) answers with basic credentials of a
//! real local registry. Every call records which access key signed it.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

#[derive(Default)]
struct MockState {
    /// (call, access key that signed it, session token sent)
    calls: Vec<(String, String, String)>,
    registry_endpoint: String,
    registry_password: String,
}

pub struct AwsMock {
    pub port: u16,
    state: Arc<Mutex<MockState>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The keys STS hands out for a role: derived from its name, so tests know
/// which hop signed what.
pub fn role_keys(role_arn: &str) -> (String, String, String) {
    let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    (
        format!("AKID{}", name.to_uppercase().replace('-', "")),
        format!("secret-of-{name}-canary"),
        format!("session-of-{name}-canary"),
    )
}

impl AwsMock {
    /// ECR logins get `AWS:<registry_password>` for `registry_endpoint`
    /// (e.g. `http://127.0.0.1:5000`).
    pub fn start(registry_endpoint: &str, registry_password: &str) -> Self {
        let state = Arc::new(Mutex::new(MockState {
            registry_endpoint: registry_endpoint.to_owned(),
            registry_password: registry_password.to_owned(),
            ..Default::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let (port, tx) = super::serve(app);
        AwsMock {
            port,
            state,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points the AWS SDK at this mock (and never at
    /// instance metadata).
    pub fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// The calls so far: (operation, signing access key, session token).
    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().calls.clear();
    }
}

impl Drop for AwsMock {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The region a SigV4 `Authorization` header's credential scope names.
fn signing_region(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or_default()
        .to_owned()
}

async fn handle(
    State(state): State<Arc<Mutex<MockState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signer = header("authorization")
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let token = header("x-amz-security-token");
    let target = header("x-amz-target");
    // ECR Public (`SpencerFrontendService`, us-east-1 only): one
    // `authorizationData` object, no endpoint (the registry is
    // public.ecr.aws), as the ecr-public API reference shows.
    if target == "SpencerFrontendService.GetAuthorizationToken" {
        let password = {
            let mut s = state.lock().unwrap();
            s.calls.push((
                format!(
                    "ecr-public GetAuthorizationToken {}",
                    signing_region(&headers)
                ),
                signer,
                token,
            ));
            s.registry_password.clone()
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        let body = serde_json::json!({"authorizationData": {
            "authorizationToken": token, "expiresAt": 1.9e9,
        }});
        return (
            [("content-type", "application/x-amz-json-1.1")],
            body.to_string(),
        )
            .into_response();
    }
    if target.ends_with("GetAuthorizationToken") {
        let (endpoint, password) = {
            let mut s = state.lock().unwrap();
            s.calls
                .push(("GetAuthorizationToken".into(), signer, token));
            (s.registry_endpoint.clone(), s.registry_password.clone())
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        let body = serde_json::json!({"authorizationData": [{
            "authorizationToken": token,
            "expiresAt": 1.9e9,
            "proxyEndpoint": endpoint,
        }]});
        return (
            [("content-type", "application/x-amz-json-1.1")],
            body.to_string(),
        )
            .into_response();
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if field("Action") == "AssumeRole" {
        let arn = field("RoleArn");
        state
            .lock()
            .unwrap()
            .calls
            .push((format!("AssumeRole {arn}"), signer, token));
        if arn.contains("denied") {
            let body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                        <Message>not allowed to assume this role</Message></Error>\
                        <RequestId>1</RequestId></ErrorResponse>";
            return (StatusCode::FORBIDDEN, [("content-type", "text/xml")], body).into_response();
        }
        let (key, secret, session) = role_keys(&arn);
        let body = format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId>\
             <SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{session}</SessionToken>\
             <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
             <AssumedRoleUser><AssumedRoleId>AROA:x</AssumedRoleId><Arn>{arn}/x</Arn>\
             </AssumedRoleUser></AssumeRoleResult>\
             <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"
        );
        return ([("content-type", "text/xml")], body).into_response();
    }
    (StatusCode::BAD_REQUEST, "unknown AWS call").into_response()
}
