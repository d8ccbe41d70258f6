//! The two chat protocols the gateway speaks, OpenAI's and Ollama's, and
//! the translation between them: a request read into a [`Chat`], an answer
//! read into [`Piece`]s, and pieces written out in the other protocol —
//! whole, or streamed (OpenAI: server-sent events; Ollama: JSON lines).
//!
//! Translation keeps what both protocols share: messages, sampling options,
//! the answer's text, why it finished, and the token counts. A request in
//! the upstream's own protocol is not translated at all (see the gateway).

use serde_json::{Map, Value, json};

/// Which protocol a client or an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Ollama,
}

/// What a text request asks for: a reply in a conversation (OpenAI's
/// chat completions, Ollama's chat) or the continuation of a raw prompt
/// (OpenAI's completions, Ollama's generate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Completion,
}

/// Where the text is in a whole answer and in a streamed unit.
fn text_pointers(protocol: Protocol, shape: Shape) -> (&'static str, &'static str) {
    match (protocol, shape) {
        (Protocol::OpenAi, Shape::Chat) => ("/choices/0/message/content", "/choices/0/delta/content"),
        (Protocol::OpenAi, Shape::Completion) => ("/choices/0/text", "/choices/0/text"),
        (Protocol::Ollama, Shape::Chat) => ("/message/content", "/message/content"),
        (Protocol::Ollama, Shape::Completion) => ("/response", "/response"),
    }
}

/// A chat or completion request, whichever protocol it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub shape: Shape,
    pub model: String,
    /// A chat's conversation (empty for a completion).
    pub messages: Vec<Value>,
    /// A completion's prompt, and the system text Ollama's generate takes beside it.
    pub prompt: String,
    pub system: Option<String>,
    pub stream: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
}

/// Tokens one request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A step of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// The end: why, and the counts if the upstream gave them.
    Done {
        reason: String,
        usage: Option<Usage>,
    },
}

/// The most tokens a request may ask to be generated (`max_tokens`,
/// `max_completion_tokens`, Ollama's `num_predict`).
pub const MAX_TOKENS_LIMIT: u64 = 1_000_000;

/// How many tokens a request asks to be generated at most: `None` when it
/// names no limit (Ollama's -1 and -2, "no limit" and "fill the context",
/// name none); `Err` when the value is not a whole number from 1 to
/// [`MAX_TOKENS_LIMIT`] (1e12, 2^63 and -1 have all been sent).
pub fn requested_max_tokens(protocol: Protocol, body: &Value) -> Result<Option<u64>, String> {
    let (name, value) = match protocol {
        Protocol::OpenAi => match body.get("max_completion_tokens") {
            Some(v) => ("max_completion_tokens", Some(v)),
            None => ("max_tokens", body.get("max_tokens")),
        },
        Protocol::Ollama => ("options.num_predict", body.get("options").and_then(|o| o.get("num_predict"))),
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) if protocol == Protocol::Ollama && matches!(v.as_i64(), Some(-1 | -2)) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_TOKENS_LIMIT).contains(&n) => Ok(Some(n)),
            _ => Err(format!("`{name}` must be a whole number from 1 to {MAX_TOKENS_LIMIT}")),
        },
    }
}

/// Reads a chat or completion request in `protocol`; `Err` says what is
/// wrong with it.
pub fn read_chat(protocol: Protocol, shape: Shape, body: &Value) -> Result<Chat, String> {
    let model = body.get("model").and_then(Value::as_str).ok_or("`model` is required")?.to_owned();
    let (messages, prompt) = match shape {
        Shape::Chat => {
            (body.get("messages").and_then(Value::as_array).ok_or("`messages` must be a list")?.clone(), String::new())
        }
        Shape::Completion => {
            let prompt = match body.get("prompt") {
                Some(Value::String(one)) => one.clone(),
                Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
                    list[0].as_str().unwrap_or_default().to_owned()
                }
                None if protocol == Protocol::Ollama => String::new(),
                _ => return Err("`prompt` must be one string (one prompt per request)".into()),
            };
            (Vec::new(), prompt)
        }
    };
    let system = match (protocol, shape) {
        (Protocol::Ollama, Shape::Completion) => body.get("system").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let number = |v: Option<&Value>| v.and_then(Value::as_f64);
    let max_tokens = requested_max_tokens(protocol, body)?;
    Ok(match protocol {
        Protocol::OpenAi => Chat {
            shape,
            model,
            messages,
            prompt,
            system,
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            temperature: number(body.get("temperature")),
            top_p: number(body.get("top_p")),
            max_tokens,
            seed: body.get("seed").and_then(Value::as_i64),
            stop: body.get("stop").cloned(),
        },
        Protocol::Ollama => {
            let options = body.get("options");
            let option = |name: &str| options.and_then(|o| o.get(name));
            Chat {
                shape,
                model,
                messages,
                prompt,
                system,
                // Ollama streams unless told not to.
                stream: body.get("stream").and_then(Value::as_bool).unwrap_or(true),
                temperature: number(option("temperature")),
                top_p: number(option("top_p")),
                max_tokens,
                seed: option("seed").and_then(Value::as_i64),
                stop: option("stop").cloned(),
            }
        }
    })
}

