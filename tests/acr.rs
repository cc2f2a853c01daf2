//! `source.azure_acr`: a managed-identity token from a stand-in for the
//! instance metadata service, exchanged at a stand-in for ACR's
//! `/oauth2/exchange` for a refresh token, which the real test registry's
//! token service (the harness's) then accepts as the password of ACR's
//! refresh-token user.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use support::image::TestImage;
use support::{StepOutput, TestRegistry, run_step_env};

const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";
const REFRESH: &str = "acr-refresh-token-secret";
const AAD: &str = "aad-access-token-secret";

fn parse_form(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn json_answer(value: serde_json::Value) -> axum::response::Response {
    ([("content-type", "application/json")], value.to_string()).into_response()
}

/// What the stand-ins were asked.
#[derive(Default)]
struct Seen {
    imds: Vec<HashMap<String, String>>,
    exchanges: Vec<HashMap<String, String>>,
}

/// The stand-ins: IMDS (`fail_imds` answers 500) and the exchange
/// (`fail_exchange` answers 401); their base URLs.
fn stand_ins(
    fail_imds: bool,
    fail_exchange: bool,
) -> (
    String,
    String,
    Arc<Mutex<Seen>>,
    Vec<tokio::sync::oneshot::Sender<()>>,
) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let imds = axum::Router::new()
        .route(
            "/metadata/identity/oauth2/token",
            get(
                move |State(seen): State<Arc<Mutex<Seen>>>,
                      headers: HeaderMap,
                      RawQuery(query): RawQuery| async move {
                    let query = parse_form(query.as_deref().unwrap_or_default());
                    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
                        return (StatusCode::BAD_REQUEST, "Metadata header missing")
                            .into_response();
                    }
                    seen.lock().unwrap().imds.push(query);
                    if fail_imds {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "identity not found")
                            .into_response();
                    }
                    json_answer(json!({"access_token": AAD, "expires_on": "1900000000"}))
                },
            ),
        )
        .with_state(seen.clone());
    let exchange = axum::Router::new()
        .route(
            "/oauth2/exchange",
            post(
                move |State(seen): State<Arc<Mutex<Seen>>>, body: String| async move {
                    let form = parse_form(&body);
                    let good = form.get("access_token").map(String::as_str) == Some(AAD)
                        && form.get("grant_type").map(String::as_str) == Some("access_token");
                    seen.lock().unwrap().exchanges.push(form);
                    if fail_exchange || !good {
                        return (
                            StatusCode::UNAUTHORIZED,
                            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                        )
                            .into_response();
                    }
                    json_answer(json!({"refresh_token": REFRESH}))
                },
            ),
        )
        .with_state(seen.clone());
    let (imds_port, a) = support::serve(imds);
    let (exchange_port, b) = support::serve(exchange);
    (
        format!("http://127.0.0.1:{imds_port}"),
        format!("http://127.0.0.1:{exchange_port}/oauth2/exchange"),
        seen,
        vec![a, b],
    )
}

/// The registry's host and its token service's.
fn acr_hosts(registry: &TestRegistry) -> Vec<String> {
    let token = registry.token_server.as_ref().expect("a token registry");
    vec![registry.host(), format!("127.0.0.1:{}", token.port)]
}

fn check(
    registry: &TestRegistry,
    imds: &str,
    exchange: &str,
    extra: serde_json::Value,
) -> StepOutput {
    // The loopback registry and its token service are no ACR hosts: the
    // source names them, as it would a custom domain.
    let mut source = json!({"repository": registry.repo("acr/app"), "tag": "latest",
                            "azure_acr": true, "azure_acr_hosts": acr_hosts(registry)});
    for (k, v) in extra.as_object().unwrap() {
        source[k] = v.clone();
    }
    run_step_env(
        "check",
        &[],
        &[
            ("REGISTRY_IMAGE_AZURE_IMDS_URL", imds),
            ("REGISTRY_IMAGE_AZURE_EXCHANGE_URL", exchange),
        ],
        &json!({"source": source}),
    )
}

