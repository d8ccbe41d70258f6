//! A model server for the gateway's tests, speaking both wire formats as
//! the real servers do: vLLM's OpenAI-compatible chat completions, whole or
//! streamed as server-sent events (a role delta, content deltas, a finish
//! event, the usage event only when `stream_options.include_usage` asks,
//! `[DONE]`), and Ollama's `/api/chat`, whole or streamed as JSON lines
//! (streamed unless `"stream": false`; the last line carries `done`,
//! `done_reason` and the counts); usage counts and errors. It records every
//! request it receives and notices when a client hangs up mid-stream.
//! Offered tools, it calls the first (whole, or streamed as each server
//! streams calls); embeddings come as floats or, from vLLM, as base64 and
//! shortened to `dimensions` for a Matryoshka model only.
//! For imports it keeps Ollama's blob store as Ollama does (`HEAD` and
//! `POST /api/blobs/sha256:…`, the body checked against its digest) and
//! creates models from blobs (`POST /api/create` with `files`), which
//! `/api/tags` then lists.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// How the fake behaves; tests change it while it runs.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Wait this long before each streamed content event.
    pub chunk_delay: Duration,
    /// Stop the stream abruptly (close the connection) after this many content events.
    pub die_after: Option<usize>,
    /// Answer every request with this status and an error body.
    pub fail_with: Option<u16>,
    /// Think this long before answering at all (a big model, a long prompt).
    pub think: Duration,
}