/// The request to send an upstream that speaks `protocol`.
pub fn write_chat(protocol: Protocol, chat: &Chat) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(chat.model));
    match (chat.shape, protocol, &chat.system) {
        (Shape::Chat, _, _) => {
            body.insert("messages".into(), json!(chat.messages));
        }
        (Shape::Completion, Protocol::Ollama, system) => {
            body.insert("prompt".into(), json!(chat.prompt));
            if let Some(system) = system {
                body.insert("system".into(), json!(system));
            }
        }
        // OpenAI's completions have no system text: it goes before the prompt.
        (Shape::Completion, Protocol::OpenAi, Some(system)) => {
            body.insert("prompt".into(), json!(format!("{system}\n\n{}", chat.prompt)));
        }
        (Shape::Completion, Protocol::OpenAi, None) => {
            body.insert("prompt".into(), json!(chat.prompt));
        }
    }
    body.insert("stream".into(), json!(chat.stream));
    let put = |map: &mut Map<String, Value>, name: &str, v: Option<Value>| {
        if let Some(v) = v {
            map.insert(name.into(), v);
        }
    };
    match protocol {
        Protocol::OpenAi => {
            put(&mut body, "temperature", chat.temperature.map(Value::from));
            put(&mut body, "top_p", chat.top_p.map(Value::from));
            put(&mut body, "max_tokens", chat.max_tokens.map(Value::from));
            put(&mut body, "seed", chat.seed.map(Value::from));
            put(&mut body, "stop", chat.stop.clone());
        }
        Protocol::Ollama => {
            let mut options = Map::new();
            put(&mut options, "temperature", chat.temperature.map(Value::from));
            put(&mut options, "top_p", chat.top_p.map(Value::from));
            put(&mut options, "num_predict", chat.max_tokens.map(Value::from));
            put(&mut options, "seed", chat.seed.map(Value::from));
            put(&mut options, "stop", chat.stop.clone());
            if !options.is_empty() {
                body.insert("options".into(), Value::Object(options));
            }
        }
    }
    Value::Object(body)
}

/// The token counts an answer (or a stream's last event) carries.
pub fn usage_of(protocol: Protocol, v: &Value) -> Option<Usage> {
    let count = |p: &str| v.pointer(p).and_then(Value::as_u64);
    match protocol {
        Protocol::OpenAi => v.get("usage").filter(|u| !u.is_null()).map(|_| Usage {
            prompt_tokens: count("/usage/prompt_tokens").unwrap_or(0),
            completion_tokens: count("/usage/completion_tokens").unwrap_or(0),
        }),
        Protocol::Ollama => (v.get("done") == Some(&Value::Bool(true))).then(|| Usage {
            prompt_tokens: count("/prompt_eval_count").unwrap_or(0),
            completion_tokens: count("/eval_count").unwrap_or(0),
        }),
    }
}

/// A whole (not streamed) answer, as pieces.
pub fn read_answer(protocol: Protocol, shape: Shape, v: &Value) -> Vec<Piece> {
    let text = v.pointer(text_pointers(protocol, shape).0).and_then(Value::as_str);
    let reason = match protocol {
        Protocol::OpenAi => v.pointer("/choices/0/finish_reason").and_then(Value::as_str),
        Protocol::Ollama => v.get("done_reason").and_then(Value::as_str),
    };
    vec![
        Piece::Text(text.unwrap_or_default().to_owned()),
        Piece::Done { reason: reason.unwrap_or("stop").to_owned(), usage: usage_of(protocol, v) },
    ]
}

/// Whether a streamed unit carries text. Model servers stream about one
/// token per such unit, which is what a stream cut short is charged.
pub fn carries_text(protocol: Protocol, shape: Shape, v: &Value) -> bool {
    v.pointer(text_pointers(protocol, shape).1).and_then(Value::as_str).is_some_and(|t| !t.is_empty())
}

