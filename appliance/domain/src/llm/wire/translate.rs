//! What a chat carries beyond its text, across the two protocols: images,
//! tools and tool calls, a JSON answer (mode or schema), and sampling
//! options. Both sides name the same things differently:
//!
//! - images: OpenAI puts them in a message's content as `image_url` parts
//!   (a `data:` URL); Ollama beside the content as bare base64 `images`;
//! - tool calls: OpenAI's carry an id and their arguments as a JSON string,
//!   and answers name the call they answer (`tool_call_id`); Ollama's
//!   arguments are an object and answers name the tool (`tool_name`);
//! - a JSON answer: OpenAI's `response_format`, Ollama's `format`;
//! - sampling: OpenAI's top-level fields (vLLM adds `top_k`, `min_p`,
//!   `repetition_penalty`), Ollama's `options`.
//!
//! A chat is read into OpenAI's form (messages as OpenAI writes them) and
//! written out in Ollama's when the server speaks it. What one side cannot
//! say is refused with the field's name, never dropped: a request whose
//! answer would not be what the client asked for is worse than an error.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Sampling settings both protocols know: OpenAI's (or vLLM's) name, Ollama's option.
/// The most to generate is not here: it is checked (see `requested_max_tokens`).
pub const SAMPLING: [(&str, &str); 9] = [
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("seed", "seed"),
    ("stop", "stop"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("repetition_penalty", "repeat_penalty"),
];

/// A tool the model asked to be called, and with what.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// A JSON object.
    pub arguments: Value,
}

/// An answer constrained to JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// Any JSON object.
    Json,
    /// JSON matching this schema.
    Schema(Value),
}

/// The sampling settings of an OpenAI request, by OpenAI's names.
pub fn openai_sampling(body: &Value) -> Map<String, Value> {
    SAMPLING
        .iter()
        .filter_map(|(name, _)| body.get(*name).filter(|v| !v.is_null()).map(|v| ((*name).to_owned(), v.clone())))
        .collect()
}

/// The sampling settings in Ollama's `options`, by OpenAI's names; `Err`
/// names an option an OpenAI-style server has no equivalent for.
pub fn ollama_sampling(options: Option<&Value>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let Some(options) = options.filter(|o| !o.is_null()) else { return Ok(out) };
    let options = options.as_object().ok_or("`options` must be an object")?;
    for (name, value) in options {
        if name == "num_predict" || value.is_null() {
            continue;
        }
        let (openai, _) = SAMPLING.iter().find(|(_, ollama)| ollama == name).ok_or_else(|| {
            format!(
                "`options.{name}` cannot be passed on: the server for this model speaks OpenAI's protocol, \
                 which has no such setting (remove it)"
            )
        })?;
        out.insert((*openai).to_owned(), value.clone());
    }
    Ok(out)
}

/// Writes sampling settings (OpenAI's names) into `target`, by OpenAI's
/// names or, for Ollama, its option names.
pub fn put_sampling(target: &mut Map<String, Value>, sampling: &Map<String, Value>, ollama: bool) {
    for (openai, ollama_name) in SAMPLING {
        if let Some(v) = sampling.get(openai) {
            target.insert((if ollama { ollama_name } else { openai }).to_owned(), v.clone());
        }
    }
}

/// Ollama's `format`: `"json"` or a JSON schema.
pub fn read_ollama_format(body: &Value) -> Result<Option<Format>, String> {
    match body.get("format") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Format::Json)),
        Some(schema @ Value::Object(_)) => Ok(Some(Format::Schema(schema.clone()))),
        Some(_) => Err("`format` must be \"json\" or a JSON schema".into()),
    }
}

/// OpenAI's `response_format`.
pub fn read_openai_format(body: &Value) -> Result<Option<Format>, String> {
    let Some(format) = body.get("response_format").filter(|f| !f.is_null()) else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Format::Json)),
        Some("json_schema") => match format.pointer("/json_schema/schema") {
            Some(schema @ Value::Object(_)) => Ok(Some(Format::Schema(schema.clone()))),
            _ => Err("`response_format.json_schema.schema` must be a JSON schema".into()),
        },
        _ => Err("`response_format.type` must be text, json_object or json_schema".into()),
    }
}

