//! The two chat protocols the gateway speaks, OpenAI's and Ollama's, and
//! the translation between them: a request read into a [`Chat`], an answer
//! read into [`Piece`]s (or a whole [`Output`]), and written out in the
//! other protocol — whole, or streamed (OpenAI: server-sent events; Ollama:
//! JSON lines, see [`stream`]); embeddings in [`embed`].
//!
//! Translation keeps what both protocols can say: messages with their
//! images and tool calls, the tools offered, a JSON answer, sampling
//! options, the answer's text and tool calls, why it finished, and the
//! token counts ([`translate`]); what one cannot say is refused by name. A
//! request in the upstream's own protocol is not translated at all (see the
//! gateway).

mod embed;
mod stream;
mod translate;

use serde_json::{Map, Value, json};

pub use embed::{Embed, Encoding, read_embed, read_vectors, write_embed, write_vectors};
pub use stream::{StreamReader, StreamWriter};
pub use translate::{Format, ToolCall};

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

/// A chat or completion request, whichever protocol it came in: what the
/// gateway needs to know of it, and the request itself for translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub shape: Shape,
    /// The protocol it came in.
    pub protocol: Protocol,
    pub model: String,
    /// A chat's conversation, as the client wrote it (empty for a completion).
    pub messages: Vec<Value>,
    /// A completion's prompt, and the system text Ollama's generate takes beside it.
    pub prompt: String,
    pub system: Option<String>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// An answer constrained to JSON.
    pub format: Option<Format>,
    /// The tools the model may call (a chat's).
    pub tools: Vec<Value>,
    /// The request as it came.
    body: Value,
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
    /// Tools the model asks to be called (whole: a stream's come in one piece).
    ToolCalls(Vec<ToolCall>),
    /// The end: why, and the counts if the upstream gave them.
    Done {
        reason: String,
        usage: Option<Usage>,
    },
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    /// Why it finished, as OpenAI says it (`stop`, `length`, `tool_calls`).
    pub reason: String,
    pub usage: Usage,
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
    let format = match protocol {
        Protocol::OpenAi => translate::read_openai_format(body)?,
        Protocol::Ollama => translate::read_ollama_format(body)?,
    };
    Ok(Chat {
        shape,
        protocol,
        model,
        messages,
        prompt,
        system,
        // Ollama streams unless told not to.
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(protocol == Protocol::Ollama),
        max_tokens: requested_max_tokens(protocol, body)?,
        format,
        tools: if shape == Shape::Chat { translate::read_tools(body)? } else { Vec::new() },
        body: body.clone(),
    })
}

/// What Ollama's generate takes that OpenAI's completions have no word for
/// (a chat's images are in its messages, and do cross).
const OLLAMA_ONLY: [&str; 5] = ["images", "template", "raw", "context", "suffix"];