#[test]
fn a_managed_identity_token_becomes_registry_credentials() {
    let registry = TestRegistry::token(ACR_USER, REFRESH);
    let digest = registry.push("acr/app", "latest", &TestImage::seeded("acr"));
    let (imds, exchange, seen, _servers) = stand_ins(false, false);

    // A user-assigned identity and an explicit tenant.
    let out = check(
        &registry,
        &imds,
        &exchange,
        json!({"azure_client_id": "client-1", "azure_tenant_id": "tenant-1"}),
    );
    assert_eq!(
        support::versions(&out),
        [("latest".to_owned(), digest.clone())]
    );
    for secret in [AAD, REFRESH] {
        assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));
    }
    {
        let seen = seen.lock().unwrap();
        let asked = &seen.imds[0];
        assert_eq!(asked["resource"], "https://management.azure.com/");
        assert_eq!(asked["client_id"], "client-1");
        let exchanged = &seen.exchanges[0];
        assert_eq!(exchanged["tenant"], "tenant-1");
        assert_eq!(exchanged["service"], registry.host());
    }

    // No tenant: the registry's challenge names none, so `common`; the
    // system-assigned identity (no client_id); the US Government cloud.
    let out = check(
        &registry,
        &imds,
        &exchange,
        json!({"insecure": true, "azure_environment": "AzureGovernment"}),
    );
    assert_eq!(support::versions(&out).len(), 1, "{}", out.stderr);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.imds[1]["resource"],
        "https://management.usgovcloudapi.net/"
    );
    assert!(!seen.imds[1].contains_key("client_id"));
    assert_eq!(seen.exchanges[1]["tenant"], "common");
}

#[test]
fn acr_failures_are_one_clear_line() {
    let registry = TestRegistry::token(ACR_USER, REFRESH);
    registry.push("acr/app", "latest", &TestImage::seeded("acr"));
    let (imds, exchange, _seen, _servers) = stand_ins(true, false);
    let out = check(&registry, &imds, &exchange, json!({"azure_tenant_id": "t"}));
    let line = out.error_line();
    assert!(line.contains("cannot authenticate with ACR"), "{line}");
    assert!(
        line.contains("managed identity endpoint (IMDS) answered 500"),
        "{line}"
    );

    let (imds, exchange, _seen, _servers) = stand_ins(false, true);
    let out = check(&registry, &imds, &exchange, json!({"azure_tenant_id": "t"}));
    let line = out.error_line();
    assert!(
        line.contains("ACR token exchange returned status 401"),
        "{line}"
    );
    assert!(!out.stderr.contains(AAD), "{}", out.stderr);
}

#[test]
fn a_flooding_identity_or_exchange_endpoint_is_read_only_to_its_cap() {
    let registry = TestRegistry::token(ACR_USER, REFRESH);
    registry.push("acr/app", "latest", &TestImage::seeded("acr"));
    // 2 GiB of JSON-looking bytes with a 200: read to the 64 KiB cap, then refused.
    let flood = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            support::flood_body(2 << 30, b'{'),
        )
    });
    let (flood_port, _flood) = support::serve(flood);
    let flooding = |path: &str| format!("http://127.0.0.1:{flood_port}{path}");
    let (imds, exchange, _seen, _servers) = stand_ins(false, false);
    let refused_briefly = |out: StepOutput| {
        let line = out.error_line();
        assert!(line.contains("cannot authenticate with ACR"), "{line}");
        let length = line.len();
        assert!(
            length < 1000,
            "the flood reached the error line: {length} bytes"
        );
        assert!(!out.stderr.contains(AAD), "{}", out.stderr);
    };
    let tenant = json!({"azure_tenant_id": "t"});
    let identity = flooding("/metadata/identity/oauth2/token");
    refused_briefly(check(&registry, &identity, &exchange, tenant.clone()));
    refused_briefly(check(
        &registry,
        &imds,
        &flooding("/oauth2/exchange"),
        tenant,
    ));
}

/// A server that records every request it gets (method and path) and
/// answers 200 `{}`: where nothing of Azure's may arrive.
fn recorder() -> (
    String,
    Arc<Mutex<Vec<String>>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .fallback(
            |State(got): State<Arc<Mutex<Vec<String>>>>,
             request: axum::extract::Request| async move {
                got.lock()
                    .unwrap()
                    .push(format!("{} {}", request.method(), request.uri()));
                json_answer(json!({"refresh_token": REFRESH, "access_token": AAD}))
            },
        )
        .with_state(got.clone());
    let (port, stop) = support::serve(app);
    (format!("127.0.0.1:{port}"), got, stop)
}