/// The format as `protocol` asks for it: `(field, value)`.
pub fn write_format(format: &Format, ollama: bool) -> (&'static str, Value) {
    match (format, ollama) {
        (Format::Json, true) => ("format", json!("json")),
        (Format::Schema(schema), true) => ("format", schema.clone()),
        (Format::Json, false) => ("response_format", json!({"type": "json_object"})),
        (Format::Schema(schema), false) => {
            ("response_format", json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}))
        }
    }
}

/// The tools offered: both protocols write them alike (`{"type":
/// "function", "function": {"name", "description", "parameters"}}`).
pub fn read_tools(body: &Value) -> Result<Vec<Value>, String> {
    match body.get("tools") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(tools)) => {
            let named = |t: &Value| t.pointer("/function/name").and_then(Value::as_str).is_some();
            if tools.iter().all(named) {
                Ok(tools.clone())
            } else {
                Err("each of `tools` must be {\"type\": \"function\", \"function\": {\"name\", …}}".into())
            }
        }
        Some(_) => Err("`tools` must be a list".into()),
    }
}

/// Ollama's messages in OpenAI's form. Tool calls get ids (Ollama's own,
/// or made up in order), and each tool answer the id of the call it
/// answers: the first one not yet answered with the tool's name, else the
/// first one not yet answered.
pub fn ollama_messages_to_openai(messages: &[Value]) -> Result<Vec<Value>, String> {
    let mut unanswered: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for (m, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).ok_or("each message needs a `role`")?;
        let content = message.get("content").and_then(Value::as_str).unwrap_or("");
        let mut converted = json!({"role": role, "content": content});
        if let Some(images) = message.get("images").filter(|i| !i.is_null()) {
            let images = images.as_array().ok_or("a message's `images` must be a list of base64 strings")?;
            let mut parts = vec![json!({"type": "text", "text": content})];
            for image in images {
                let image = image.as_str().ok_or("a message's `images` must be a list of base64 strings")?;
                let url = format!("data:{};base64,{image}", image_type(image)?);
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            converted["content"] = Value::Array(parts);
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let mut written = Vec::new();
            for (i, call) in calls.iter().enumerate() {
                let call = read_ollama_call(call, &format!("call_{m}_{i}"))?;
                unanswered.push((call.id.clone(), call.name.clone()));
                written.push(openai_call(&call, None));
            }
            converted["tool_calls"] = Value::Array(written);
        }
        if role == "tool" {
            let name = message.get("tool_name").or_else(|| message.get("name")).and_then(Value::as_str);
            let at = name
                .and_then(|n| unanswered.iter().position(|(_, called)| called == n))
                .or_else(|| (!unanswered.is_empty()).then_some(0))
                .ok_or("a `tool` message answers no tool call before it")?;
            converted["tool_call_id"] = json!(unanswered.remove(at).0);
        }
        out.push(converted);
    }
    Ok(out)
}