/// The request to send an upstream that speaks `to`: the request itself
/// in its own protocol, else the translation; `Err` names what the other
/// protocol cannot say.
pub fn write_chat(to: Protocol, chat: &Chat) -> Result<Value, String> {
    if to == chat.protocol {
        let mut same = chat.body.clone();
        same["stream"] = json!(chat.stream);
        return Ok(same);
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(chat.model));
    match (chat.shape, to, &chat.system) {
        (Shape::Chat, Protocol::OpenAi, _) => {
            body.insert("messages".into(), json!(translate::ollama_messages_to_openai(&chat.messages)?));
        }
        (Shape::Chat, Protocol::Ollama, _) => {
            body.insert("messages".into(), json!(translate::openai_messages_to_ollama(&chat.messages)?));
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
    if chat.protocol == Protocol::Ollama
        && let Some(field) = OLLAMA_ONLY.iter().find(|f| chat.body.get(**f).is_some_and(|v| !v.is_null()))
    {
        return Err(format!(
            "`{field}` cannot be passed on: the server for this model speaks OpenAI's protocol, which has no such field"
        ));
    }
    let sampling = match chat.protocol {
        Protocol::OpenAi => translate::openai_sampling(&chat.body),
        Protocol::Ollama => translate::ollama_sampling(chat.body.get("options"))?,
    };
    if let Some(format) = &chat.format {
        let (field, value) = translate::write_format(format, to == Protocol::Ollama);
        body.insert(field.into(), value);
    }
    let mut tools = chat.tools.clone();
    if chat.protocol == Protocol::OpenAi {
        match chat.body.get("tool_choice") {
            None | Some(Value::Null) => {}
            Some(Value::String(choice)) if choice == "auto" => {}
            Some(Value::String(choice)) if choice == "none" => tools.clear(),
            Some(_) => {
                return Err("`tool_choice` cannot be passed on: the server for this model speaks Ollama's \
                            protocol, where the model chooses (use \"auto\" or \"none\")"
                    .into());
            }
        }
        if chat.body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
            return Err("`n` above 1 cannot be passed on: the server for this model speaks Ollama's protocol, \
                        which gives one answer per request"
                .into());
        }
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    match to {
        Protocol::OpenAi => {
            translate::put_sampling(&mut body, &sampling, false);
            if let Some(n) = chat.max_tokens {
                body.insert("max_tokens".into(), json!(n));
            }
        }
        Protocol::Ollama => {
            let mut options = Map::new();
            translate::put_sampling(&mut options, &sampling, true);
            if let Some(n) = chat.max_tokens {
                options.insert("num_predict".into(), json!(n));
            }
            if !options.is_empty() {
                body.insert("options".into(), Value::Object(options));
            }
        }
    }
    Ok(Value::Object(body))
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

/// A whole (not streamed) answer.
pub fn read_answer(protocol: Protocol, shape: Shape, v: &Value) -> Output {
    let text = v.pointer(text_pointers(protocol, shape).0).and_then(Value::as_str);
    let (reason, calls) = match protocol {
        Protocol::OpenAi => {
            (v.pointer("/choices/0/finish_reason").and_then(Value::as_str), v.pointer("/choices/0/message/tool_calls"))
        }
        Protocol::Ollama => (v.get("done_reason").and_then(Value::as_str), v.pointer("/message/tool_calls")),
    };
    let tool_calls: Vec<ToolCall> = calls
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .enumerate()
                .filter_map(|(i, call)| match protocol {
                    Protocol::OpenAi => translate::read_openai_call(call).ok(),
                    Protocol::Ollama => translate::read_ollama_call(call, &format!("call_{i}")).ok(),
                })
                .collect()
        })
        .unwrap_or_default();
    let reason = match reason.unwrap_or("stop") {
        // Ollama says stop when the model called a tool; OpenAI says so.
        "stop" if !tool_calls.is_empty() => "tool_calls",
        reason => reason,
    };
    Output {
        text: text.unwrap_or_default().to_owned(),
        tool_calls,
        reason: reason.to_owned(),
        usage: usage_of(protocol, v).unwrap_or_default(),
    }
}

/// Why an answer finished, as `protocol` says it.
fn finish_reason(protocol: Protocol, reason: &str) -> &str {
    match (protocol, reason) {
        (Protocol::Ollama, "tool_calls") => "stop",
        (_, reason) => reason,
    }
}

/// Whether a streamed unit carries text. Model servers stream about one
/// token per such unit, which is what a stream cut short is charged.
pub fn carries_text(protocol: Protocol, shape: Shape, v: &Value) -> bool {
    v.pointer(text_pointers(protocol, shape).1).and_then(Value::as_str).is_some_and(|t| !t.is_empty())
}

/// A whole answer in the client's protocol.
pub fn write_answer(protocol: Protocol, shape: Shape, model: &str, now_secs: i64, output: &Output) -> Value {
    let (text, usage) = (output.text.as_str(), output.usage);
    let reason = finish_reason(protocol, &output.reason);
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
        (Protocol::OpenAi, Shape::Chat) => {
            let mut message = json!({"role": "assistant", "content": text});
            if !output.tool_calls.is_empty() {
                let calls: Vec<Value> = output.tool_calls.iter().map(|c| translate::openai_call(c, None)).collect();
                message["tool_calls"] = Value::Array(calls);
            }
            json!({
                "id": format!("chatcmpl-tether-{now_secs}"),
                "object": "chat.completion",
                "created": now_secs,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": openai_usage(usage),
            })
        }
        (Protocol::Ollama, Shape::Chat) => {
            let mut message = json!({"role": "assistant", "content": text});
            if !output.tool_calls.is_empty() {
                message["tool_calls"] = Value::Array(output.tool_calls.iter().map(translate::ollama_call).collect());
            }
            json!({
                "model": model,
                "created_at": rfc3339(now_secs),
                "message": message,
                "done": true,
                "done_reason": reason,
                "prompt_eval_count": usage.prompt_tokens,
                "eval_count": usage.completion_tokens,
            })
        }
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
