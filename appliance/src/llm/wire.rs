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

/// A chat request, whichever protocol it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub model: String,
    pub messages: Vec<Value>,
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

/// Reads a chat request in `protocol`; `Err` says what is wrong with it.
pub fn read_chat(protocol: Protocol, body: &Value) -> Result<Chat, String> {
    let model = body.get("model").and_then(Value::as_str).ok_or("`model` is required")?.to_owned();
    let messages = body.get("messages").and_then(Value::as_array).ok_or("`messages` must be a list")?.clone();
    let number = |v: Option<&Value>| v.and_then(Value::as_f64);
    Ok(match protocol {
        Protocol::OpenAi => Chat {
            model,
            messages,
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            temperature: number(body.get("temperature")),
            top_p: number(body.get("top_p")),
            max_tokens: body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(Value::as_u64),
            seed: body.get("seed").and_then(Value::as_i64),
            stop: body.get("stop").cloned(),
        },
        Protocol::Ollama => {
            let options = body.get("options");
            let option = |name: &str| options.and_then(|o| o.get(name));
            Chat {
                model,
                messages,
                // Ollama streams unless told not to.
                stream: body.get("stream").and_then(Value::as_bool).unwrap_or(true),
                temperature: number(option("temperature")),
                top_p: number(option("top_p")),
                max_tokens: option("num_predict").and_then(Value::as_u64),
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
    body.insert("messages".into(), json!(chat.messages));
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
pub fn read_answer(protocol: Protocol, v: &Value) -> Vec<Piece> {
    let (text, reason) = match protocol {
        Protocol::OpenAi => (
            v.pointer("/choices/0/message/content").and_then(Value::as_str),
            v.pointer("/choices/0/finish_reason").and_then(Value::as_str),
        ),
        Protocol::Ollama => {
            (v.pointer("/message/content").and_then(Value::as_str), v.get("done_reason").and_then(Value::as_str))
        }
    };
    vec![
        Piece::Text(text.unwrap_or_default().to_owned()),
        Piece::Done { reason: reason.unwrap_or("stop").to_owned(), usage: usage_of(protocol, v) },
    ]
}

/// Reads a streamed answer unit by unit (an OpenAI event's data, an Ollama line).
#[derive(Debug, Default)]
pub struct StreamReader {
    reason: Option<String>,
    usage: Option<Usage>,
}

impl StreamReader {
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
        match protocol {
            Protocol::OpenAi => {
                if let Some(text) = v.pointer("/choices/0/delta/content").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    pieces.push(Piece::Text(text.to_owned()));
                }
                if let Some(reason) = v.pointer("/choices/0/finish_reason").and_then(Value::as_str) {
                    self.reason = Some(reason.to_owned());
                }
                if let Some(usage) = usage_of(protocol, &v) {
                    self.usage = Some(usage);
                }
            }
            Protocol::Ollama => {
                if let Some(text) = v.pointer("/message/content").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    pieces.push(Piece::Text(text.to_owned()));
                }
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
pub fn write_answer(protocol: Protocol, model: &str, now_secs: i64, text: &str, reason: &str, usage: Usage) -> Value {
    match protocol {
        Protocol::OpenAi => json!({
            "id": format!("chatcmpl-tether-{now_secs}"),
            "object": "chat.completion",
            "created": now_secs,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": openai_usage(usage),
        }),
        Protocol::Ollama => json!({
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
    model: String,
    now_secs: i64,
    /// OpenAI: send the usage event too (the client asked for it).
    with_usage: bool,
    started: bool,
}

impl StreamWriter {
    pub fn new(protocol: Protocol, model: &str, now_secs: i64, with_usage: bool) -> StreamWriter {
        StreamWriter { protocol, model: model.to_owned(), now_secs, with_usage, started: false }
    }

    /// The bytes for one piece (whole events or lines).
    pub fn write(&mut self, piece: &Piece) -> Vec<u8> {
        let mut out = Vec::new();
        match self.protocol {
            Protocol::OpenAi => {
                let chunk = |delta: Value, reason: Value| {
                    json!({
                        "id": format!("chatcmpl-tether-{}", self.now_secs), "object": "chat.completion.chunk",
                        "created": self.now_secs, "model": self.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                    })
                };
                let mut events = Vec::new();
                if !self.started {
                    self.started = true;
                    events.push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
                }
                match piece {
                    Piece::Text(text) => events.push(chunk(json!({"content": text}), Value::Null)),
                    Piece::Done { reason, usage } => {
                        events.push(chunk(json!({}), json!(reason)));
                        if self.with_usage {
                            events.push(json!({
                                "id": format!("chatcmpl-tether-{}", self.now_secs), "object": "chat.completion.chunk",
                                "created": self.now_secs, "model": self.model, "choices": [],
                                "usage": openai_usage(usage.unwrap_or_default()),
                            }));
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
                let line = match piece {
                    Piece::Text(text) => json!({
                        "model": self.model, "created_at": rfc3339(self.now_secs),
                        "message": {"role": "assistant", "content": text}, "done": false,
                    }),
                    Piece::Done { reason, usage } => {
                        let usage = usage.unwrap_or_default();
                        json!({
                            "model": self.model, "created_at": rfc3339(self.now_secs),
                            "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": reason,
                            "prompt_eval_count": usage.prompt_tokens, "eval_count": usage.completion_tokens,
                        })
                    }
                };
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
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_messages_and_options_across_protocols() {
        let openai = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5,
                            "max_tokens": 20, "stop": ["x"], "stream": true});
        let chat = read_chat(Protocol::OpenAi, &openai).unwrap();
        let ollama = write_chat(Protocol::Ollama, &chat);
        assert_eq!(ollama["options"], json!({"temperature": 0.5, "num_predict": 20, "stop": ["x"]}));
        assert_eq!(read_chat(Protocol::Ollama, &ollama).unwrap(), chat, "and back");
        assert!(
            read_chat(Protocol::Ollama, &json!({"model": "m", "messages": []})).unwrap().stream,
            "Ollama streams by default"
        );
        assert!(read_chat(Protocol::OpenAi, &json!({"messages": []})).is_err());
    }

    #[test]
    fn an_ollama_stream_becomes_openai_events_ending_with_usage_and_done() {
        let mut reader = StreamReader::default();
        let mut writer = StreamWriter::new(Protocol::OpenAi, "m", 0, true);
        let mut out = Vec::new();
        for line in [
            r#"{"message":{"role":"assistant","content":"he"},"done":false}"#,
            r#"{"message":{"role":"assistant","content":"llo"},"done":false}"#,
            r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":7,"eval_count":2}"#,
        ] {
            for piece in reader.read(Protocol::Ollama, line) {
                out.extend(writer.write(&piece));
            }
        }
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 6, "role, two texts, finish, usage, [DONE]: {text}");
        assert!(events[1].contains("\"content\":\"he\"") && events[2].contains("\"content\":\"llo\""));
        assert!(events[4].contains("\"prompt_tokens\":7") && events[4].contains("\"completion_tokens\":2"));
        assert_eq!(events[5], "data: [DONE]");
    }

    #[test]
    fn an_openai_stream_becomes_ollama_lines_whose_last_carries_the_counts() {
        let mut reader = StreamReader::default();
        let mut writer = StreamWriter::new(Protocol::Ollama, "m", 0, false);
        let mut lines = Vec::new();
        for unit in [
            r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
            "[DONE]",
        ] {
            for piece in reader.read(Protocol::OpenAi, unit) {
                lines.push(serde_json::from_slice::<Value>(&writer.write(&piece)).unwrap());
            }
        }
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0]["message"]["content"].as_str(), lines[0]["done"].as_bool()), (Some("hi"), Some(false)));
        assert_eq!(lines[1]["done_reason"], "length");
        assert_eq!((lines[1]["prompt_eval_count"].as_u64(), lines[1]["eval_count"].as_u64()), (Some(3), Some(1)));
    }
}
