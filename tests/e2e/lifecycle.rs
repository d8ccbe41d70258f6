//! Tasks through their whole life, driven as users drive them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::Appliance;

pub(crate) const COMMANDS: &str = r#"
[commands.greet]
argv = ["/bin/echo", "hello", "{name}"]
[commands.greet.params.name]
type = "string"

[commands.fail]
argv = ["/bin/sh", "-c", "echo broken >&2; exit 3"]

[commands.nap]
argv = ["/bin/sleep", "{seconds}"]
[commands.nap.params.seconds]
type = "integer"
min = 0
max = 120
"#;

fn cli(a: &Appliance, args: &[&str]) -> (bool, Value) {
    let out = a.cli(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success(), serde_json::from_str(&text).unwrap_or(Value::String(text.into_owned())))
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_runs_end_to_end_through_the_cli() {
    let a = Appliance::start();
    let _w = a.worker("w1", &[], None).await;
    let (ok, task) =
        cli(&a, &["task", "submit", "--kind", "echo", "--input", r#"{"say":"hi"}"#, "--wait", "30", "--json"]);
    assert!(ok, "{task}");
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["result"], json!({"say": "hi"}));
    let id = task["id"].as_str().unwrap();
    let (ok, got) = cli(&a, &["task", "get", id, "--json"]);
    assert!(ok);
    assert_eq!(got["attempts"], 1);
    let (ok, list) = cli(&a, &["task", "list", "--json"]);
    assert!(ok);
    assert_eq!(list["tasks"][0]["id"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_run_their_fixed_argv_and_fail_cleanly() {
    let a = Appliance::start();
    let _w = a.worker("w1", &[], Some(COMMANDS)).await;
    let api = a.api();
    let greet = api.submit("command", json!({"command": "greet", "params": {"name": "a b; echo pwned"}}), &[]).await;
    let t = api.wait(&greet, 30).await;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["result"]["stdout"], "hello a b; echo pwned\n", "one argument, no shell");

    let fail = api.submit("command", json!({"command": "fail"}), &[]).await;
    let t = api.wait(&fail, 30).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "exit_status");
    assert!(t["error"]["message"].as_str().unwrap().contains("status 3"));

    let unknown = api.submit("command", json!({"command": "rm", "params": {}}), &[]).await;
    let t = api.wait(&unknown, 30).await;
    assert_eq!((t["state"].as_str(), t["error"]["code"].as_str()), (Some("failed"), Some("command_not_allowed")));

    let not_enabled = api.submit("shell", json!("rm -rf /"), &[]).await;
    let t = api.wait(&not_enabled, 30).await;
    assert_eq!(t["error"]["code"], "handler_not_enabled");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_creates_one_task() {
    let a = Appliance::start();
    let api = a.api();
    let body = json!({"kind": "echo", "input": {"n": 1}});
    let key = [("idempotency-key", "order-42")];
    let (s1, first, _) = api.send(reqwest::Method::POST, "/api/v1/tasks", Some(&body), &key).await;
    let (s2, second, h2) = api.send(reqwest::Method::POST, "/api/v1/tasks", Some(&body), &key).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    let other = json!({"kind": "echo", "input": {"n": 2}});
    let (s3, problem, _) = api.send(reqwest::Method::POST, "/api/v1/tasks", Some(&other), &key).await;
    assert_eq!((s3, problem["code"].as_str()), (422, Some("idempotency_conflict")));
    let (_, list) = api.get("/api/v1/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_queued_and_running_tasks() {
    let a = Appliance::start();
    let api = a.api();
    let queued = api.submit("echo", json!({}), &["nobody-has-this"]).await;
    let (s, t) = api.post(&format!("/api/v1/tasks/{queued}/cancel"), &json!({})).await;
    assert_eq!((s, t["state"].as_str()), (200, Some("cancelled")));
    let (s, p) = api.post(&format!("/api/v1/tasks/{queued}/cancel"), &json!({})).await;
    assert_eq!((s, p["code"].as_str()), (409, Some("task_finished")));

    // Heartbeats come at a third of the 3 s lease, so the worker hears of
    // the cancel within about a second.
    let mut w = a.worker("w1", &[], Some(COMMANDS)).await;
    let running = api.submit("command", json!({"command": "nap", "params": {"seconds": 60}}), &[]).await;
    w.expect("task_started", Duration::from_secs(30), |v| {
        v["event"] == "task_started" && v["task_id"] == running.as_str()
    });
    let (s, _) = api.post(&format!("/api/v1/tasks/{running}/cancel"), &json!({})).await;
    assert_eq!(s, 200);
    w.expect("task_cancelled", Duration::from_secs(10), |v| {
        v["event"] == "task_cancelled" && v["task_id"] == running.as_str()
    });
    assert_eq!(api.wait(&running, 1).await["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_route_tasks_to_workers_that_have_them() {
    let a = Appliance::start();
    let mut gpu = a.worker("gpu", &["gpu"], None).await;
    let _plain = a.worker("plain", &[], None).await;
    let api = a.api();
    for _ in 0..3 {
        let id = api.submit("echo", json!({}), &["gpu"]).await;
        gpu.expect("gpu task", Duration::from_secs(30), |v| {
            v["event"] == "task_started" && v["task_id"] == id.as_str()
        });
        assert_eq!(api.wait(&id, 30).await["state"], "succeeded");
    }
}
