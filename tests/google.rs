//! `source.google_workload_identity`: the worker's service account token
//! from a stand-in of the GCE metadata server (it copies the real one's
//! contract: `GET /computeMetadata/v1/instance/service-accounts/default/
//! token` only with `Metadata-Flavor: Google`, answered with that header
//! and `{"access_token", "expires_in", "token_type"}`; cloud.google.com/
//! compute/docs/access/authenticate-workloads), optionally exchanged at a
//! stand-in of the IAM credentials API (`POST /v1/projects/-/
//! serviceAccounts/<email>:generateAccessToken` with the bearer token and
//! a `scope` list, answered `{"accessToken", "expireTime"}`; cloud.google.
//! com/iam/docs/reference/credentials/rest), becomes the password of
//! `oauth2accesstoken` at the real test registry's token service.

mod support;

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use support::image::{TestImage, write_oci_layout};
use support::{StepOutput, TestRegistry, run_step_env};

const USER: &str = "oauth2accesstoken";
const METADATA_TOKEN: &str = "ya29.metadata-token-canary";
const IMPERSONATED_TOKEN: &str = "ya29.impersonated-token-canary";
const ACCOUNT: &str = "pusher@my-project.iam.gserviceaccount.com";

/// How the metadata stand-in answers.
#[derive(Clone, Copy, PartialEq)]
enum Metadata {
    /// As the real server does.
    Token,
    /// A token, but without `Metadata-Flavor: Google` (not the server).
    NoFlavor,
    /// 307 to the recorder: a redirect is never followed.
    Redirect,
}

/// What the stand-ins (and the recorder) were asked: (path, authorization, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

struct StandIns {
    metadata: String,
    iam: String,
    seen: Seen,
    recorded: Seen,
    _servers: Vec<tokio::sync::oneshot::Sender<()>>,
}

fn record(seen: &Seen, request: &Request, body: String) {
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.lock()
        .unwrap()
        .push((request.uri().to_string(), auth, body));
}

fn stand_ins(mode: Metadata) -> StandIns {
    let seen: Seen = Arc::default();
    let recorded: Seen = Arc::default();
    let recorder = axum::Router::new()
        .fallback(|State(seen): State<Seen>, request: Request| async move {
            record(&seen, &request, String::new());
            "recorded"
        })
        .with_state(recorded.clone());
    let (recorder_port, a) = support::serve(recorder);
    let metadata = axum::Router::new()
        .fallback(
            move |State(seen): State<Seen>, request: Request| async move {
                let flavored = request
                    .headers()
                    .get("metadata-flavor")
                    .is_some_and(|v| v == "Google");
                record(&seen, &request, String::new());
                let path = request.uri().path();
                if !flavored
                    || path != "/computeMetadata/v1/instance/service-accounts/default/token"
                {
                    return (StatusCode::FORBIDDEN, "missing Metadata-Flavor").into_response();
                }
                let token = json!({"access_token": METADATA_TOKEN, "expires_in": 3599,
                               "token_type": "Bearer"})
                .to_string();
                match mode {
                    Metadata::Token => ([("metadata-flavor", "Google")], token).into_response(),
                    Metadata::NoFlavor => token.into_response(),
                    Metadata::Redirect => (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(
                            "location",
                            format!("http://127.0.0.1:{recorder_port}/stolen"),
                        )],
                    )
                        .into_response(),
                }
            },
        )
        .with_state(seen.clone());
    let iam = axum::Router::new()
        .fallback(|State(seen): State<Seen>, request: Request| async move {
            let (parts, body) = request.into_parts();
            let body =
                String::from_utf8(axum::body::to_bytes(body, 1 << 16).await.unwrap().to_vec())
                    .unwrap();
            let request = Request::from_parts(parts, axum::body::Body::empty());
            record(&seen, &request, body.clone());
            let bearer = format!("Bearer {METADATA_TOKEN}");
            let authorized = request
                .headers()
                .get("authorization")
                .is_some_and(|v| *v == *bearer);
            let path = request.uri().path().to_owned();
            if !authorized || !path.ends_with(":generateAccessToken") {
                return (StatusCode::UNAUTHORIZED, r#"{"error":{"code":401}}"#).into_response();
            }
            json!({"accessToken": IMPERSONATED_TOKEN, "expireTime": "2030-01-01T00:00:00Z"})
                .to_string()
                .into_response()
        })
        .with_state(seen.clone());
    let (metadata_port, b) = support::serve(metadata);
    let (iam_port, c) = support::serve(iam);
    StandIns {
        metadata: format!("http://127.0.0.1:{metadata_port}"),
        iam: format!("http://127.0.0.1:{iam_port}"),
        seen,
        recorded,
        _servers: vec![a, b, c],
    }
}

/// The registry's host and its token service's: loopback hosts are no
/// Google hosts, so the source names them, as it would another domain.
fn named_hosts(registry: &TestRegistry) -> Vec<String> {
    let token = registry.token_server.as_ref().expect("a token registry");
    vec![registry.host(), format!("127.0.0.1:{}", token.port)]
}

fn step(name: &str, dir: &str, stand_ins: &StandIns, request: Value) -> StepOutput {
    let out = run_step_env(
        name,
        &[dir],
        &[
            ("REGISTRY_IMAGE_GCE_METADATA_URL", &stand_ins.metadata),
            ("REGISTRY_IMAGE_GOOGLE_IAM_URL", &stand_ins.iam),
        ],
        &request,
    );
    out.assert_none_leaked(&[METADATA_TOKEN, IMPERSONATED_TOKEN], name);
    out
}