/// OpenAI's messages (as read) in Ollama's form.
pub fn openai_messages_to_ollama(messages: &[Value]) -> Result<Vec<Value>, String> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        let role = match message.get("role").and_then(Value::as_str).ok_or("each message needs a `role`")? {
            // Ollama knows no developer role; it is what system was.
            "developer" => "system",
            role => role,
        };
        let mut text = String::new();
        let mut images = Vec::new();
        match message.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => text.push_str(s),
            Some(Value::Array(parts)) => {
                for part in parts {
                    match part.get("type").and_then(Value::as_str) {
                        Some("text") => text.push_str(part.get("text").and_then(Value::as_str).unwrap_or("")),
                        Some("image_url") => images.push(inline_image(part)?),
                        other => {
                            return Err(format!(
                                "a content part of type {} cannot be passed to this model's server \
                                 (it speaks Ollama's protocol: text and images only)",
                                other.unwrap_or("(none)")
                            ));
                        }
                    }
                }
            }
            Some(_) => return Err("a message's `content` must be text or a list of parts".into()),
        }
        let mut converted = json!({"role": role, "content": text});
        if !images.is_empty() {
            converted["images"] = json!(images);
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let mut written = Vec::new();
            for call in calls {
                let call = read_openai_call(call)?;
                names.push((call.id.clone(), call.name.clone()));
                written.push(json!({"function": {"name": call.name, "arguments": call.arguments}}));
            }
            converted["tool_calls"] = Value::Array(written);
        }
        if role == "tool"
            && let Some(id) = message.get("tool_call_id").and_then(Value::as_str)
            && let Some((_, name)) = names.iter().find(|(called, _)| called == id)
        {
            converted["tool_name"] = json!(name);
        }
        out.push(converted);
    }
    Ok(out)
}

/// A tool call as Ollama writes it (`{"function": {"name", "arguments": {…}}}`).
pub fn read_ollama_call(call: &Value, default_id: &str) -> Result<ToolCall, String> {
    let name = call.pointer("/function/name").and_then(Value::as_str).ok_or("a tool call needs a function name")?;
    let arguments = match call.pointer("/function/arguments") {
        None | Some(Value::Null) => json!({}),
        Some(args @ Value::Object(_)) => args.clone(),
        Some(_) => return Err("a tool call's `arguments` must be an object".into()),
    };
    let id = call.get("id").and_then(Value::as_str).unwrap_or(default_id);
    Ok(ToolCall { id: id.to_owned(), name: name.to_owned(), arguments })
}

/// A tool call as OpenAI writes it (arguments a JSON string).
pub fn read_openai_call(call: &Value) -> Result<ToolCall, String> {
    let name = call.pointer("/function/name").and_then(Value::as_str).ok_or("a tool call needs a function name")?;
    let text = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
    let arguments: Value = serde_json::from_str(if text.trim().is_empty() { "{}" } else { text })
        .map_err(|_| format!("the arguments of the tool call {name:?} are not JSON"))?;
    let id = call.get("id").and_then(Value::as_str).unwrap_or("call_0");
    Ok(ToolCall { id: id.to_owned(), name: name.to_owned(), arguments })
}

/// A tool call as OpenAI writes it; in a stream, with its `index`.
pub fn openai_call(call: &ToolCall, index: Option<usize>) -> Value {
    let mut out = json!({"id": call.id, "type": "function",
                         "function": {"name": call.name, "arguments": call.arguments.to_string()}});
    if let Some(index) = index {
        out["index"] = json!(index);
    }
    out
}

/// A tool call as Ollama writes it.
pub fn ollama_call(call: &ToolCall) -> Value {
    json!({"function": {"name": call.name, "arguments": call.arguments}})
}

/// The base64 of an image given inline (`data:…;base64,…`). The appliance
/// fetches nothing: an image by URL is refused.
fn inline_image(part: &Value) -> Result<String, String> {
    let url = part.pointer("/image_url/url").and_then(Value::as_str).ok_or("an image_url part needs a url")?;
    match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
        Some((_, data)) => Ok(data.to_owned()),
        None => Err("an image must be given inline as a data: URL with base64 (the appliance fetches nothing)".into()),
    }
}

/// The media type of a base64 image, from its first bytes.
fn image_type(image: &str) -> Result<&'static str, String> {
    let head: String = image.chars().take(24).collect();
    let usable = head.len() - head.len() % 4;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&head[..usable])
        .map_err(|_| "a message's `images` must be base64".to_owned())?;
    let kinds: [(&[u8], &str); 4] =
        [(b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp")];
    kinds
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, kind)| *kind)
        .ok_or_else(|| "an image must be PNG, JPEG, GIF or WebP".to_owned())
}
