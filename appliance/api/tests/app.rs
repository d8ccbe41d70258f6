//! The composition root, started in process on loopback port 0 from a data
//! directory made the way `tether init` makes one: real store, real TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use tether_api::app::{App, AppHandle, Listeners, init};
use tether_api::config::{CONFIG_FILE, RawConfig};
use tether_base::crypto::CryptoPolicy;
use tether_domain::vault::Choice;

/// An appliance on a fresh data directory, unsealed from its key file, and
/// the sender that stops it.
async fn start(dir: &tempfile::TempDir) -> (AppHandle, tokio::sync::oneshot::Sender<()>) {
    let (app, stop, _) = start_with_token(dir).await;
    (app, stop)
}

/// As [`start`], with the first administrator's API token.
async fn start_with_token(dir: &tempfile::TempDir) -> (AppHandle, tokio::sync::oneshot::Sender<()>, String) {
    let data = dir.path().join("data");
    let key_file = dir.path().join("unseal.key");
    let (d, k) = (data.clone(), key_file.clone());
    // It waits on the store's writer: off the runtime, as `serve --dev` calls it.
    let outcome = tokio::task::spawn_blocking(move || {
        init::initialise(&d, &[], CryptoPolicy::STANDARD, Choice::KeyFile, Some(&k))
    })
    .await
    .unwrap()
    .unwrap();
    let mut raw = RawConfig::from_file(&data.join(CONFIG_FILE), false).unwrap();
    raw.unseal_key_file = Some(key_file.display().to_string());
    let config = Arc::new(raw.validate(data).unwrap());
    let listeners = Listeners {
        console: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        workers: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let app = App::start(config, listeners, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    (app, stop, outcome.admin_token)
}

async fn health(app: &AppHandle) -> Value {
    let ca = std::fs::read_to_string(&app.ready().ca_file).unwrap();
    let config = tether_base::tls::client(&ca, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap();
    let client = tether_base::tls::https_client(config, Duration::from_secs(10)).unwrap();
    let url = format!("https://{}/healthz", app.ready().console);
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_background_task_that_stops_early_turns_health_to_degraded_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut app, stop) = start(&dir).await;
    let before = health(&app).await;
    assert_eq!(before["status"], "ok", "{before}");
    assert!(before.get("tasks_stopped").is_none(), "{before}");

    app.spawn("doomed", async {});
    let tasks = app.state().tasks.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.stopped_early().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the task's end is seen");
    let after = health(&app).await;
    assert_eq!(after["status"], "degraded", "{after}");
    assert_eq!(after["tasks_stopped"], serde_json::json!(["doomed"]));

    stop.send(()).unwrap();
    app.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_appliance_stops_in_order_and_seals_its_vault() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _stop) = start(&dir).await;
    let (store, vault) = (app.state().store.clone(), app.state().vault.clone());
    assert!(!vault.is_sealed());
    app.shutdown().await.unwrap();
    assert!(vault.is_sealed(), "the vault is sealed on the way out");
    assert!(store.read(tether_domain::audit::verify).is_ok());
}

/// One request through the console router, in process (no TCP, no TLS).
async fn call(router: &axum::Router, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    use tower::ServiceExt;
    let mut request =
        axum::http::Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(axum::body::Body::empty, |b| axum::body::Body::from(b.to_string()));
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_audit_record_cannot_be_written_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let (app, stop, token) = start_with_token(&dir).await;
    let router = tether_api::console_router(app.state().clone());
    // Each change, and the listing that would show it.
    let changes = [
        ("POST", "/api/v1/tasks", json!({"kind": "echo", "input": {"n": 1}}), "/api/v1/tasks"),
        (
            "PUT",
            "/api/v1/secrets/db-password",
            json!({"value": "hunter2", "policy": {"kinds": ["echo"]}}),
            "/api/v1/secrets",
        ),
        ("POST", "/api/v1/tokens", json!({"role": "viewer", "name": "ci-bot"}), "/api/v1/tokens"),
        ("POST", "/api/v1/llm/keys", json!({"models": []}), "/api/v1/llm/keys"),
        ("POST", "/api/v1/workers/enrollment-tokens", json!({}), "/api/v1/workers"),
    ];
    let audit_before = call(&router, &token, "GET", "/api/v1/audit/export", None).await;
    let mut listed = Vec::new();
    for (_, _, _, list) in &changes {
        listed.push(call(&router, &token, "GET", list, None).await);
    }

    app.state().store.refuse_writes_to(Some(tether_domain::audit::LOG_TABLE));
    for (method, path, body, _) in &changes {
        let (status, problem) = call(&router, &token, method, path, Some(body.clone())).await;
        assert!(status >= 500, "{method} {path} fails closed, got {status} {problem}");
        assert!(problem["code"].is_string(), "problem+json: {problem}");
        assert!(!problem.to_string().contains("hunter2"), "no secret in the answer: {problem}");
    }
    app.state().store.refuse_writes_to(None);

    for ((_, path, _, list), before) in changes.iter().zip(listed) {
        assert_eq!(call(&router, &token, "GET", list, None).await, before, "{path} changed nothing");
    }
    assert_eq!(call(&router, &token, "GET", "/api/v1/audit/export", None).await.0, audit_before.0);
    let (_, verified) = call(&router, &token, "GET", "/api/v1/audit/verify", None).await;
    assert_eq!(verified["ok"], true, "{verified}");
    // The store writes again: the same change now goes through.
    let (status, task) = call(&router, &token, "POST", "/api/v1/tasks", Some(changes[0].2.clone())).await;
    assert_eq!(status, 201, "{task}");

    stop.send(()).unwrap();
    app.wait().await.unwrap();
}
