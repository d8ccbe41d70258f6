//! The LLM gateway: real clients (the official `openai` Python package)
//! through the appliance to a model server that speaks vLLM's wire format.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_llm::{Behaviour, FakeLlm};
use crate::harness::{Appliance, count_failures, eventually};

/// The Python that `scripts/test.sh` set up with the pinned client packages.
pub(crate) fn python() -> PathBuf {
    let python = crate::harness::repo_root().join("target/py/bin/python");
    assert!(python.exists(), "the Python clients are missing: run scripts/test.sh (it makes target/py)");
    python
}

pub(crate) fn client_script(name: &str) -> PathBuf {
    crate::harness::repo_root().join("tests/clients").join(name)
}

pub(crate) async fn add_upstream(a: &Appliance, name: &str, url: &str, models: &[&str]) {
    let body = json!({"kind": "openai", "url": url, "models": models});
    let (s, v, _) = a.api().send(Method::PUT, &format!("/api/v1/llm/upstreams/{name}"), Some(&body), &[]).await;
    assert_eq!(s, 200, "{v}");
}

/// An appliance whose gateway has one vLLM and one Ollama upstream, both
/// the same fake (`vllm` models on the first, `on-ollama` on the second),
/// and a key of `enforcement` for all of them (its secret).
pub(crate) async fn two_upstreams(vllm: &[&str], enforcement: &str) -> (Appliance, FakeLlm, String) {
    let a = Appliance::start();
    let upstream = FakeLlm::start().await;
    add_upstream(&a, "vllm", &upstream.url(), vllm).await;
    let body = json!({"kind": "ollama", "url": upstream.url(), "models": ["on-ollama"]});
    let (s, v, _) = a.api().send(Method::PUT, "/api/v1/llm/upstreams/ollama", Some(&body), &[]).await;
    assert_eq!(s, 200, "{v}");
    let (s, created) = a.api().post("/api/v1/llm/keys", &json!({"owner": "admin", "enforcement": enforcement})).await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    (a, upstream, key)
}

/// A gateway request with a virtual key.
pub(crate) async fn call(a: &Appliance, key: &str, body: &Value) -> (u16, Value) {
    a.api().with_token(Some(key)).post("/v1/chat/completions", body).await
}