/// Reads a streamed answer unit by unit (an OpenAI event's data, an Ollama line).
#[derive(Debug)]
pub struct StreamReader {
    shape: Shape,
    reason: Option<String>,
    usage: Option<Usage>,
}

impl StreamReader {
    pub fn new(shape: Shape) -> StreamReader {
        StreamReader { shape, reason: None, usage: None }
    }

    /// The pieces in one unit. OpenAI ends with `[DONE]` after the reason
    /// and the usage event; Ollama's last line carries all three.
    pub fn read(&mut self, protocol: Protocol, unit: &str) -> Vec<Piece> {
        if protocol == Protocol::OpenAi && unit.trim() == "[DONE]" {
            return vec![Piece::Done {
                reason: self.reason.take().unwrap_or_else(|| "stop".into()),
                usage: self.usage.take(),
            }];
        }
        let Ok(v) = serde_json::from_str::<Value>(unit) else { return Vec::new() };
        let mut pieces = Vec::new();
        if carries_text(protocol, self.shape, &v) {
            let text = v.pointer(text_pointers(protocol, self.shape).1).and_then(Value::as_str).unwrap_or_default();
            pieces.push(Piece::Text(text.to_owned()));
        }
        match protocol {
            Protocol::OpenAi => {
                if let Some(reason) = v.pointer("/choices/0/finish_reason").and_then(Value::as_str) {
                    self.reason = Some(reason.to_owned());
                }
                if let Some(usage) = usage_of(protocol, &v) {
                    self.usage = Some(usage);
                }
            }
            Protocol::Ollama => {
                if v.get("done") == Some(&Value::Bool(true)) {
                    let reason = v.get("done_reason").and_then(Value::as_str).unwrap_or("stop").to_owned();
                    pieces.push(Piece::Done { reason, usage: usage_of(protocol, &v) });
                }
            }
        }
        pieces
    }
}

/// A whole answer in the client's protocol.
pub fn write_answer(
    protocol: Protocol,
    shape: Shape,
    model: &str,
    now_secs: i64,
    text: &str,
    reason: &str,
    usage: Usage,
) -> Value {
    match (protocol, shape) {
        (Protocol::OpenAi, Shape::Completion) => json!({
            "id": format!("cmpl-tether-{now_secs}"),
            "object": "text_completion",
            "created": now_secs,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": null}],
            "usage": openai_usage(usage),
        }),
        (Protocol::Ollama, Shape::Completion) => json!({
            "model": model,
            "created_at": rfc3339(now_secs),
            "response": text,
            "done": true,
            "done_reason": reason,
            "prompt_eval_count": usage.prompt_tokens,
            "eval_count": usage.completion_tokens,
        }),
        (Protocol::OpenAi, Shape::Chat) => json!({
            "id": format!("chatcmpl-tether-{now_secs}"),
            "object": "chat.completion",
            "created": now_secs,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": openai_usage(usage),
        }),
        (Protocol::Ollama, Shape::Chat) => json!({
            "model": model,
            "created_at": rfc3339(now_secs),
            "message": {"role": "assistant", "content": text},
            "done": true,
            "done_reason": reason,
            "prompt_eval_count": usage.prompt_tokens,
            "eval_count": usage.completion_tokens,
        }),
    }
}

/// Writes a streamed answer in the client's protocol, piece by piece.
#[derive(Debug)]
pub struct StreamWriter {
    protocol: Protocol,
    shape: Shape,
    model: String,
    now_secs: i64,
    /// OpenAI: send the usage event too (the client asked for it).
    with_usage: bool,
    started: bool,
}

impl StreamWriter {
    pub fn new(protocol: Protocol, shape: Shape, model: &str, now_secs: i64, with_usage: bool) -> StreamWriter {
        StreamWriter { protocol, shape, model: model.to_owned(), now_secs, with_usage, started: false }
    }

