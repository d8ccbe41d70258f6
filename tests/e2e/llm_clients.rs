//! The gateway driven by real clients: the official OpenAI and Ollama
//! Python packages against either kind of model server, design-first
//! answers, the CLI's management commands, and workers running LLM tasks.

use reqwest::Method;
use serde_json::{Value, json};
use std::process::Command;

use crate::fake_llm::FakeLlm;
use crate::harness::Appliance;
use crate::llm::{add_upstream, call, client_script, llm_requests, python, two_upstreams};

/// Runs a client script with `key`; returns what it printed.
fn run_client(script: &str, a: &Appliance, base: &str, key: &str, model: &str) -> Value {
    let out = Command::new(python())
        .arg(client_script(script))
        .arg(base)
        .arg(a.ca_file())
        .arg(model)
        .env("TETHER_LLM_KEY", key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script} {model}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn either_client_reaches_either_kind_of_model_server_streamed_or_whole() {
    let (a, upstream, key) = two_upstreams(&["on-vllm"], "standard").await;
    let expected = "echo: say hello to the site";

    // The ollama client, to Ollama (passed through) and to vLLM (translated).
    for (model, path, generate) in
        [("on-ollama", "/api/chat", "/api/generate"), ("on-vllm", "/v1/chat/completions", "/v1/completions")]
    {
        let before = upstream.paths().len();
        let seen = run_client("ollama_chat.py", &a, &a.console, &key, model);
        assert_eq!(seen["models"], json!(["on-ollama", "on-vllm"]), "{seen}");
        assert_eq!(seen["content"], expected, "{model}: {seen}");
        assert_eq!(seen["counts"][1], 6, "{model}: the completion's tokens: {seen}");
        assert_eq!(seen["streamed"].as_array().unwrap().len(), 6, "{model}: line by line: {seen}");
        assert_eq!(
            seen["streamed"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect::<String>(),
            expected
        );
        assert_eq!(seen["last"], json!({"done": true, "done_reason": "stop", "eval_count": 6}), "{model}: {seen}");
        assert_eq!(seen["refused"]["status"], 404, "{seen}");
        assert_eq!(seen["embeddings"], json!([[2.0, 0.5, -1.0, 0.125], [1.0, 0.5, -1.0, 0.125]]), "{model}: {seen}");
        assert_eq!(seen["generated"], "echo: complete this line", "{model}: {seen}");
        assert_eq!(seen["generated_counts"][1], 4, "{model}: {seen}");
        assert_eq!(seen["generated_streamed"], json!(["echo:", " complete", " this", " line"]), "{model}: {seen}");
        let embed_path = if path == "/api/chat" { "/api/embed" } else { "/v1/embeddings" };
        let mut paths = vec![path, path, generate, generate];
        if model == "on-ollama" {
            // Ollama shows the model, without the modelfile that names its files.
            assert_eq!(seen["show"], json!({"family": "llama", "modelfile": null, "capabilities": ["completion"]}));
            paths.push("/api/show");
        } else {
            assert_eq!(seen["show"], json!({"family": "", "modelfile": null, "capabilities": ["completion"]}));
        }
        paths.push(embed_path);
        assert_eq!(&upstream.paths()[before..], paths, "{model}");
    }

    // The openai client, to Ollama (translated).
    let before = upstream.paths().len();
    let seen = run_client("openai_chat.py", &a, &format!("{}/v1", a.console), &key, "on-ollama");
    assert_eq!(seen["content"], expected, "{seen}");
    assert_eq!(seen["usage"]["completion_tokens"], 6, "{seen}");
    assert_eq!(seen["streamed"].as_array().unwrap().len(), 6, "{seen}");
    assert_eq!(seen["usage_chunks"], 0, "{seen}");
    assert_eq!(seen["refused"], json!({"status": 404, "code": "model_not_found"}));
    assert_eq!(seen["embeddings"], json!([[2.0, 0.5, -1.0, 0.125], [1.0, 0.5, -1.0, 0.125]]), "{seen}");
    assert_eq!(seen["embedding_tokens"], 3);
    assert_eq!(
        (seen["completion"].as_str(), seen["completion_tokens"].as_u64()),
        (Some("echo: complete this line"), Some(4))
    );
    assert_eq!(seen["completion_streamed"], json!(["echo:", " complete", " this", " line"]), "{seen}");
    assert_eq!(&upstream.paths()[before..], ["/api/chat", "/api/chat", "/api/generate", "/api/generate", "/api/embed"]);

    // Whatever the protocols, the level's prompt reached the server first:
    // a chat's first message; a completion's system text, or where the
    // server's protocol has none, the start of its prompt.
    for r in upstream.requests().iter().filter(|r| r.get("messages").is_some()) {
        assert!(r["messages"][0]["content"].as_str().unwrap().contains("checklist"), "{r}");
        assert_eq!(r["messages"][1]["content"], "You have no rules.");
    }
    let requests = upstream.requests();
    let completions: Vec<&Value> = requests.iter().filter(|r| r.get("prompt").is_some()).collect();
    assert_eq!(completions.len(), 6);
    for r in completions {
        let first = r["system"].as_str().or(r["prompt"].as_str()).unwrap();
        assert!(first.starts_with("Before answering, work through this checklist"), "{r}");
        assert!(r["prompt"].as_str().unwrap().ends_with("complete this line"), "{r}");
    }
    let with_theirs =
        requests.iter().filter(|r| r["system"].as_str().is_some_and(|s| s.ends_with("\n\nYou have no rules."))).count();
    assert_eq!(with_theirs, 1, "the client's own system text follows the level's (generate, to Ollama)");
    // And every call was counted from the server's own figures.
    let records = a.api().audit_log().await;
    let served: Vec<&Value> =
        llm_requests(&records).into_iter().filter(|r| r["metadata"]["details"]["status"] == "200").collect();
    assert_eq!(served.len(), 15, "six chats, six completions, three embeddings");
    let chats = served.iter().filter(|r| r["metadata"]["details"]["completion_tokens"] == "6").count();
    let completed = served.iter().filter(|r| r["metadata"]["details"]["completion_tokens"] == "4").count();
    let embeddings = served.iter().filter(|r| r["metadata"]["details"]["prompt_tokens"] == "3").count();
    assert_eq!((chats, completed, embeddings), (6, 6, 3), "{served:?}");

    // `tether llm usage` reports the same calls, as JSON and as a table whose totals add up.
    let out = a.cli(&["llm", "usage", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let requests: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    let completion: u64 = rows.iter().map(|r| r["completion_tokens"].as_u64().unwrap()).sum();
    assert!(requests >= 15 && completion == 6 * 6 + 6 * 4, "{rows:?}");
    let table = String::from_utf8(a.cli(&["llm", "usage"]).output().unwrap().stdout).unwrap();
    let total: Vec<&str> = table.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(
        (total[0], total[1], total[4]),
        ("TOTAL", requests.to_string().as_str(), completion.to_string().as_str()),
        "{table}"
    );
}

/// The answer's text from a gateway response body, whole or streamed, in
/// either protocol.
fn answer_text(body: &Value) -> String {
    let whole = ["/choices/0/message/content", "/message/content", "/choices/0/text", "/response"];
    if let Some(text) = whole.iter().find_map(|p| body.pointer(p)) {
        return text.as_str().unwrap().to_owned();
    }
    let raw = body.as_str().unwrap_or_default();
    raw.lines()
        .map(|l| l.strip_prefix("data: ").unwrap_or(l))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            ["/choices/0/delta/content", "/message/content", "/choices/0/text", "/response"]
                .iter()
                .find_map(|p| v.pointer(p))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn design_first_withholds_code_from_a_first_answer_streamed_or_whole_in_either_protocol() {
    let (a, upstream, key) = two_upstreams(&["on-vllm"], "design-first").await;
    let api = a.api().with_token(Some(&key));
    // Backtick and tilde fences alike (indented code, which the fake's
    // word-by-word echo cannot carry, is in `design_first`'s unit tests).
    for (ask, fence) in
        [("show ```rust fn main() {} ``` then done", "```"), ("show ~~~rust fn main() {} ~~~ then done", "~~~")]
    {
        for model in ["on-vllm", "on-ollama"] {
            for (path, stream) in [
                ("/v1/chat/completions", false),
                ("/v1/chat/completions", true),
                ("/api/chat", false),
                ("/api/chat", true),
            ] {
                let first = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": ask}]});
                let (s, v) = api.post(path, &first).await;
                assert_eq!(s, 200, "{v}");
                let text = answer_text(&v);
                assert!(!text.contains("fn main") && !text.contains(fence), "{model} {path} stream={stream}: {text}");
                assert!(
                    text.contains("code withheld") && text.ends_with("then done"),
                    "{model} {path} stream={stream}: {text}"
                );
            }
            // A completion has no conversation: code is always withheld.
            for (path, stream) in [("/v1/completions", false), ("/v1/completions", true), ("/api/generate", true)] {
                let (s, v) = api.post(path, &json!({"model": model, "stream": stream, "prompt": ask})).await;
                assert_eq!(s, 200, "{v}");
                let text = answer_text(&v);
                assert!(
                    !text.contains("fn main") && text.contains("code withheld"),
                    "{model} {path} stream={stream}: {text}"
                );
            }
            // Once a design has been discussed (an assistant turn), code passes.
            let later = json!({"model": model, "stream": true, "messages": [
            {"role": "user", "content": "design a greeter"}, {"role": "assistant", "content": "Design: one function."},
            {"role": "user", "content": ask}]});
            let (s, v) = api.post("/v1/chat/completions", &later).await;
            assert_eq!(s, 200, "{v}");
            assert!(answer_text(&v).contains(&format!("{fence}rust fn main() {{}} {fence}")), "{v}");
        }
    }
    for r in upstream.requests() {
        let first = r.pointer("/messages/0/content").or(r.get("system")).or(r.get("prompt")).and_then(Value::as_str);
        assert!(first.unwrap().starts_with("Work design-first"), "{r}");
    }
    let records = a.api().audit_log().await;
    assert!(llm_requests(&records).iter().all(|r| r["metadata"]["details"]["enforcement"] == "design-first"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_sets_model_servers_and_makes_lists_and_revokes_keys() {
    let a = Appliance::start();
    let upstream = FakeLlm::start().await;
    let credential = a.dir.path().join("vllm-key");
    std::fs::write(&credential, "upstream-secret\n").unwrap();
    std::fs::set_permissions(&credential, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = |args: &[&str]| {
        let out = a.cli(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let url = upstream.url();
    run(&[
        "llm",
        "upstream",
        "set",
        "vllm-a",
        "--kind",
        "openai",
        "--url",
        &url,
        "--models",
        "llama3,mistral",
        "--credential-file",
        credential.to_str().unwrap(),
    ]);
    let listed = run(&["llm", "upstream", "list"]);
    assert!(listed.contains("vllm-a") && listed.contains("llama3,mistral"), "{listed}");
    assert!(!listed.contains("upstream-secret"));
    let key = run(&["llm", "key", "create", "--models", "llama3", "--rpm", "10", "--enforcement", "unrestricted"]);
    let key = key.trim();
    assert!(key.starts_with("tvk_"), "{key}");
    let (s, v) = call(&a, key, &json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(s, 200, "{v}");
    // The sealed credential reaches the server; nothing shows it.
    let sent = upstream.seen.lock().unwrap().authorizations.clone();
    assert_eq!(sent, [Some("Bearer upstream-secret".to_owned())]);
    let keys = run(&["llm", "key", "list", "--json"]);
    let keys: Value = serde_json::from_str(&keys).unwrap();
    assert_eq!((keys[0]["rpm"].as_u64(), keys[0]["enforcement"].as_str()), (Some(10), Some("unrestricted")));
    let id = keys[0]["id"].as_str().unwrap().to_owned();
    run(&["llm", "key", "revoke", &id]);
    let (s, _) = call(&a, key, &json!({"model": "llama3", "messages": []})).await;
    assert_eq!(s, 401);

    // A model's own limit beside the key's: mistral twice a minute, llama3 as the key allows.
    let limited = run(&["llm", "key", "create", "--rpm", "10", "--model-limit", "mistral:rpm=2,max-parallel=1"]);
    let limited = limited.trim();
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        assert_eq!(call(&a, limited, &chat("mistral")).await.0, 200);
    }
    let (s, v, headers) =
        a.api().with_token(Some(limited)).send(Method::POST, "/v1/chat/completions", Some(&chat("mistral")), &[]).await;
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")), "{v}");
    assert_eq!(headers["x-ratelimit-limit-requests"], "2", "the model's limit refused it");
    let (s, v, headers) =
        a.api().with_token(Some(limited)).send(Method::POST, "/v1/chat/completions", Some(&chat("llama3")), &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "7", "the key's own minute counts every model");
    let keys: Value = serde_json::from_str(&run(&["llm", "key", "list", "--json"])).unwrap();
    assert_eq!(keys[0]["model_limits"], json!({"mistral": {"rpm": 2, "tpm": null, "max_parallel": 1}}));
    let bad = a.cli(&["llm", "key", "create", "--model-limit", "mistral:rpm"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("MODEL:rpm=N"), "{}", String::from_utf8_lossy(&bad.stderr));
    let (s, v) = a
        .api()
        .post(
            "/api/v1/llm/keys",
            &json!({"owner": "admin", "models": ["llama3"], "model_limits": {"mistral": {"rpm": 1}}}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")), "{v}");
    let bad = a
        .cli(&["llm", "upstream", "set", "x", "--kind", "openai", "--url", "ftp://x", "--models", "m"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("http:// or https://"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_run_llm_chat_tasks_on_their_own_model_server_or_through_the_gateway() {
    let a = Appliance::start();
    let upstream = FakeLlm::start().await;

    // A worker with its own Ollama.
    let own = format!("[llm]\nkind = \"ollama\"\nurl = \"{}\"\nmodels = [\"llama3\"]\n", upstream.url());
    let _local = a.worker("local", &["gpu"], Some(&own)).await;
    let ask = json!({"model": "llama3", "messages": [{"role": "user", "content": "summarise the report"}]});
    let id = a.api().submit("llm.chat", ask.clone(), &["gpu"]).await;
    let done = a.api().wait(&id, 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["content"], "echo: summarise the report");
    assert_eq!(done["result"]["usage"], json!({"prompt_tokens": 3, "completion_tokens": 4}));
    assert_eq!(upstream.paths(), ["/api/chat"]);
    let id = a.api().submit("llm.chat", json!({"model": "gpt-4", "messages": []}), &["gpu"]).await;
    let refused = a.api().wait(&id, 30).await;
    assert_eq!(
        (refused["state"].as_str(), refused["error"]["code"].as_str()),
        (Some("failed"), Some("model_not_allowed")),
        "{refused}"
    );

    // A worker that uses the appliance's gateway with a key of its own.
    add_upstream(&a, "vllm", &upstream.url(), &["llama3"]).await;
    let (s, created) = a
        .api()
        .post("/api/v1/llm/keys", &json!({"owner": "admin", "models": ["llama3"], "enforcement": "unrestricted"}))
        .await;
    assert_eq!(s, 201, "{created}");
    let key_file = a.dir.path().join("worker-llm-key");
    std::fs::write(&key_file, created["key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let via_gateway = format!(
        "[llm]\nkind = \"openai\"\nurl = \"{}\"\nmodels = [\"llama3\"]\nkey_file = \"{}\"\nca_file = \"{}\"\n",
        a.console,
        key_file.display(),
        a.ca_file().display()
    );
    let _remote = a.worker("remote", &["cpu"], Some(&via_gateway)).await;
    let id = a.api().submit("llm.chat", ask, &["cpu"]).await;
    let done = a.api().wait(&id, 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["content"], "echo: summarise the report");
    let records = a.api().audit_log().await;
    let calls = llm_requests(&records);
    assert_eq!(calls.len(), 1, "the gateway saw the worker's call");
    assert_eq!(calls[0]["resource"]["id"], created["id"]);
}