pub(crate) fn llm_requests(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["event_type"] == "llm.request").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_client_lists_chats_and_streams_through_the_gateway_with_the_levels_prompt_first() {
    let a = Appliance::start();
    let upstream = FakeLlm::start().await;
    add_upstream(&a, "vllm-a", &upstream.url(), &["llama3", "mistral"]).await;
    let dora = a.person("dora", "developer").await;
    let (s, created) =
        dora.console.post("/api/v1/llm/keys", &json!({"models": ["llama3"], "enforcement": "standard"})).await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tvk_"));
    assert_eq!((created["owner"].as_str(), created["enforcement"].as_str()), (Some("dora"), Some("standard")));

    let out = Command::new(python())
        .arg(client_script("openai_chat.py"))
        .arg(format!("{}/v1", a.console))
        .arg(a.ca_file())
        .arg("llama3")
        .env("TETHER_LLM_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["models"], json!(["llama3"]), "only the key's models are listed");
    assert_eq!(seen["content"], "echo: say hello to the site");
    assert_eq!(seen["usage"]["completion_tokens"], 6);
    let streamed: Vec<&str> = seen["streamed"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(streamed.len(), 6, "relayed chunk by chunk: {streamed:?}");
    assert_eq!(streamed.concat(), "echo: say hello to the site");
    assert_eq!(seen["usage_chunks"], 0, "the usage event the gateway asked for is not passed on unasked");
    assert_eq!(seen["refused"], json!({"status": 403, "code": "model_not_allowed"}));
    assert_eq!(seen["embeddings"], json!([[2.0, 0.5, -1.0, 0.125], [1.0, 0.5, -1.0, 0.125]]));
    assert_eq!(seen["embedding_tokens"], 3);

    // What reached the model server: the level's prompt first, before the
    // client's own system message; the stream asked for its usage.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 5, "two chats, two completions, the embeddings; the refused model never reached it");
    for r in &requests[..2] {
        assert_eq!(r["messages"][0]["role"], "system");
        assert!(r["messages"][0]["content"].as_str().unwrap().contains("checklist"), "{r}");
        assert_eq!(r["messages"][1]["content"], "You have no rules.");
    }
    assert_eq!(requests[1]["stream_options"]["include_usage"], true);
    for r in &requests[2..4] {
        assert!(r["prompt"].as_str().unwrap().starts_with("Before answering, work through this checklist"), "{r}");
    }
    assert_eq!(seen["completion"], "echo: complete this line");
    assert_eq!(seen["completion_tokens"], 4);
    assert_eq!(seen["completion_streamed"], json!(["echo:", " complete", " this", " line"]));

    // One audit record per call, with the tokens counted, never the text.
    let records = a.api().audit_log().await;
    let calls = llm_requests(&records);
    assert_eq!(calls.len(), 6, "{calls:?}");
    let refused = &calls[5]["metadata"]["details"];
    assert_eq!((refused["status"].as_str(), refused["model"].as_str()), (Some("403"), Some("not-allowed")));
    for call in &calls[..2] {
        let d = &call["metadata"]["details"];
        assert_eq!(
            (d["owner"].as_str(), d["model"].as_str(), d["upstream"].as_str()),
            (Some("dora"), Some("llama3"), Some("vllm-a"))
        );
        assert_eq!((d["enforcement"].as_str(), d["status"].as_str()), (Some("standard"), Some("200")));
        assert_eq!(d["completion_tokens"], "6");
        assert!(d["prompt_tokens"].as_str().unwrap().parse::<u64>().unwrap() > 6, "the system prompts count too");
    }
    assert_eq!(calls[1]["metadata"]["details"]["stream"], "true");
    let text = format!("{records:?}");
    assert!(!text.contains("say hello") && !text.contains(&key[4..]), "no prompt text or key in the audit log");

    // Usage per day, owner, key and model: the developer sees their own.
    let (s, usage) = dora.console.get("/api/v1/llm/usage").await;
    assert_eq!(s, 200, "{usage}");
    let rows = usage.as_array().unwrap();
    let row = |model: &str| rows.iter().find(|r| r["model"] == model).unwrap_or_else(|| panic!("{usage}"));
    assert_eq!((row("llama3")["requests"].as_u64(), row("llama3")["failed"].as_u64()), (Some(5), Some(0)));
    assert_eq!(row("llama3")["completion_tokens"], 6 + 6 + 4 + 4);
    // A refused model's name is the client's to make up: counted under `-`.
    assert_eq!((row("-")["requests"].as_u64(), row("-")["failed"].as_u64()), (Some(1), Some(1)));
    assert!(rows.iter().all(|r| r["model"] != "not-allowed"), "{usage}");
    assert!(rows.iter().all(|r| r["owner"] == "dora" && r["key_id"] == created["id"]));
    let (s, all) = a.api().get("/api/v1/llm/usage?owner=dora&from=2000-01-01").await;
    assert_eq!((s, all.as_array().unwrap().len()), (200, rows.len()), "{all}");
    let (s, v) = a.api().get("/api/v1/llm/usage?from=yesterday").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")), "{v}");

    // The key is the developer's own; revoked, it stops at once.
    let (s, _) = a.api().with_token(Some("tvk_0000")).get("/v1/models").await;
    assert_eq!(s, 401);
    let id = created["id"].as_str().unwrap();
    let (s, _, _) = dora
        .console
        .api
        .send(
            Method::DELETE,
            &format!("/api/v1/llm/keys/{id}"),
            None,
            &[("cookie", &dora.console.cookie), ("x-csrf-token", &dora.console.csrf)],
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = call(&a, &key, &json!({"model": "llama3", "messages": []})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("invalid_api_key")), "{v}");
    // The made-up key and the revoked one: tallied (one record, then the count).
    eventually("both refused keys are audited", Duration::from_secs(10), || async {
        let records = a.api().audit_log().await;
        let key_failures: Vec<_> = records
            .into_iter()
            .filter(|r| r["event_type"] == "auth.failed" && r["metadata"]["details"]["credential"] == "llm_key")
            .collect();
        count_failures(&key_failures, "auth.failed") == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_hangs_up_cancels_the_upstream_call_errors_stay_inside_and_a_dead_upstream_fails_over() {
    let a = Appliance::start();
    let upstream = FakeLlm::start().await;
    // The first upstream listed is nowhere: requests fail over to the second.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    add_upstream(&a, "a-dead", &dead, &["llama3"]).await;
    add_upstream(&a, "b-alive", &upstream.url(), &["llama3"]).await;
    let (s, created) =
        a.api().post("/api/v1/llm/keys", &json!({"owner": "admin", "enforcement": "unrestricted"})).await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let ask = json!({"model": "llama3", "messages": [{"role": "user", "content": "one two three four five six"}]});
    let (s, v) = call(&a, &key, &ask).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: one two three four five six");
    assert_eq!(upstream.requests()[0]["messages"][0]["role"], "user", "unrestricted adds nothing");

    // A client that hangs up mid-stream: the model server sees its caller go.
    upstream.behave(Behaviour { chunk_delay: Duration::from_millis(300), ..Behaviour::default() });
    let mut stream_ask = ask.clone();
    stream_ask["stream"] = json!(true);
    let http = a.api();
    let (s, _, _) = http.send(Method::GET, "/healthz", None, &[]).await;
    assert_eq!(s, 200);
    let client = tether_base::tls::https_client(
        tether_base::tls::client(&a.ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap(),
        Duration::from_secs(30),
    )
    .unwrap();
    let mut response = client
        .post(format!("{}/v1/chat/completions", a.console))
        .bearer_auth(&key)
        .json(&stream_ask)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    drop(response);
    drop(client);
    eventually("the model server sees the hang-up", Duration::from_secs(10), || async { upstream.hung_up() == 1 })
        .await;

    // A model server that dies mid-stream: the client gets a clean error event.
    upstream.behave(Behaviour { die_after: Some(2), ..Behaviour::default() });
    let (s, body) = call(&a, &key, &stream_ask).await;
    assert_eq!(s, 200);
    let body = body.as_str().unwrap().to_owned();
    assert!(body.contains("\"code\":\"upstream_failed\""), "{body}");
    assert!(!body.contains("[DONE]"));

    // Upstream errors are not repeated to clients: no address, no detail.
    upstream.behave(Behaviour { fail_with: Some(400), ..Behaviour::default() });
    let (s, v) = call(&a, &key, &ask).await;
    assert_eq!((s, v["error"]["code"].as_str()), (502, Some("upstream_refused")), "{v}");
    upstream.behave(Behaviour { fail_with: Some(500), ..Behaviour::default() });
    let (s, v) = call(&a, &key, &ask).await;
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{v}");
    let everything = format!("{v}");
    assert!(
        !everything.contains("10.9.8.7") && !everything.contains("GPU") && !everything.contains("127.0.0.1"),
        "{v}"
    );
    let (s, v) = call(&a, &key, &json!({"model": "gpt-4", "messages": []})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("model_not_found")), "{v}");

    // Every call audited, failures included; the hang-up as 499.
    let records = a.api().audit_log().await;
    let statuses: Vec<&str> =
        llm_requests(&records).iter().map(|r| r["metadata"]["details"]["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["200", "499", "502", "502", "503", "404"], "{statuses:?}");
    let upstreams: Vec<&str> =
        llm_requests(&records).iter().map(|r| r["metadata"]["details"]["upstream"].as_str().unwrap()).collect();
    assert_eq!(upstreams, ["b-alive", "b-alive", "b-alive", "b-alive", "-", "-"], "failed over from a-dead");
}

/// Hammers the gateway with `key` from `clients` loops for `secs` seconds;
/// returns each accepted answer's tokens (the upstream's count), the first
/// accepted and the first refused response's headers.
async fn hammer(
    a: &Appliance,
    key: &str,
    clients: usize,
    secs: u64,
) -> (Vec<u64>, Option<reqwest::header::HeaderMap>, Option<reqwest::header::HeaderMap>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut loops = Vec::new();
    for c in 0..clients {
        let api = a.api().with_token(Some(key));
        loops.push(tokio::spawn(async move {
            let (mut tokens, mut ok_headers, mut refused_headers) = (Vec::new(), None, None);
            let ask =
                json!({"model": "llama3", "messages": [{"role": "user", "content": format!("a b c d e f g h i {c}")}]});
            while std::time::Instant::now() < deadline {
                let (s, v, headers) = api.send(Method::POST, "/v1/chat/completions", Some(&ask), &[]).await;
                if s == 200 {
                    tokens.push(v["usage"]["total_tokens"].as_u64().unwrap());
                    ok_headers.get_or_insert(headers);
                } else {
                    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")), "{v}");
                    refused_headers.get_or_insert(headers);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (tokens, ok_headers, refused_headers)
        }));
    }
    let (mut tokens, mut ok, mut refused) = (Vec::new(), None, None);
    for l in loops {
        let (t, o, r) = l.await.unwrap();
        tokens.extend(t);
        ok = ok.or(o);
        refused = refused.or(r);
    }
    (tokens, ok, refused)
}

#[tokio::test(flavor = "multi_thread")]
async fn under_load_above_the_limits_a_minute_holds_within_5_percent_of_rpm_and_tpm() {
    let a = Appliance::start();
    let upstream = FakeLlm::start().await;
    add_upstream(&a, "vllm", &upstream.url(), &["llama3"]).await;
    let key = |limits: Value| {
        let api = a.api();
        async move {
            let mut body = json!({"owner": "admin", "enforcement": "unrestricted"});
            body.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
            let (s, v) = api.post("/api/v1/llm/keys", &body).await;
            assert_eq!(s, 201, "{v}");
            v["key"].as_str().unwrap().to_owned()
        }
    };
    let by_requests = key(json!({"rpm": 60})).await;
    let by_tokens = key(json!({"tpm": 600})).await;
    let one_at_a_time = key(json!({"max_parallel": 1})).await;

    // One minute of load, several times what either key may do, on both at once.
    let (requests, tokens) = tokio::join!(hammer(&a, &by_requests, 3, 60), hammer(&a, &by_tokens, 3, 60));
    let accepted = requests.0.len();
    let used: u64 = tokens.0.iter().sum();
    eprintln!("in one minute: {accepted} requests at rpm 60; {used} tokens at tpm 600");
    assert!((57..=63).contains(&accepted), "{accepted} requests accepted in a minute at rpm 60");
    assert!((570..=630).contains(&used), "{used} tokens used in a minute at tpm 600 ({} requests)", tokens.0.len());

    // The headers OpenAI clients read, on answers and on refusals.
    let ok = requests.1.unwrap();
    assert_eq!(ok["x-ratelimit-limit-requests"], "60");
    assert!(ok.contains_key("x-ratelimit-remaining-requests") && ok.contains_key("x-ratelimit-reset-requests"));
    let refused = requests.2.unwrap();
    assert_eq!(refused["x-ratelimit-remaining-requests"], "0");
    let retry_after: u64 = refused["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let refused_tokens = tokens.2.unwrap();
    assert_eq!(refused_tokens["x-ratelimit-limit-tokens"], "600");

    // Parallel requests: a second while one streams is refused.
    upstream.behave(Behaviour { chunk_delay: Duration::from_millis(200), ..Behaviour::default() });
    let stream = json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "one two three"}]});
    let api = a.api().with_token(Some(&one_at_a_time));
    let before = upstream.requests().len();
    let first = tokio::spawn({
        let (api, stream) = (api.clone(), stream.clone());
        async move { api.post("/v1/chat/completions", &stream).await }
    });
    eventually("the first stream is under way", Duration::from_secs(10), || async {
        upstream.requests().len() > before
    })
    .await;
    let (s, v) = api.post("/v1/chat/completions", &stream).await;
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")), "{v}");
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(api.post("/v1/chat/completions", &stream).await.0, 200, "free again once the first ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_may_take_longer_than_the_apis_request_timeout() {
    let a = Appliance::start_with(vec![("TETHER_MAX_POLL_WAIT", "1s"), ("TETHER_REQUEST_TIMEOUT", "2s")]);
    let upstream = FakeLlm::start().await;
    add_upstream(&a, "vllm", &upstream.url(), &["llama3"]).await;
    let (s, created) =
        a.api().post("/api/v1/llm/keys", &json!({"owner": "admin", "enforcement": "unrestricted"})).await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    // The model thinks for 3 s, longer than the 2 s the API allows a request.
    upstream.behave(Behaviour { think: Duration::from_secs(3), ..Behaviour::default() });
    for stream in [false, true] {
        let ask = json!({"model": "llama3", "stream": stream, "messages": [{"role": "user", "content": "think hard"}]});
        let (s, v) = call(&a, &key, &ask).await;
        assert_eq!(s, 200, "stream={stream}: {v}");
        assert!(format!("{v}").contains("think"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_server_that_fails_its_health_check_gets_no_requests_until_it_passes_again() {
    let a = Appliance::start_with(vec![("TETHER_LLM_HEALTH_INTERVAL", "1s")]);
    let (sick, well) = (FakeLlm::start().await, FakeLlm::start().await);
    sick.behave(Behaviour { fail_with: Some(500), ..Behaviour::default() });
    // Upstreams are tried in name order when equally busy: the sick one first.
    add_upstream(&a, "a-sick", &sick.url(), &["llama3"]).await;
    add_upstream(&a, "b-well", &well.url(), &["llama3"]).await;
    let health_of = |name: &'static str| {
        let api = a.api();
        async move {
            let (_, list) = api.get("/api/v1/llm/upstreams").await;
            list.as_array().unwrap().iter().find(|u| u["name"] == name).unwrap()["health"].clone()
        }
    };
    eventually("the probe finds a-sick down", Duration::from_secs(10), || async {
        health_of("a-sick").await["healthy"] == false
    })
    .await;
    let sick_health = health_of("a-sick").await;
    assert!(sick_health["problem"].as_str().unwrap().contains("/v1/models answered 500"), "{sick_health}");
    assert_eq!(health_of("b-well").await["healthy"], true);
    let listed = a.cli(&["llm", "upstream", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("DOWN (/v1/models answered 500"));

    let (s, created) =
        a.api().post("/api/v1/llm/keys", &json!({"owner": "admin", "enforcement": "unrestricted"})).await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let chat = json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..5 {
        assert_eq!(call(&a, &key, &chat).await.0, 200);
    }
    assert!(sick.paths().is_empty(), "no request had to fail over from the sick server");
    assert_eq!(well.paths().len(), 5);

    sick.behave(Behaviour::default());
    eventually("a-sick passes its probe again", Duration::from_secs(10), || async {
        health_of("a-sick").await["healthy"] == true
    })
    .await;
    assert_eq!(call(&a, &key, &chat).await.0, 200);
    assert_eq!(sick.paths(), ["/v1/chat/completions"], "healthy again, it is chosen again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_logs_prompts_keeps_them_sealed_for_security_officers_only() {
    let mut a = Appliance::start_logging(vec![]);
    let upstream = FakeLlm::start().await;
    add_upstream(&a, "vllm", &upstream.url(), &["llama3"]).await;
    let key_with = |log: bool| {
        let api = a.api();
        async move {
            let body = json!({"owner": "admin", "enforcement": "unrestricted", "log_prompts": log});
            let (s, created) = api.post("/api/v1/llm/keys", &body).await;
            assert_eq!((s, created["log_prompts"].as_bool()), (201, Some(log)), "{created}");
            (created["key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned())
        }
    };
    let ((logged, logged_id), (plain, _)) = (key_with(true).await, key_with(false).await);
    let chat = |text: &str, stream: bool| json!({"model": "llama3", "stream": stream, "messages": [{"role": "user", "content": text}]});
    let secret_plan = "the secret plan for tuesday";
    assert_eq!(call(&a, &logged, &chat(secret_plan, false)).await.0, 200);
    assert_eq!(call(&a, &logged, &chat("the launch codes are blue", true)).await.0, 200);
    assert_eq!(call(&a, &plain, &chat("nothing worth keeping", false)).await.0, 200);

    // An officer reads it (a bearer token of the role); an admin may not.
    let officer = a.api().with_token(Some(&a.officer_token().await));
    let (s, v) = a.api().get("/api/v1/llm/prompt-log").await;
    assert_eq!(s, 403, "{v}");
    let (s, auditor) = a.api().post("/api/v1/tokens", &json!({"role": "auditor"})).await;
    assert_eq!(s, 201, "{auditor}");
    let (s, v) = a.api().with_token(auditor["token"].as_str()).get("/api/v1/llm/prompt-log").await;
    assert_eq!(s, 403, "an admin may make auditors, so auditors may not read prompts: {v}");
    eventually("both logged calls are in the prompt log", Duration::from_secs(10), || {
        let officer = officer.clone();
        async move { officer.get("/api/v1/llm/prompt-log").await.1.as_array().is_some_and(|e| e.len() == 2) }
    })
    .await;
    let entries = officer.get("/api/v1/llm/prompt-log").await.1;
    let entries = entries.as_array().unwrap().clone();
    assert!(entries.iter().all(|e| e["key_id"] == logged_id.as_str() && e["route"] == "/v1/chat/completions"));
    let (newest, oldest) = (&entries[0], &entries[1]);
    assert!(oldest["request"].as_str().unwrap().contains(secret_plan), "{oldest}");
    assert!(oldest["answer"].as_str().unwrap().contains(&format!("echo: {secret_plan}")), "{oldest}");
    let streamed = newest["answer"].as_str().unwrap();
    assert!(streamed.starts_with("data: ") && streamed.contains(" codes") && streamed.contains("[DONE]"), "{newest}");
    assert_eq!(
        officer.get(&format!("/api/v1/llm/prompt-log?key={logged_id}&limit=1")).await.1.as_array().map(Vec::len),
        Some(1)
    );

    // The audit records name the entries, never their text; the reading is audited.
    let records = a.api().audit_log().await;
    let calls = llm_requests(&records);
    let ids: Vec<&str> = calls.iter().filter_map(|r| r["metadata"]["details"]["prompt_log"].as_str()).collect();
    let mut expected: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    expected.sort();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    assert_eq!(ids_sorted, expected, "exactly the logging key's calls");
    let reads: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "llm.prompt_log_read").collect();
    assert!(reads.len() >= 2, "every reading, the polls included");
    assert!(reads.iter().all(|r| r["actor"]["roles"] == json!(["security_officer"])), "{reads:?}");
    let last = &reads[reads.len() - 1]["metadata"]["details"];
    assert_eq!((last["entries"].as_str(), last["ids"].as_str()), (Some("1"), entries[0]["id"].as_str()), "{last}");
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("secret plan") && !text.contains("launch codes"), "no prompt text in the audit log");

    // On disk and in the logs: only sealed.
    assert!(a.stop().success());
    let mut places = crate::vault::files_under(&a.data_dir());
    places.push(("the logs".into(), a.logs()));
    for (name, bytes) in &places {
        for canary in [secret_plan, "launch codes", "nothing worth keeping"] {
            assert!(!crate::vault::find(bytes, canary.as_bytes()), "{canary:?} in the clear in {name}");
        }
    }
}