    /// The bytes for one piece (whole events or lines).
    pub fn write(&mut self, piece: &Piece) -> Vec<u8> {
        let mut out = Vec::new();
        match self.protocol {
            Protocol::OpenAi => {
                let (id, object) = match self.shape {
                    Shape::Chat => (format!("chatcmpl-tether-{}", self.now_secs), "chat.completion.chunk"),
                    Shape::Completion => (format!("cmpl-tether-{}", self.now_secs), "text_completion"),
                };
                let event = |choices: Value| json!({"id": id, "object": object, "created": self.now_secs, "model": self.model, "choices": choices});
                // A chat's text is in a delta; a completion's is the choice's text.
                let choice = |text: Option<&str>, reason: Value| match self.shape {
                    Shape::Chat => {
                        let delta = text.map_or_else(|| json!({}), |t| json!({"content": t}));
                        json!([{"index": 0, "delta": delta, "finish_reason": reason}])
                    }
                    Shape::Completion => {
                        json!([{"index": 0, "text": text.unwrap_or(""), "finish_reason": reason, "logprobs": null}])
                    }
                };
                let mut events = Vec::new();
                if !self.started && self.shape == Shape::Chat {
                    events.push(event(
                        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
                    ));
                }
                self.started = true;
                match piece {
                    Piece::Text(text) => events.push(event(choice(Some(text), Value::Null))),
                    Piece::Done { reason, usage } => {
                        events.push(event(choice(None, json!(reason))));
                        if self.with_usage {
                            let mut last = event(json!([]));
                            last["usage"] = openai_usage(usage.unwrap_or_default());
                            events.push(last);
                        }
                    }
                }
                for e in events {
                    out.extend_from_slice(format!("data: {e}\n\n").as_bytes());
                }
                if matches!(piece, Piece::Done { .. }) {
                    out.extend_from_slice(b"data: [DONE]\n\n");
                }
            }
            Protocol::Ollama => {
                let mut line = json!({"model": self.model, "created_at": rfc3339(self.now_secs)});
                let text = match piece {
                    Piece::Text(text) => text.as_str(),
                    Piece::Done { .. } => "",
                };
                match self.shape {
                    Shape::Chat => line["message"] = json!({"role": "assistant", "content": text}),
                    Shape::Completion => line["response"] = json!(text),
                }
                line["done"] = json!(matches!(piece, Piece::Done { .. }));
                if let Piece::Done { reason, usage } = piece {
                    let usage = usage.unwrap_or_default();
                    line["done_reason"] = json!(reason);
                    line["prompt_eval_count"] = json!(usage.prompt_tokens);
                    line["eval_count"] = json!(usage.completion_tokens);
                }
                out.extend_from_slice(format!("{line}\n").as_bytes());
            }
        }
        out
    }
}

/// An embeddings request, whichever protocol it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Embed {
    pub model: String,
    pub input: Vec<String>,
}

/// Reads an embeddings request (`input`: a string or a list of strings,
/// in both protocols).
pub fn read_embed(body: &Value) -> Result<Embed, String> {
    let model = body.get("model").and_then(Value::as_str).ok_or("`model` is required")?.to_owned();
    let input = match body.get("input") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("`input` must be text")?,
        _ => return Err("`input` must be a string or a list of strings".into()),
    };
    Ok(Embed { model, input })
}

/// The body for an upstream (both protocols take the same shape).
pub fn write_embed(embed: &Embed) -> Value {
    json!({"model": embed.model, "input": embed.input})
}

/// The vectors and the prompt's token count in an embeddings answer.
pub fn read_vectors(protocol: Protocol, v: &Value) -> Option<(Vec<Value>, u64)> {
    match protocol {
        Protocol::OpenAi => {
            let mut data = v.get("data")?.as_array()?.clone();
            data.sort_by_key(|d| d.get("index").and_then(Value::as_u64).unwrap_or(0));
            let vectors = data.into_iter().map(|d| d.get("embedding").cloned()).collect::<Option<Vec<_>>>()?;
            Some((vectors, v.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0)))
        }
        Protocol::Ollama => {
            let vectors = v.get("embeddings")?.as_array()?.clone();
            Some((vectors, v.get("prompt_eval_count").and_then(Value::as_u64).unwrap_or(0)))
        }
    }
}

/// An embeddings answer in the client's protocol.
pub fn write_vectors(protocol: Protocol, model: &str, vectors: Vec<Value>, prompt_tokens: u64) -> Value {
    match protocol {
        Protocol::OpenAi => {
            let data: Vec<Value> = vectors
                .into_iter()
                .enumerate()
                .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
                .collect();
            json!({"object": "list", "data": data, "model": model,
                   "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
        }
        Protocol::Ollama => json!({"model": model, "embeddings": vectors, "prompt_eval_count": prompt_tokens}),
    }
}

fn openai_usage(u: Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.prompt_tokens + u.completion_tokens})
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