fn source(registry: &TestRegistry, hosts: Vec<String>, extra: Value) -> Value {
    let mut source = json!({"repository": registry.repo("gar/app"), "tag": "latest",
                            "google_workload_identity": true,
                            "google_registry_hosts": hosts});
    for (key, value) in extra.as_object().unwrap() {
        source[key] = value.clone();
    }
    source
}

#[test]
fn the_workers_service_account_logs_in_to_google_registries() {
    let stand_ins = stand_ins(Metadata::Token);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    write_oci_layout(
        &work.path().join("layout"),
        "latest",
        &TestImage::seeded("gar"),
    );

    // The worker's own account: out, check, in.
    let registry = TestRegistry::token(USER, METADATA_TOKEN);
    let own = source(&registry, named_hosts(&registry), json!({}));
    let out = step(
        "out",
        dir,
        &stand_ins,
        json!({"source": own, "params": {"image": "layout"}}),
    );
    let digest = out.json()["version"]["digest"].clone();
    let checked = step("check", dir, &stand_ins, json!({ "source": own }));
    assert_eq!(checked.json()[0]["digest"], digest);
    let dest = tempfile::tempdir().unwrap();
    let got = step(
        "in",
        dest.path().to_str().unwrap(),
        &stand_ins,
        json!({"source": own, "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(got.success, "{}", got.stderr);
    {
        let seen = stand_ins.seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "one metadata call a step: {seen:?}");
        assert!(
            seen.iter()
                .all(|(path, _, _)| path.starts_with("/computeMetadata/"))
        );
    }

    // Impersonating another account: the IAM API is asked with the
    // worker's token, for the cloud-platform scope.
    let registry = TestRegistry::token(USER, IMPERSONATED_TOKEN);
    let digest = registry.push("gar/app", "latest", &TestImage::seeded("impersonated"));
    let impersonating = source(
        &registry,
        named_hosts(&registry),
        json!({"google_impersonate_service_account": ACCOUNT}),
    );
    let checked = step("check", dir, &stand_ins, json!({ "source": impersonating }));
    assert_eq!(checked.json()[0]["digest"], digest, "{}", checked.stderr);
    let seen = stand_ins.seen.lock().unwrap();
    let (path, auth, body) = seen.last().unwrap();
    assert_eq!(
        path,
        &format!("/v1/projects/-/serviceAccounts/{ACCOUNT}:generateAccessToken")
    );
    assert_eq!(auth, &format!("Bearer {METADATA_TOKEN}"));
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body["scope"],
        json!(["https://www.googleapis.com/auth/cloud-platform"])
    );
}

#[test]
fn google_tokens_go_only_to_google_hosts_or_named_ones() {
    let registry = TestRegistry::token(USER, METADATA_TOKEN);
    registry.push("gar/app", "latest", &TestImage::seeded("guarded"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let check =
        |asked: &StandIns, source: Value| step("check", dir, asked, json!({ "source": source }));

    // A registry the source does not name: nothing is asked of anyone.
    let honest = stand_ins(Metadata::Token);
    let out = check(&honest, source(&registry, vec![], json!({})));
    let line = out.error_line();
    assert!(line.contains("nothing was sent"), "{line}");
    assert!(line.contains("source.google_registry_hosts"), "{line}");
    assert!(honest.seen.lock().unwrap().is_empty());

    // The registry named, its token service not: the realm is refused.
    let out = check(&honest, source(&registry, vec![registry.host()], json!({})));
    let line = out.error_line();
    assert!(line.contains("refusing token realm"), "{line}");

    // A metadata answer that redirects is not followed.
    let redirecting = stand_ins(Metadata::Redirect);
    let out = check(
        &redirecting,
        source(&registry, named_hosts(&registry), json!({})),
    );
    let line = out.error_line();
    assert!(line.contains("(a redirect): not followed"), "{line}");
    assert!(redirecting.recorded.lock().unwrap().is_empty());

    // A server that does not say it is the metadata server.
    let impostor = stand_ins(Metadata::NoFlavor);
    let out = check(
        &impostor,
        source(&registry, named_hosts(&registry), json!({})),
    );
    let line = out.error_line();
    assert!(line.contains("lacks Metadata-Flavor: Google"), "{line}");

    // Fields checked before anything is sent.
    let asked_before = honest.seen.lock().unwrap().len();
    for (extra, says) in [
        (
            json!({"google_impersonate_service_account": "a/../b@c.d"}),
            "source.google_impersonate_service_account \"a/../b@c.d\": not a service account",
        ),
        (
            json!({"username": "u", "password": "p"}),
            "one login at a time",
        ),
    ] {
        let out = check(&honest, source(&registry, named_hosts(&registry), extra));
        let line = out.error_line();
        assert!(line.contains(says), "{says}: {line}");
    }
    let mut unused = json!({"repository": registry.repo("gar/app"),
                            "google_registry_hosts": [registry.host()]});
    unused["tag"] = json!("latest");
    let out = check(&honest, unused);
    assert!(
        out.error_line()
            .contains("need source.google_workload_identity: true")
    );
    assert_eq!(honest.seen.lock().unwrap().len(), asked_before);
}
