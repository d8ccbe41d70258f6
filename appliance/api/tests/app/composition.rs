//! The composition root: named background tasks, ordered shutdown, and
//! changes that fail closed when their audit record cannot be written.

use std::time::Duration;

use serde_json::json;

use crate::support::{Started, call, health, start};

#[tokio::test(flavor = "multi_thread")]
async fn a_background_task_that_stops_early_turns_health_to_degraded_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let Started { mut app, stop, .. } = start(&dir).await;
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
    let Started { app, stop: _stop, .. } = start(&dir).await;
    let (store, vault) = (app.state().store.clone(), app.state().vault.clone());
    assert!(!vault.is_sealed());
    app.shutdown().await.unwrap();
    assert!(vault.is_sealed(), "the vault is sealed on the way out");
    assert!(store.read(tether_domain::audit::verify).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_audit_record_cannot_be_written_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let Started { app, stop, admin_token: token } = start(&dir).await;
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
