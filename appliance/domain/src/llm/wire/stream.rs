//! Streamed answers read unit by unit (an OpenAI event's data, an Ollama
//! line) into [`Piece`]s, and pieces written as the client's protocol
//! streams them. OpenAI streams a tool call in fragments (its name first,
//! then its arguments' text in pieces, by index); Ollama sends each call
//! whole: fragments are gathered and handed on whole when the answer
//! finishes.

use serde_json::{Value, json};

use super::translate::{self, ToolCall};
use super::{Piece, Protocol, Shape, Usage, carries_text, finish_reason, rfc3339, text_pointers, usage_of};

/// Reads a streamed answer unit by unit (an OpenAI event's data, an Ollama line).
#[derive(Debug)]
pub struct StreamReader {
    shape: Shape,
    reason: Option<String>,
    usage: Option<Usage>,
    /// OpenAI's tool calls so far, by index: id, name, arguments' text.
    calls: Vec<(String, String, String)>,
    /// Ollama's tool calls so far (for their made-up ids).
    ollama_calls: usize,
}

impl StreamReader {
    pub fn new(shape: Shape) -> StreamReader {
        StreamReader { shape, reason: None, usage: None, calls: Vec::new(), ollama_calls: 0 }
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
                if let Some(fragments) = v.pointer("/choices/0/delta/tool_calls").and_then(Value::as_array) {
                    self.gather(fragments);
                }
                if let Some(reason) = v.pointer("/choices/0/finish_reason").and_then(Value::as_str) {
                    self.reason = Some(reason.to_owned());
                    if !self.calls.is_empty() {
                        pieces.push(Piece::ToolCalls(self.gathered()));
                    }
                }
                if let Some(usage) = usage_of(protocol, &v) {
                    self.usage = Some(usage);
                }
            }
            Protocol::Ollama => {
                if let Some(calls) = v.pointer("/message/tool_calls").and_then(Value::as_array) {
                    let calls: Vec<ToolCall> = calls
                        .iter()
                        .filter_map(|call| {
                            self.ollama_calls += 1;
                            translate::read_ollama_call(call, &format!("call_{}", self.ollama_calls - 1)).ok()
                        })
                        .collect();
                    if !calls.is_empty() {
                        self.reason = Some("tool_calls".into());
                        pieces.push(Piece::ToolCalls(calls));
                    }
                }
                if v.get("done") == Some(&Value::Bool(true)) {
                    let reason = match v.get("done_reason").and_then(Value::as_str).unwrap_or("stop") {
                        "stop" if self.reason.is_some() => "tool_calls".to_owned(),
                        reason => reason.to_owned(),
                    };
                    pieces.push(Piece::Done { reason, usage: usage_of(protocol, &v) });
                }
            }
        }
        pieces
    }

    /// Adds OpenAI's tool call fragments to the calls so far.
    fn gather(&mut self, fragments: &[Value]) {
        for fragment in fragments {
            let index = fragment.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if index >= self.calls.len() {
                self.calls.resize(index + 1, Default::default());
            }
            let call = &mut self.calls[index];
            if let Some(id) = fragment.get("id").and_then(Value::as_str) {
                call.0 = id.to_owned();
            }
            if let Some(name) = fragment.pointer("/function/name").and_then(Value::as_str) {
                call.1.push_str(name);
            }
            if let Some(text) = fragment.pointer("/function/arguments").and_then(Value::as_str) {
                call.2.push_str(text);
            }
        }
    }

    /// The gathered calls, whole. Arguments that are not a JSON object
    /// are handed on as their text.
    fn gathered(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .enumerate()
            .filter(|(_, (_, name, _))| !name.is_empty())
            .map(|(i, (id, name, text))| ToolCall {
                id: if id.is_empty() { format!("call_{i}") } else { id },
                name,
                arguments: serde_json::from_str::<Value>(if text.trim().is_empty() { "{}" } else { &text })
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or(Value::String(text)),
            })
            .collect()
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
                    Piece::ToolCalls(calls) if self.shape == Shape::Chat => {
                        let calls: Vec<Value> =
                            calls.iter().enumerate().map(|(i, c)| translate::openai_call(c, Some(i))).collect();
                        let delta = json!({"tool_calls": calls});
                        events.push(event(json!([{"index": 0, "delta": delta, "finish_reason": null}])));
                    }
                    Piece::ToolCalls(_) => {}
                    Piece::Done { reason, usage } => {
                        events.push(event(choice(None, json!(reason))));
                        if self.with_usage {
                            let mut last = event(json!([]));
                            last["usage"] = super::openai_usage(usage.unwrap_or_default());
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
                    Piece::ToolCalls(_) | Piece::Done { .. } => "",
                };
                match self.shape {
                    Shape::Chat => line["message"] = json!({"role": "assistant", "content": text}),
                    Shape::Completion => line["response"] = json!(text),
                }
                if let (Piece::ToolCalls(calls), Shape::Chat) = (piece, self.shape) {
                    line["message"]["tool_calls"] = calls.iter().map(translate::ollama_call).collect();
                }
                line["done"] = json!(matches!(piece, Piece::Done { .. }));
                if let Piece::Done { reason, usage } = piece {
                    let usage = usage.unwrap_or_default();
                    line["done_reason"] = json!(finish_reason(Protocol::Ollama, reason));
                    line["prompt_eval_count"] = json!(usage.prompt_tokens);
                    line["eval_count"] = json!(usage.completion_tokens);
                }
                out.extend_from_slice(format!("{line}\n").as_bytes());
            }
        }
        out
    }
}
