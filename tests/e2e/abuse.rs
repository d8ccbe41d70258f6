//! The holes found when the appliance was attacked as an intruder or a
//! malicious insider would, each shown closed: rights that outlive a role,
//! keys that outlive their owner, anonymous input that fills the disk,
//! gateway calls that escape their limits, labels a worker gives itself,
//! guessing spread thin.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tether::worker::client::BrokerClient;

use crate::fake_llm::{Behaviour, FakeLlm};
use crate::harness::{Api, Appliance, count_events, count_failures, eventually, fast_env};

/// The bytes of the audit log as exported.
async fn audit_bytes(api: &Api) -> usize {
    api.get("/api/v1/audit/export").await.1.as_str().unwrap().len()
}

/// `fast_env`, but with the production failure window (a minute).
fn with_minute_window() -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = fast_env().into_iter().filter(|(k, _)| *k != "TETHER_AUDIT_FAILURE_WINDOW").collect();
    env.push(("TETHER_AUDIT_FAILURE_WINDOW", "60s"));
    env
}

fn details<'a>(records: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event_type"] == event_type).map(|r| &r["metadata"]["details"]).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_loses_its_powers_when_the_person_behind_it_loses_theirs() {
    let a = Appliance::start();
    let api = a.api();
    let task = json!({"kind": "echo", "input": {}, "labels": ["nobody"]});

    // An admin with a token of her own and a service token she made.
    let ada = a.person("ada", "admin").await;
    let (s, v) = ada.console.post("/api/v1/tokens", &json!({"role": "admin"})).await;
    assert_eq!(s, 201, "{v}");
    let ada_admin = api.with_token(v["token"].as_str());
    let (s, v) = ada.console.post("/api/v1/tokens", &json!({"role": "developer", "name": "ci-bot"})).await;
    assert_eq!(s, 201, "{v}");
    let ci = api.with_token(v["token"].as_str());
    let (s, v) = ada_admin.post("/api/v1/users", &json!({"name": "made-by-ada", "role": "viewer"})).await;
    assert_eq!(s, 201, "{v}");

    // Demoted to developer: her admin token is gone at once, for every
    // power it had; the developer token she made still works.
    let (s, v, _) = api.send(Method::PUT, "/api/v1/users/ada/role", Some(&json!({"role": "developer"})), &[]).await;
    assert_eq!((s, v["result"].as_str()), (200, Some("done")), "{v}");
    let (s, _) = ada_admin.post("/api/v1/users", &json!({"name": "second-admin", "role": "admin"})).await;
    assert_eq!(s, 401, "no admin made with a demoted admin's token");
    let (s, _) = ada_admin.post("/api/v1/tokens", &json!({"role": "admin", "name": "long-lived", "ttl": "365d"})).await;
    assert_eq!(s, 401, "no service token either");
    assert_eq!(ada_admin.post("/api/v1/sys/backup", &json!({})).await.0, 401, "nor a backup");
    assert_eq!(ci.post("/api/v1/tasks", &task).await.0, 201, "what a developer may carry stays");

    // Disabled: the service token she made stops too.
    let (s, v) = api.post("/api/v1/users/ada/disable", &json!({})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(ci.get("/api/v1/tasks").await.0, 401, "a service token ends with its maker");

    // An officer removed by two-officer approval: her officer token loses
    // the officer's powers the moment the second officer approves.
    let olga = a.person("olga", "security_officer").await;
    let omar = a.person("omar", "security_officer").await;
    let (s, v) = olga.console.post("/api/v1/users/omar/role/approve", &json!({})).await;
    assert_eq!((s, v["role"].as_str()), (200, Some("security_officer")), "{v}");
    let (s, v) = olga.console.post("/api/v1/tokens", &json!({"role": "security_officer"})).await;
    assert_eq!(s, 201, "{v}");
    let olga_token = api.with_token(v["token"].as_str());
    assert_eq!(olga_token.get("/api/v1/llm/prompt-log").await.0, 200);
    let (s, _, _) = olga_token.send(Method::DELETE, "/api/v1/audit/sinks/none", None, &[]).await;
    assert_eq!(s, 404, "allowed, and there is no such sink");
    let (s, v, _) = api.send(Method::PUT, "/api/v1/users/olga/role", Some(&json!({"role": "viewer"})), &[]).await;
    assert_eq!((s, v["result"].as_str()), (200, Some("awaiting_approval")), "{v}");
    let (s, v) = omar.console.post("/api/v1/users/olga/role/approve", &json!({})).await;
    assert_eq!((s, v["role"].as_str()), (200, Some("viewer")), "{v}");
    let (s, _, _) = olga_token.send(Method::DELETE, "/api/v1/audit/sinks/none", None, &[]).await;
    assert_eq!(s, 401, "a removed officer's token deletes no sink");
    let prompt = json!({"prompt": "anything goes"});
    let (s, _, _) = olga_token.send(Method::PUT, "/api/v1/llm/prompts/standard", Some(&prompt), &[]).await;
    assert_eq!(s, 401, "nor rewrites an enforcement prompt");
    assert_eq!(olga_token.get("/api/v1/llm/prompt-log").await.0, 401);

    // Each revocation is in the record of the change that caused it.
    let records = api.audit_log().await;
    let changes = details(&records, "user.role_changed");
    let revoked: Vec<&str> = changes.iter().map(|d| d["tokens_revoked"].as_str().unwrap()).collect();
    assert_eq!(revoked, ["1", "0", "1"], "ada's admin token; omar had none; olga's officer token: {changes:?}");
    let disabled = details(&records, "user.disabled");
    assert_eq!(disabled[0]["tokens_revoked"], "1", "the service token ci-bot");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_virtual_key_works_only_while_its_owner_may_hold_keys() {
    let a = Appliance::start();
    let api = a.api();
    let dora = a.person("dora", "developer").await;
    let dan = a.person("dan", "developer").await;
    let _vic = a.person("vic", "viewer").await;
    let key_of = |person: &crate::harness::Person| {
        let (console, api) = (person.console.clone(), api.clone());
        async move {
            let (s, v) = console.post("/api/v1/llm/keys", &json!({})).await;
            assert_eq!(s, 201, "{v}");
            api.with_token(v["key"].as_str())
        }
    };
    let (dora_key, dan_key) = (key_of(&dora).await, key_of(&dan).await);
    assert_eq!(dora_key.get("/v1/models").await.0, 200);
    assert_eq!(dan_key.get("/v1/models").await.0, 200);

    assert_eq!(api.post("/api/v1/users/dora/disable", &json!({})).await.0, 204);
    let (s, v) = dora_key.get("/v1/models").await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("invalid_api_key")), "a disabled owner's key: {v}");
    let (s, _, _) = api.send(Method::PUT, "/api/v1/users/dan/role", Some(&json!({"role": "viewer"})), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(dan_key.get("/v1/models").await.0, 401, "a viewer holds no keys");

    for owner in ["dora", "vic", "nobody-at-all"] {
        let (s, v) = api.post("/api/v1/llm/keys", &json!({"owner": owner})).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")), "a key for {owner}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_floods_and_huge_inputs_cost_the_disk_a_bounded_amount() {
    let mut a = Appliance::start_with(with_minute_window());
    let api = a.api();
    // HTTP/1.1, whose request line may be as long as this (HTTP/2 answers
    // 431 to a header list over 16 KiB before any route sees it).
    let config = tether_base::tls::client(&a.ca_pem, None, &[b"http/1.1"]).unwrap();
    let http1 = tether_base::tls::https_client(config, Duration::from_secs(30)).unwrap();
    let before = audit_bytes(&api).await;
    let huge_path = format!("/api/v1/tasks/{}", "a".repeat(60 * 1024));
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..301 {
        let response = http1.get(format!("{}{huge_path}", a.console)).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(response.bytes().await.unwrap().len() < 4096, "the answer does not echo the path");
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses, [(401, 300), (429, 1)].into(), "over the window's budget: 429");
    let grown = audit_bytes(&api).await - before;
    assert!(grown < 4 * 1024, "301 anonymous requests wrote {grown} bytes of audit log");
    assert!(a.data_dir().join("tether.reserve").exists(), "the disk reserve is intact");
    assert_eq!(api.with_token(None).get("/healthz").await.1["status"], "ok");

    // Huge input in a request that is refused comes back clipped.
    for body in [
        json!({"kind": "echo", "input": {}, "labels": ["l".repeat(100 * 1024)]}),
        json!({"kind": "echo", "input": {}, "priority": "p".repeat(100 * 1024)}),
    ] {
        let (s, v) = api.post("/api/v1/tasks", &body).await;
        assert_eq!(s, 400, "{}", &v.to_string()[..200]);
        assert!(v.to_string().len() < 4096, "an error echoes at most a few KiB: {}", v.to_string().len());
    }

    // Stopped, the appliance writes what its tallies counted: one record
    // for the window's 300 further failures.
    assert!(a.stop().success());
    a.restart();
    let records = a.api().audit_log().await;
    assert_eq!(count_failures(&records, "auth.failed"), 301);
    assert_eq!(count_events(&records, "auth.failed"), 2);
    let grown = audit_bytes(&a.api()).await - before;
    assert!(grown < 200 * 1024, "the flood, tallied, wrote {grown} bytes");
    eprintln!("301 anonymous requests with 60 KiB paths grew the audit log by {grown} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_gateway_calls_count_against_the_limits_and_store_little() {
    let a = Appliance::start();
    let api = a.api();
    let (s, v) =
        api.post("/api/v1/llm/keys", &json!({"owner": "admin", "models": ["llama3"], "rpm": 20, "tpm": 1000})).await;
    assert_eq!(s, 201, "{v}");
    let key = api.with_token(v["key"].as_str());
    let usage_bytes = || async { api.get("/api/v1/llm/usage").await.1.to_string().len() };
    let (audit_before, usage_before) = (audit_bytes(&api).await, usage_bytes().await);

    let model = "m".repeat(200 * 1024);
    let mut codes = Vec::new();
    for _ in 0..40 {
        let (s, v) = key.post("/v1/chat/completions", &json!({"model": model, "messages": []})).await;
        assert!(v.to_string().len() < 4096, "no answer echoes the model name: {} bytes", v.to_string().len());
        codes.push((s, v["error"]["code"].as_str().unwrap_or_default().to_owned()));
    }
    let refused = codes.iter().filter(|(s, c)| *s == 403 && c == "model_not_allowed").count();
    let limited = codes.iter().filter(|(s, c)| *s == 429 && c == "rate_limit_exceeded").count();
    assert_eq!((refused, limited), (20, 20), "refusals count against rpm 20: {codes:?}");
    let audit_grown = audit_bytes(&api).await - audit_before;
    let usage_grown = usage_bytes().await - usage_before;
    assert!(audit_grown + usage_grown < 200 * 1024, "40 refused calls stored {audit_grown} + {usage_grown} bytes");
    let (_, usage) = api.get("/api/v1/llm/usage").await;
    assert!(usage.as_array().unwrap().iter().all(|r| r["model"] == "-"), "made-up names fold into one row: {usage}");
    eprintln!("40 refused calls with 200 KiB model names stored {audit_grown} + {usage_grown} bytes");
    // Twenty calls over the limit raise one alert for the key, not twenty.
    let (_, alerts) = api.get("/api/v1/alerts").await;
    let limited: Vec<&Value> =
        alerts.as_array().unwrap().iter().filter(|al| al["kind"] == "llm_rate_limited").collect();
    assert_eq!(limited.len(), 1, "once per key: {alerts}");
    assert_eq!(limited[0]["subject"], v["id"], "about the key, by its public id: {alerts}");
    assert_eq!(limited[0]["details"]["owner"], "admin", "{alerts}");

    // max_tokens: a whole number in range, and no more than the key's minute.
    let (s, v) = api.post("/api/v1/llm/keys", &json!({"owner": "admin", "models": ["llama3"], "tpm": 1000})).await;
    assert_eq!(s, 201, "{v}");
    let key = api.with_token(v["key"].as_str());
    let ask =
        |max: Value| json!({"model": "llama3", "max_tokens": max, "messages": [{"role": "user", "content": "hi"}]});
    for bad in [json!(1e12), json!(9_223_372_036_854_775_808u64), json!(-1)] {
        let (s, v) = key.post("/v1/chat/completions", &ask(bad.clone())).await;
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_max_tokens")), "{bad}: {v}");
    }
    let (s, v) = key.post("/v1/chat/completions", &ask(json!(2000))).await;
    assert_eq!(s, 400, "2000 tokens asked of a 1000-a-minute key: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("more than this key may use in a minute"), "{v}");
    let ollama = json!({"model": "llama3", "options": {"num_predict": -5}, "messages": []});
    let (s, v) = key.post("/api/chat", &ollama).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_max_tokens")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_short_is_charged_what_was_streamed() {
    let a = Appliance::start();
    let upstream = FakeLlm::start().await;
    let body = json!({"kind": "openai", "url": upstream.url(), "models": ["llama3"]});
    assert_eq!(a.api().send(Method::PUT, "/api/v1/llm/upstreams/vllm", Some(&body), &[]).await.0, 200);
    let (s, v) =
        a.api().post("/api/v1/llm/keys", &json!({"owner": "admin", "tpm": 100, "enforcement": "unrestricted"})).await;
    assert_eq!(s, 201, "{v}");
    let secret = v["key"].as_str().unwrap().to_owned();
    upstream.behave(Behaviour { chunk_delay: Duration::from_millis(20), ..Behaviour::default() });
    // 39 words: an answer of 40 tokens ("echo:" and the words), a prompt of about 39.
    let words: Vec<String> = (1..=39).map(|i| format!("w{i:02}")).collect();
    let ask = json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": words.join(" ")}]});
    let client = tether_base::tls::https_client(
        tether_base::tls::client(&a.ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap(),
        Duration::from_secs(30),
    )
    .unwrap();
    let mut response =
        client.post(format!("{}/v1/chat/completions", a.console)).bearer_auth(&secret).json(&ask).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let (mut got, mut buffer) = (0, String::new());
    while got < 38 {
        let chunk = response.chunk().await.unwrap().expect("the stream goes on");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data = event.trim().strip_prefix("data: ").unwrap_or_default();
            let content = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned));
            got += usize::from(content.is_some_and(|c| !c.is_empty()));
        }
    }
    drop(response);
    drop(client);

    // Charged to usage: the prompt and what was streamed.
    let row = || async {
        let (_, usage) = a.api().get("/api/v1/llm/usage").await;
        usage.as_array().unwrap().iter().find(|r| r["model"] == "llama3").cloned().unwrap_or_default()
    };
    eventually("the cut stream is counted", Duration::from_secs(10), || async { row().await["requests"] == 1 }).await;
    let row = row().await;
    let completion = row["completion_tokens"].as_u64().unwrap();
    assert!((38..=40).contains(&completion), "charged {completion} completion tokens for 38 streamed: {row}");
    assert!(row["prompt_tokens"].as_u64().unwrap() >= 30, "and the prompt: {row}");
    // And to the key's minute: the next call does not fit in 100.
    let (s, v) = a.api().with_token(Some(&secret)).post("/v1/chat/completions", &ask).await;
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_gets_the_labels_its_token_gives_never_those_it_asks_for() {
    let a = Appliance::start();
    let trust = tether_base::tls::Trust::Ca(&a.ca_pem);
    let asked = vec!["secure".to_string(), "gpu".to_string()];
    let plain = a.enrollment_token(None).await;
    let (_, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let enrolled = BrokerClient::enroll(&a.worker_gateway, trust, &plain, &csr, &asked).await.unwrap();
    assert!(enrolled.labels.is_empty(), "{:?}", enrolled.labels);
    let gpu_only = a.enrollment_token(Some(&["gpu"])).await;
    let (_, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let second = BrokerClient::enroll(&a.worker_gateway, trust, &gpu_only, &csr, &asked).await.unwrap();
    assert_eq!(second.labels, ["gpu"]);

    // An admin gives labels later; nobody else may.
    let path = format!("/api/v1/workers/{}/labels", enrolled.worker_id);
    let developer = a.person("devi", "developer").await;
    let (s, _) = developer.console.send(Method::PUT, &path, Some(&json!({"labels": ["secure"]}))).await;
    assert_eq!(s, 403);
    let (s, v, _) = a.api().send(Method::PUT, &path, Some(&json!({"labels": ["secure"]})), &[]).await;
    assert_eq!((s, v["labels"].clone()), (200, json!(["secure"])), "{v}");
    let (_, workers) = a.api().get("/api/v1/workers").await;
    let labels: Vec<&Value> = workers.as_array().unwrap().iter().map(|w| &w["labels"]).collect();
    assert!(labels.contains(&&json!(["secure"])) && labels.contains(&&json!(["gpu"])), "{workers}");
    let records = a.api().audit_log().await;
    assert_eq!(details(&records, "worker.enrolled")[0]["labels_not_granted"], "secure,gpu");
    assert_eq!(count_events(&records, "worker.labels_changed"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_spread_over_many_accounts_and_addresses_raises_an_alert() {
    let a = Appliance::start();
    let _someone = a.person("someone", "developer").await;
    // 100 failures over 75 accounts from 50 loopback addresses: none of
    // them over its own threshold.
    let clients: Vec<reqwest::Client> = (0..50u8)
        .map(|i| {
            let config = tether_base::tls::client(&a.ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap();
            reqwest::Client::builder()
                .tls_backend_preconfigured(config)
                .no_proxy()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + i)))
                .build()
                .unwrap()
        })
        .collect();
    for i in 0..100usize {
        let body = json!({"username": format!("user{}", i % 75), "password": "not the password"});
        let response =
            clients[i % 50].post(format!("{}/api/v1/auth/login", a.console)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 401, "no address or account is throttled");
    }
    let (_, alerts) = a.api().get("/api/v1/alerts").await;
    // Only this kind: the machine's own disk may be full enough for a
    // disk_usage alert of its own.
    let logins: Vec<&Value> = alerts.as_array().unwrap().iter().filter(|al| al["kind"] == "failed_logins").collect();
    assert_eq!(logins.len(), 1, "{alerts}");
    let alert = logins[0];
    assert_eq!(alert["subject"], "appliance", "{alert}");
    assert_eq!(alert["details"]["addresses"], "50", "{alert}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_answered_with_their_status() {
    let a = Appliance::start();
    let client = |alpn: &[&[u8]]| {
        let config = tether_base::tls::client(&a.ca_pem, None, alpn).unwrap();
        tether_base::tls::https_client(config, Duration::from_secs(30)).unwrap()
    };
    // A body over max_body_bytes (1 MiB): 413 over either protocol, not a
    // reset stream.
    let big = json!({"kind": "echo", "input": {"x": "a".repeat(2 << 20)}});
    for (alpn, version) in
        [(&[&b"h2"[..]][..], reqwest::Version::HTTP_2), (&[&b"http/1.1"[..]][..], reqwest::Version::HTTP_11)]
    {
        let response = client(alpn)
            .post(format!("{}/api/v1/tasks", a.console))
            .bearer_auth(&a.admin_token)
            .json(&big)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{version:?}: an answer, not {}", tether_base::tls::error_chain(&e)));
        assert_eq!((response.version(), response.status().as_u16()), (version, 413));
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "payload_too_large");
    }
    // Over HTTP/2 the unread rest of the upload is then reset with NO_ERROR,
    // which ends a stream whose answer is complete (RFC 9113, 8.1); CANCEL,
    // which some clients (nginx) take as fatal, was sent before.
    let (status, reset) = h2_upload_refused(&a, 2 << 20).await;
    assert_eq!((status, reset), (413, h2::Reason::NO_ERROR));
    // An HTTP/1.1 head over 64 KiB: 431, whatever its size and however its
    // bytes arrive (hyper's own bound, its read buffer, let 450 and 580 KiB
    // heads through and left curl with an empty reply at 500 KiB). One
    // just under the bound is served.
    let http1 = client(&[b"http/1.1"]);
    let with_header = |bytes: usize| http1.get(format!("{}/healthz", a.console)).header("x-big", "a".repeat(bytes));
    let mut many = http1.get(format!("{}/healthz", a.console));
    for i in 0..10_000 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let mut requests = vec![("a 63 KiB header".to_owned(), with_header(63 << 10), 200)];
    for kib in [65, 100, 300, 450, 500, 580, 1024] {
        requests.push((format!("a {kib} KiB header"), with_header(kib << 10), 431));
    }
    requests.push(("10,000 headers".to_owned(), many, 431));
    for (what, request, status) in requests {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: an answer, not {}", tether_base::tls::error_chain(&e)));
        assert_eq!(response.status().as_u16(), status, "{what}");
    }
    // HTTP/2: a header list over 16 KiB is answered on its stream.
    let response = client(&[b"h2"]).get(format!("{}/healthz", a.console)).header("x-big", "a".repeat(20 << 10));
    let response = response.send().await.unwrap();
    assert_eq!((response.version(), response.status().as_u16()), (reqwest::Version::HTTP_2, 431));
    // curl sends its whole request before it reads a byte of the answer.
    let header = a.dir.path().join("big-header.txt");
    std::fs::write(&header, format!("x-big: {}\n", "a".repeat(500 << 10))).unwrap();
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "--cacert"])
        .arg(a.ca_file())
        .arg("-H")
        .arg(format!("@{}", header.display()))
        .arg(format!("{}/healthz", a.console))
        .output()
        .expect("curl is installed");
    let said = (String::from_utf8_lossy(&curl.stdout).into_owned(), String::from_utf8_lossy(&curl.stderr).into_owned());
    assert_eq!(said.0, "431", "curl with a 500 KiB header: {said:?}");
}

/// Posts `size` bytes of body over HTTP/2, frame by frame: the status of
/// the answer, and the reason the server gave for resetting the stream.
async fn h2_upload_refused(a: &Appliance, size: usize) -> (u16, h2::Reason) {
    let config = tether_base::tls::client(&a.ca_pem, None, &[b"h2"]).unwrap();
    let addr = a.console.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let request = axum::http::Request::post(format!("{}/api/v1/tasks", a.console))
        .header("authorization", format!("Bearer {}", a.admin_token))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut upload) = client.send_request(request, false).unwrap();
    // Frames until the server stops taking them (it answers first).
    let sender = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![b' '; 16 * 1024]);
        for _ in 0..size / chunk.len() {
            upload.reserve_capacity(chunk.len());
            match std::future::poll_fn(|cx| upload.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                _ => break,
            }
            if upload.send_data(chunk.clone(), false).is_err() {
                break;
            }
        }
        std::future::poll_fn(|cx| upload.poll_reset(cx)).await.unwrap()
    });
    let status = response.await.unwrap().status().as_u16();
    let reset = tokio::time::timeout(Duration::from_secs(10), sender).await.unwrap().unwrap();
    (status, reset)
}