#[test]
fn azure_tokens_go_only_to_acr_hosts_or_hosts_the_source_names() {
    let registry = TestRegistry::token(ACR_USER, REFRESH);
    registry.push("acr/app", "latest", &TestImage::seeded("acr"));
    let (imds, exchange, seen, _servers) = stand_ins(false, false);

    // A registry that is neither ACR's nor named: nothing is asked of the
    // identity endpoint, nothing is exchanged, one line says why.
    let out = run_step_env(
        "check",
        &[],
        &[
            ("REGISTRY_IMAGE_AZURE_IMDS_URL", &imds),
            ("REGISTRY_IMAGE_AZURE_EXCHANGE_URL", &exchange),
        ],
        &json!({"source": {"repository": registry.repo("acr/app"), "tag": "latest",
                           "azure_acr": true}}),
    );
    let line = out.error_line();
    assert!(line.contains("nothing was sent"), "{line}");
    assert!(
        line.contains("is not one of Azure's registry hosts"),
        "{line}"
    );
    assert!(line.contains("source.azure_acr_hosts"), "{line}");
    {
        let seen = seen.lock().unwrap();
        assert!(seen.imds.is_empty() && seen.exchanges.is_empty());
    }

    // The registry named, but its token realm on a host that is not: the
    // refresh token is not sent to the realm.
    let out = check(
        &registry,
        &imds,
        &exchange,
        json!({"azure_acr_hosts": [registry.host()]}),
    );
    let line = out.error_line();
    assert!(line.contains("refusing token realm"), "{line}");
    assert!(line.contains("source.azure_acr_hosts"), "{line}");
    assert!(!out.stderr.contains(REFRESH) && !out.stderr.contains(AAD));

    // An exchange that redirects elsewhere: not followed, so the recorder
    // (the redirect's target) gets nothing.
    let (target, got, _stop) = recorder();
    let redirecting = axum::Router::new().fallback(move || {
        let to = format!("http://{target}/oauth2/exchange");
        async move { (StatusCode::TEMPORARY_REDIRECT, [("location", to)]) }
    });
    let (redirect_port, _redirect) = support::serve(redirecting);
    let out = check(
        &registry,
        &imds,
        &format!("http://127.0.0.1:{redirect_port}/oauth2/exchange"),
        json!({}),
    );
    let line = out.error_line();
    assert!(line.contains("307 (a redirect): not followed"), "{line}");
    assert!(got.lock().unwrap().is_empty(), "{:?}", got.lock().unwrap());
    assert!(!out.stderr.contains(AAD));
}

#[test]
fn a_copy_within_an_acr_registry_keeps_the_azure_credentials() {
    let registry = TestRegistry::token(ACR_USER, REFRESH);
    let image = TestImage::seeded("acr-copy");
    let digest = registry.push("acr/app", "latest", &image);
    let (imds, exchange, seen, _servers) = stand_ins(false, false);
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_step_env(
        "out",
        &[dir.path().to_str().unwrap()],
        &[
            ("REGISTRY_IMAGE_AZURE_IMDS_URL", &imds),
            ("REGISTRY_IMAGE_AZURE_EXCHANGE_URL", &exchange),
        ],
        &json!({"source": {"repository": registry.repo("acr/promoted"), "tag": "prod",
                           "azure_acr": true, "azure_acr_hosts": acr_hosts(&registry)},
                "params": {"copy": {"from": format!("{}@{digest}", registry.repo("acr/app"))}}}),
    );
    assert_eq!(
        out.json()["version"]["digest"],
        digest.as_str(),
        "{}",
        out.stderr
    );
    assert_eq!(
        registry.digest_of("acr/promoted", "prod").as_deref(),
        Some(digest.as_str())
    );
    // The origin was read as the ACR user too: two logins, one per side.
    assert_eq!(seen.lock().unwrap().exchanges.len(), 2);
}