#[derive(Default)]
pub struct Seen {
    pub requests: Vec<Value>,
    /// The path of each request, in the same order.
    pub paths: Vec<String>,
    /// Each OpenAI-format request's Authorization header, if any.
    pub authorizations: Vec<Option<String>>,
    /// Streams whose client went away before the end.
    pub hung_up: usize,
    /// Ollama's blob store: digest (`sha256:…`) → bytes.
    pub blobs: std::collections::BTreeMap<String, Vec<u8>>,
    /// Every blob or create request, as `METHOD path`.
    pub import_calls: Vec<String>,
    /// The create requests Ollama accepted.
    pub created: Vec<Value>,
    /// `GET /v1/models` calls (health probes), kept out of `paths`.
    pub model_lists: usize,
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        let shared = Shared { seen: Arc::default(), behaviour: Arc::default() };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/api/chat", post(ollama_chat))
            .route("/v1/completions", post(completions))
            .route("/api/generate", post(ollama_generate))
            .route("/api/show", post(ollama_show))
            .route("/api/tags", get(ollama_tags))
            .route("/api/blobs/{digest}", axum::routing::head(has_blob).post(put_blob))
            .route("/api/create", post(create_model))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .route("/v1/embeddings", post(embeddings))
            .route("/api/embed", post(embeddings))
            .route("/api/ps", get(ollama_ps))
            .route("/v1/models", get(openai_models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // As a real model server does: each event leaves as it is written.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeLlm { addr, seen: shared.seen, behaviour: shared.behaviour, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn paths(&self) -> Vec<String> {
        self.seen.lock().unwrap().paths.clone()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().requests.clone()
    }

    pub fn hung_up(&self) -> usize {
        self.seen.lock().unwrap().hung_up
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

/// vLLM's model list; fails as the behaviour says, like every route that
/// needs the model runner.
async fn openai_models(State(shared): State<Shared>) -> Response {
    shared.seen.lock().unwrap().model_lists += 1;
    match shared.behaviour.lock().unwrap().fail_with {
        Some(status) => vllm_error(StatusCode::from_u16(status).unwrap()),
        None => axum::Json(json!({"object": "list", "data": [{"id": "fake", "object": "model"}]})).into_response(),
    }
}

async fn ollama_tags(State(shared): State<Shared>) -> axum::Json<Value> {
    let seen = shared.seen.lock().unwrap();
    let models: Vec<Value> = seen.created.iter().map(|c| json!({"name": c["model"], "model": c["model"]})).collect();
    axum::Json(json!({ "models": models }))
}

fn ollama_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn has_blob(
    State(shared): State<Shared>,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> StatusCode {
    let mut seen = shared.seen.lock().unwrap();
    seen.import_calls.push(format!("HEAD /api/blobs/{digest}"));
    if seen.blobs.contains_key(&digest) { StatusCode::OK } else { StatusCode::NOT_FOUND }
}

async fn put_blob(
    State(shared): State<Shared>,
    axum::extract::Path(digest): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let mut seen = shared.seen.lock().unwrap();
    seen.import_calls.push(format!("POST /api/blobs/{digest}"));
    let Some(hex) = digest.strip_prefix("sha256:").filter(|h| h.len() == 64) else {
        return ollama_error(StatusCode::BAD_REQUEST, "invalid digest format");
    };
    if tether_base::secret::sha256(&body)
        != <[u8; 32]>::try_from(hex::decode(hex).unwrap_or_default()).unwrap_or_default()
    {
        return ollama_error(StatusCode::BAD_REQUEST, "digest mismatch, file must be downloaded again");
    }
    seen.blobs.insert(digest, body.to_vec());
    StatusCode::CREATED.into_response()
}

async fn create_model(State(shared): State<Shared>, axum::Json(request): axum::Json<Value>) -> Response {
    let mut seen = shared.seen.lock().unwrap();
    seen.import_calls.push("POST /api/create".into());
    let files = request["files"].as_object().cloned().unwrap_or_default();
    if files.is_empty() {
        return ollama_error(StatusCode::BAD_REQUEST, "neither 'from' or 'files' was specified");
    }
    if let Some((name, _)) = files.iter().find(|(_, d)| !seen.blobs.contains_key(d.as_str().unwrap_or(""))) {
        return ollama_error(StatusCode::BAD_REQUEST, &format!("missing blob for {name}"));
    }
    seen.created.push(request.clone());
    if request["stream"] == false {
        axum::Json(json!({"status": "success"})).into_response()
    } else {
        let lines =
            ["{\"status\":\"parsing GGUF\"}\n", "{\"status\":\"writing manifest\"}\n", "{\"status\":\"success\"}\n"];
        lines.concat().into_response()
    }
}

/// The answer's words: "echo:" and the last user message (or the prompt).
fn answer_words(request: &Value) -> Vec<String> {
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .or_else(|| request["prompt"].as_str().and_then(|p| p.lines().last()))
        .unwrap_or("");
    std::iter::once("echo:".to_owned()).chain(last.split_whitespace().map(str::to_owned)).collect()
}

/// Tokens as the fake counts them: one per word of every message, or of
/// the prompt and the system text.
fn prompt_tokens(request: &Value) -> usize {
    let words = |v: &Value| v.as_str().unwrap_or("").split_whitespace().count();
    request["messages"].as_array().map(|m| m.iter().map(|m| words(&m["content"])).sum()).unwrap_or(0)
        + words(&request["prompt"])
        + words(&request["system"])
}

async fn chat(
    State(shared): State<Shared>,
    headers: axum::http::HeaderMap,
    axum::Json(request): axum::Json<Value>,
) -> Response {
    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    shared.seen.lock().unwrap().authorizations.push(authorization);
    let behaviour = match received(&shared, "/v1/chat/completions", &request).await {
        Ok(behaviour) => behaviour,
        Err(status) => return vllm_error(status),
    };
    let model = request["model"].as_str().unwrap_or("").to_owned();
    let words = answer_words(&request);
    let usage = json!({
        "prompt_tokens": prompt_tokens(&request),
        "completion_tokens": words.len(),
        "total_tokens": prompt_tokens(&request) + words.len(),
    });
    let tool = called_tool(&request);
    if request["stream"] != json!(true) {
        let (message, finish) = match &tool {
            Some(name) => (
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake", "type": "function",
                       "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]}),
                "tool_calls",
            ),
            None => (json!({"role": "assistant", "content": words.join(" ")}), "stop"),
        };
        return axum::Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }))
        .into_response();
    }
    let include_usage = request.pointer("/stream_options/include_usage") == Some(&json!(true));
    let chunk = |delta: Value, finish: Value| {
        let event = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {event}\n\n"))
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    if let Some(name) = &tool {
        // As vLLM streams a call: its name, then its arguments in fragments.
        let call =
            json!([{"index": 0, "id": "call_fake", "type": "function", "function": {"name": name, "arguments": ""}}]);
        events.push(chunk(json!({"tool_calls": call}), Value::Null));
        let (head, tail) = TOOL_ARGUMENTS.split_at(TOOL_ARGUMENTS.len() / 2);
        for fragment in [head, tail] {
            let part = json!([{"index": 0, "function": {"arguments": fragment}}]);
            events.push(chunk(json!({"tool_calls": part}), Value::Null));
        }
        events.push(chunk(json!({}), json!("tool_calls")));
    } else {
        for (i, word) in words.iter().enumerate() {
            let text = if i == 0 { word.clone() } else { format!(" {word}") };
            events.push(chunk(json!({"content": text}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
    }
    if include_usage {
        let event = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage});
        events.push(Bytes::from(format!("data: {event}\n\n")));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream_out(shared, behaviour, events, "text/event-stream")
}

/// What the fake calls a tool with.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Bern"}"#;

/// The tool the model calls: the first one offered, unless the last
/// message is already a tool's answer.
fn called_tool(request: &Value) -> Option<String> {
    let answered = request["messages"].as_array().and_then(|m| m.last()).is_some_and(|m| m["role"] == "tool");
    let name = request.pointer("/tools/0/function/name").and_then(Value::as_str)?;
    (!answered).then(|| name.to_owned())
}

/// Sends `units` one by one as the behaviour says: a delay between them,
/// dying after some, noticing a client that hangs up.
fn stream_out(shared: Shared, behaviour: Behaviour, units: Vec<Bytes>, content_type: &'static str) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for (i, unit) in units.into_iter().enumerate() {
            if behaviour.die_after.is_some_and(|n| i > n) {
                let _ = tx.send(Err(std::io::Error::other("the model server died"))).await;
                return;
            }
            // A zero sleep would still wait for the timer's next tick (1 ms).
            if i > 0 && !behaviour.chunk_delay.is_zero() {
                tokio::time::sleep(behaviour.chunk_delay).await;
            }
            if tx.send(Ok(unit)).await.is_err() {
                shared.seen.lock().unwrap().hung_up += 1;
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    ([("content-type", content_type)], Body::from_stream(stream)).into_response()
}

async fn ollama_chat(State(shared): State<Shared>, axum::Json(request): axum::Json<Value>) -> Response {
    let behaviour = match received(&shared, "/api/chat", &request).await {
        Ok(behaviour) => behaviour,
        Err(status) => return ollama_error(status, "model runner crashed on 10.9.8.7"),
    };
    let model = request["model"].as_str().unwrap_or("").to_owned();
    let words = answer_words(&request);
    let (prompt, completion) = (prompt_tokens(&request), words.len());
    let line_model = model.clone();
    let done = move |content: &str| {
        json!({"model": model, "created_at": "2026-11-26T00:00:00Z", "message": {"role": "assistant", "content": content},
               "done": true, "done_reason": "stop", "total_duration": 1000, "prompt_eval_count": prompt, "eval_count": completion})
    };
    if let Some(name) = called_tool(&request) {
        let arguments: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
        let calls = json!([{"function": {"name": name, "arguments": arguments}}]);
        let mut answer = done("");
        if request["stream"] == json!(false) {
            answer["message"]["tool_calls"] = calls;
            return axum::Json(answer).into_response();
        }
        let call = json!({"model": line_model, "created_at": "2026-11-26T00:00:00Z",
                          "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": false});
        let lines = vec![Bytes::from(format!("{call}\n")), Bytes::from(format!("{answer}\n"))];
        return stream_out(shared, behaviour, lines, "application/x-ndjson");
    }
    if request["stream"] == json!(false) {
        return axum::Json(done(&words.join(" "))).into_response();
    }
    let mut lines = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let text = if i == 0 { word.clone() } else { format!(" {word}") };
        let line = json!({"model": line_model, "created_at": "2026-11-26T00:00:00Z",
                          "message": {"role": "assistant", "content": text}, "done": false});
        lines.push(Bytes::from(format!("{line}\n")));
    }
    lines.push(Bytes::from(format!("{}\n", done(""))));
    stream_out(shared, behaviour, lines, "application/x-ndjson")
}

/// vLLM's `/v1/completions`: the prompt continued, whole or as events.
async fn completions(State(shared): State<Shared>, axum::Json(request): axum::Json<Value>) -> Response {
    let behaviour = match received(&shared, "/v1/completions", &request).await {
        Ok(behaviour) => behaviour,
        Err(status) => return vllm_error(status),
    };
    let model = request["model"].as_str().unwrap_or("").to_owned();
    let words = answer_words(&request);
    let (prompt, completion) = (prompt_tokens(&request), words.len());
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    let event = |choices: Value| json!({"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model, "choices": choices});
    if request["stream"] != json!(true) {
        let mut whole =
            event(json!([{"index": 0, "text": words.join(" "), "logprobs": null, "finish_reason": "stop"}]));
        whole["usage"] = usage;
        return axum::Json(whole).into_response();
    }
    let mut events: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let text = if i == 0 { w.clone() } else { format!(" {w}") };
            event(json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": null}]))
        })
        .collect();
    events.push(event(json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}])));
    if request.pointer("/stream_options/include_usage") == Some(&json!(true)) {
        let mut last = event(json!([]));
        last["usage"] = usage;
        events.push(last);
    }
    let mut units: Vec<Bytes> = events.iter().map(|e| Bytes::from(format!("data: {e}\n\n"))).collect();
    units.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream_out(shared, behaviour, units, "text/event-stream")
}

/// Ollama's `/api/generate`: the prompt continued, whole or as JSON lines.
async fn ollama_generate(State(shared): State<Shared>, axum::Json(request): axum::Json<Value>) -> Response {
    let behaviour = match received(&shared, "/api/generate", &request).await {
        Ok(behaviour) => behaviour,
        Err(status) => return ollama_error(status, "model runner crashed on 10.9.8.7"),
    };
    let model = request["model"].as_str().unwrap_or("").to_owned();
    let words = answer_words(&request);
    let line = |response: &str, done: bool| {
        let mut line =
            json!({"model": model, "created_at": "2026-11-26T00:00:00Z", "response": response, "done": done});
        if done {
            line["done_reason"] = json!("stop");
            line["context"] = json!([1, 2, 3]);
            line["prompt_eval_count"] = json!(prompt_tokens(&request));
            line["eval_count"] = json!(words.len());
        }
        line
    };
    if request["stream"] == json!(false) {
        return axum::Json(line(&words.join(" "), true)).into_response();
    }
    let mut lines: Vec<Bytes> = words
        .iter()
        .enumerate()
        .map(|(i, w)| line(&if i == 0 { w.clone() } else { format!(" {w}") }, false))
        .map(|l| Bytes::from(format!("{l}\n")))
        .collect();
    lines.push(Bytes::from(format!("{}\n", line("", true))));
    stream_out(shared, behaviour, lines, "application/x-ndjson")
}

/// Ollama's `/api/show`, for any model but `missing`.
async fn ollama_show(State(shared): State<Shared>, axum::Json(request): axum::Json<Value>) -> Response {
    shared.seen.lock().unwrap().paths.push("/api/show".into());
    let model = request["model"].as_str().unwrap_or("");
    if model == "missing" {
        return ollama_error(StatusCode::NOT_FOUND, &format!("model '{model}' not found"));
    }
    axum::Json(json!({
        "modelfile": "FROM /var/lib/ollama/models/blobs/sha256-0123abcd\nTEMPLATE {{ .Prompt }}\n",
        "parameters": "stop \"<|eot_id|>\"",
        "template": "{{ .Prompt }}",
        "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                    "parameter_size": "8.0B", "quantization_level": "Q4_0"},
        "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
        "capabilities": ["completion"],
        "modified_at": "2026-11-26T00:00:00Z",
    }))
    .into_response()
}

/// Ollama's `/api/ps`: two models loaded, one of them one the gateway
/// was not told this server serves.
async fn ollama_ps() -> axum::Json<Value> {
    let loaded = |name: &str| {
        json!({"name": name, "model": name, "size": 5_000_000_000u64, "size_vram": 5_000_000_000u64,
               "digest": "0123abcd", "expires_at": "2026-12-07T18:00:00Z", "context_length": 8192,
               "details": {"format": "gguf", "family": "llama"}})
    };
    axum::Json(json!({"models": [loaded("on-ollama"), loaded("elsewhere")]}))
}

/// vLLM's error body, with the kind of detail that must not reach a client.
fn vllm_error(status: StatusCode) -> Response {
    let body = json!({"object": "error", "message": "internal detail: GPU 3 out of memory at 10.9.8.7", "code": status.as_u16()});
    (status, axum::Json(body)).into_response()
}

/// Records a request and plays the behaviour's opening: think, or fail.
async fn received(shared: &Shared, path: &str, request: &Value) -> Result<Behaviour, StatusCode> {
    {
        let mut seen = shared.seen.lock().unwrap();
        seen.requests.push(request.clone());
        seen.paths.push(path.into());
    }
    let behaviour = shared.behaviour.lock().unwrap().clone();
    if !behaviour.think.is_zero() {
        tokio::time::sleep(behaviour.think).await;
    }
    match behaviour.fail_with {
        Some(status) => Err(StatusCode::from_u16(status).unwrap()),
        None => Ok(behaviour),
    }
}

/// A vector per input: its word count, then two constants.
async fn embeddings(
    State(shared): State<Shared>,
    uri: axum::http::Uri,
    axum::Json(request): axum::Json<Value>,
) -> Response {
    {
        let mut seen = shared.seen.lock().unwrap();
        seen.requests.push(request.clone());
        seen.paths.push(uri.path().to_owned());
    }
    let inputs: Vec<String> = match &request["input"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        _ => return (StatusCode::BAD_REQUEST, "input").into_response(),
    };
    let words: Vec<usize> = inputs.iter().map(|i| i.split_whitespace().count()).collect();
    let tokens: usize = words.iter().sum();
    let mut vectors: Vec<Vec<f64>> = words.iter().map(|w| vec![*w as f64, 0.5, -1.0, 0.125]).collect();
    if uri.path() == "/api/embed" {
        // An Ollama that does not know `dimensions` (it came late) ignores it.
        return axum::Json(json!({"model": request["model"], "embeddings": vectors, "prompt_eval_count": tokens}))
            .into_response();
    }
    // vLLM shortens vectors only for a model trained for it (Matryoshka).
    if let Some(dimensions) = request["dimensions"].as_u64() {
        if !request["model"].as_str().unwrap_or("").contains("matryoshka") {
            let body = json!({"object": "error", "type": "BadRequestError", "code": 400,
                "message": "Model \"x\" does not support matryoshka representation, changing output dimensions will lead to poor results."});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
        vectors.iter_mut().for_each(|v| v.truncate(dimensions as usize));
    }
    let base64 = request["encoding_format"] == "base64";
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": request["model"],
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}
