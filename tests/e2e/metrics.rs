//! `GET /metrics`: a scrape after real work (tasks through a real worker,
//! gateway calls to a model server) parsed by the official Prometheus
//! client's OpenMetrics parser, its figures checked against that work;
//! the scrape token's rules; no key secret in any label.

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::{Value, json};

use crate::llm::{call, client_script, python, two_upstreams};

/// A scrape, parsed: family name → type, help and samples.
fn parse(text: &str) -> Value {
    let mut parser = Command::new(python())
        .arg(client_script("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    parser.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `sample` in `family` whose labels include `labels`.
fn value(families: &Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"].as_array()?.iter().find_map(|s| {
        let matches = s[0] == sample && labels.iter().all(|(k, v)| s[1][*k] == *v);
        matches.then(|| s[2].as_f64().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_after_real_work_parses_and_counts_that_work() {
    let (a, _upstream, secret) = two_upstreams(&["llama3"], "unrestricted").await;
    let api = a.api();
    let (_, keys) = api.get("/api/v1/llm/keys").await;
    let key_id = keys[0]["id"].as_str().unwrap().to_owned();
    let _worker = a.worker("w", &[], None).await;
    let ok = api.submit("echo", json!({"n": 1}), &[]).await;
    let refused = api.submit("shell", json!("true"), &[]).await;
    assert_eq!(api.wait(&ok, 30).await["state"], "succeeded");
    assert_eq!(api.wait(&refused, 30).await["state"], "failed");
    let ask = json!({"model": "llama3", "messages": [{"role": "user", "content": "two words"}]});
    assert_eq!(call(&a, &secret, &ask).await.0, 200);
    let (s, _) = call(&a, &secret, &json!({"model": "made-up", "messages": []})).await;
    assert_eq!(s, 404, "a model no upstream serves");

    // The scrape token: a viewer's. A developer's token is refused, and
    // so is no token at all.
    let (s, v) = api.post("/api/v1/tokens", &json!({"role": "viewer", "name": "prometheus"})).await;
    assert_eq!(s, 201, "{v}");
    let scraper = api.with_token(v["token"].as_str());
    let (s, v) = api.post("/api/v1/tokens", &json!({"role": "developer", "name": "dev"})).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api.with_token(v["token"].as_str()).get("/metrics").await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    assert_eq!(api.with_token(None).get("/metrics").await.0, 401);

    let (s, content_type, body) = scraper.raw(Method::GET, "/metrics", Vec::new(), None).await;
    assert_eq!(s, 200, "{body}");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = body.as_str().unwrap();
    assert!(!text.contains(&secret), "no key secret in a scrape");
    let m = parse(text);
    let one = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        value(&m, family, sample, labels).unwrap_or_else(|| panic!("no {sample} {labels:?} in the scrape:\n{text}"))
    };
    assert_eq!(one("tether_tasks_created", "tether_tasks_created_total", &[]), 2.0);
    assert_eq!(one("tether_tasks_finished", "tether_tasks_finished_total", &[("state", "succeeded")]), 1.0);
    assert_eq!(one("tether_tasks_finished", "tether_tasks_finished_total", &[("state", "failed")]), 1.0);
    assert_eq!(one("tether_task_dispatch_seconds", "tether_task_dispatch_seconds_count", &[]), 2.0);
    for state in ["ready", "leased", "delayed"] {
        assert_eq!(one("tether_tasks", "tether_tasks", &[("state", state)]), 0.0, "{state}: all done");
    }
    assert_eq!(m["tether_tasks"]["type"], "gauge");
    assert_eq!(m["tether_tasks_created"]["type"], "counter");
    assert_eq!(m["tether_task_dispatch_seconds"]["type"], "histogram");
    assert_eq!(one("tether_workers_online", "tether_workers_online", &[]), 1.0);
    assert_eq!(one("tether_workers_enrolled", "tether_workers_enrolled", &[]), 1.0);
    let handshakes = [("listener", "worker"), ("result", "ok")];
    assert!(one("tether_tls_handshakes", "tether_tls_handshakes_total", &handshakes) >= 1.0);
    assert!(
        one("tether_tls_handshakes", "tether_tls_handshakes_total", &[("listener", "console"), ("result", "ok")])
            >= 1.0
    );
    assert_eq!(one("tether_vault_sealed", "tether_vault_sealed", &[]), 0.0);
    assert!(one("tether_audit_records", "tether_audit_records", &[]) > 10.0);
    let served = [("model", "llama3"), ("key", key_id.as_str()), ("status", "200")];
    assert_eq!(one("tether_llm_requests", "tether_llm_requests_total", &served), 1.0);
    let unserved = [("model", "-"), ("key", key_id.as_str()), ("status", "404")];
    assert_eq!(one("tether_llm_requests", "tether_llm_requests_total", &unserved), 1.0, "made-up names count as -");
    assert!(!text.contains("made-up"), "a client's made-up model name is no label");
    let completion = [("model", "llama3"), ("kind", "completion")];
    assert!(one("tether_llm_tokens", "tether_llm_tokens_total", &completion) >= 1.0);
    assert_eq!(one("tether_llm_request_seconds", "tether_llm_request_seconds_count", &[("model", "llama3")]), 1.0);
    assert!(one("process_resident_memory_bytes", "process_resident_memory_bytes", &[]) > 1e6);
    assert!(one("process_open_fds", "process_open_fds", &[]) > 3.0);
    assert!(one("process_start_time_seconds", "process_start_time_seconds", &[]) > 1.7e9);

    // A second scrape sees more work, not a reset.
    let third = api.submit("echo", json!({"n": 3}), &[]).await;
    api.wait(&third, 30).await;
    let (_, _, body) = scraper.raw(Method::GET, "/metrics", Vec::new(), None).await;
    let m = parse(body.as_str().unwrap());
    assert_eq!(value(&m, "tether_tasks_created", "tether_tasks_created_total", &[]), Some(3.0));
}
