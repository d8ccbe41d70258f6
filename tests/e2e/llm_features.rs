//! What real clients ask of the gateway beyond plain text: the official
//! `openai` clients for Python and Node.js (a 4.x release and the current
//! one) get their embeddings in the encoding they ask for and a clear 400
//! for a `dimensions` the server cannot give; the `ollama` client's
//! `format`, tools, images and options reach the model server — translated
//! for vLLM, as sent for Ollama — and an option vLLM has no word for is
//! refused by name. Every assertion on a request is on what the recording
//! model server received.

use serde_json::{Value, json};
use std::process::Command;

use crate::harness::repo_root;
use crate::llm::{client_script, python, two_upstreams};

/// Vectors as numbers, however a client's JSON wrote them (2 or 2.0).
fn floats(vectors: &Value) -> Vec<Vec<f64>> {
    let vectors = vectors.as_array().unwrap_or_else(|| panic!("not vectors: {vectors}"));
    vectors.iter().map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

fn printed(out: std::process::Output, what: &str) -> Value {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_clients_get_float_and_base64_embeddings_and_a_clear_400_for_dimensions() {
    let (a, upstream, key) = two_upstreams(&["on-vllm", "on-vllm-matryoshka"], "standard").await;
    let base = format!("{}/v1", a.console);
    // The fake's vectors: the input's word count, then three constants,
    // all exact in float32 (base64 carries float32).
    let vectors = [[2.0, 0.5, -1.0, 0.125], [1.0, 0.5, -1.0, 0.125]];
    let check = |client: &str, seen: &Value| {
        for way in ["default", "float", "base64"] {
            assert_eq!(floats(&seen[way]), vectors, "{client}, {way}: {seen}");
        }
        assert_eq!(seen["base64_is_text"], true, "{client}: asked for base64, it got base64: {seen}");
        assert_eq!(floats(&seen["shortened"]), [[2.0, 0.5], [1.0, 0.5]], "{client}: {seen}");
        assert_eq!(seen["refused"]["status"], 400, "{client}: {seen}");
        assert_eq!(seen["refused"]["code"], "dimensions_unsupported", "{client}: {seen}");
        let message = seen["refused"]["message"].as_str().unwrap();
        assert!(message.contains("\"on-vllm\"") && message.contains("2 dimensions"), "{client}: {message}");
        assert!(!message.contains("matryoshka"), "the server's own words stay behind: {message}");
    };

    for model in ["on-vllm", "on-ollama"] {
        let python = Command::new(python())
            .arg(client_script("openai_embeddings.py"))
            .args([&base, &a.ca_file().display().to_string(), model, "on-vllm-matryoshka"])
            .env("TETHER_LLM_KEY", &key)
            .output()
            .unwrap();
        let seen = printed(python, "openai_embeddings.py");
        if model == "on-vllm" {
            check("python", &seen);
        } else {
            // Ollama that does not know `dimensions` gives whole vectors: refused too.
            assert_eq!(floats(&seen["default"]), vectors, "{seen}");
            assert_eq!(floats(&seen["base64"]), vectors, "{seen}");
            assert_eq!(seen["refused"]["code"], "dimensions_unsupported", "{seen}");
            assert!(seen["refused"]["message"].as_str().unwrap().contains("it gave 4 dimensions"), "{seen}");
        }
    }
    let node = Command::new("node")
        .arg(repo_root().join("tests/openai-node/embeddings.mjs"))
        .args([&base, "on-vllm", "on-vllm-matryoshka"])
        .env("TETHER_LLM_KEY", &key)
        .env("NODE_EXTRA_CA_CERTS", a.ca_file())
        .output()
        .unwrap();
    let seen = printed(node, "embeddings.mjs");
    for client in ["openai4", "openai"] {
        check(client, &seen[client]);
    }

    // Whatever the client asked, the servers were asked for floats.
    for (path, request) in upstream.paths().iter().zip(upstream.requests()) {
        if path == "/v1/embeddings" {
            assert_eq!(request["encoding_format"], "float", "{request}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ollama_clients_format_tools_images_and_options_reach_the_model_server() {
    let (a, upstream, key) = two_upstreams(&["on-vllm", "on-vllm-matryoshka"], "standard").await;
    for model in ["on-vllm", "on-ollama"] {
        let before = upstream.requests().len();
        let out = Command::new(python())
            .arg(client_script("ollama_features.py"))
            .args([&a.console, &a.ca_file().display().to_string(), model])
            .env("TETHER_LLM_KEY", &key)
            .output()
            .unwrap();
        let seen = printed(out, "ollama_features.py");
        let called = json!([{"name": "weather", "arguments": {"city": "Bern"}}]);
        assert_eq!(seen["tool_calls"], called, "{model}: {seen}");
        assert_eq!(seen["streamed_tool_calls"], called, "{model}: streamed: {seen}");
        assert_eq!(seen["tool_done_reason"], "stop", "{model}: {seen}");
        assert_eq!(seen["after_tool"], "echo: weather in Bern?", "{model}: {seen}");
        assert_eq!(seen["legacy_embedding"], json!([3.0, 0.5, -1.0, 0.125]), "{model}: {seen}");
        assert_eq!(seen["ps"], json!(["on-ollama", "on-vllm", "on-vllm-matryoshka"]), "{seen}");

        let requests = &upstream.requests()[before..];
        let shaped = &requests[0];
        let image = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
        let tools = &requests[2]["tools"];
        assert_eq!(tools[0]["function"]["name"], "weather", "{model}: {tools}");
        assert_eq!(tools[0]["function"]["parameters"]["required"], json!(["city"]), "{model}: {tools}");
        if model == "on-vllm" {
            assert_eq!(shaped["response_format"]["json_schema"]["schema"], schema, "{shaped}");
            assert_eq!(requests[1]["response_format"], json!({"type": "json_object"}), "{}", requests[1]);
            for (field, value) in [
                ("temperature", json!(0.2)),
                ("top_p", json!(0.9)),
                ("top_k", json!(20)),
                ("seed", json!(7)),
                ("max_tokens", json!(50)),
                ("stop", json!(["END"])),
                ("repetition_penalty", json!(1.1)),
            ] {
                assert_eq!(shaped[field], value, "{field}: {shaped}");
            }
            let parts = &shaped["messages"].as_array().unwrap().last().unwrap()["content"];
            assert_eq!(parts[1]["image_url"]["url"], format!("data:image/png;base64,{image}"), "{parts}");
            let history = &requests[4]["messages"];
            let n = history.as_array().unwrap().len();
            assert_eq!(history[n - 1]["tool_call_id"], history[n - 2]["tool_calls"][0]["id"], "{history}");
            assert_eq!(history[n - 2]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Bern"}"#);
            let refused = &seen["refused"];
            assert_eq!(refused["status"], 400, "{seen}");
            assert!(refused["error"].as_str().unwrap().contains("`options.num_ctx`"), "named: {refused}");
            assert_eq!(requests.len(), 6, "the refused request never reached the server: {requests:?}");
        } else {
            assert_eq!(shaped["format"], schema, "{shaped}");
            assert_eq!(shaped["options"]["top_k"], 20, "{shaped}");
            assert_eq!(shaped["options"]["repeat_penalty"], 1.1, "{shaped}");
            assert_eq!(shaped["messages"].as_array().unwrap().last().unwrap()["images"], json!([image]), "{shaped}");
            assert!(seen.get("refused").is_none(), "Ollama takes num_ctx: {seen}");
            assert_eq!(requests[5]["options"], json!({"num_ctx": 8192}), "{:?}", requests[5]);
        }
    }

    // The version an Ollama client checks, without a key as Ollama answers it.
    let (s, v) = a.api().with_token(None).get("/api/version").await;
    assert_eq!((s, v["version"].as_str().map(|v| v.split('.').count())), (200, Some(3)), "{v}");
}
