//! Embeddings in both protocols: OpenAI's `/v1/embeddings` (vectors as
//! floats, or as base64 of little-endian float32 when `encoding_format`
//! asks — which the official clients do by default), Ollama's `/api/embed`
//! and its older `/api/embeddings` (one prompt, one vector).
//!
//! The upstream is always asked for floats, and the client's encoding is
//! written here, so an answer never comes in a shape the client did not
//! ask for. `dimensions` is passed on and the answer checked against it: a
//! server that cannot shorten its vectors is refused, not relayed.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::Protocol;

/// How the client wants its vectors written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    /// Base64 of the vector as little-endian float32, as OpenAI writes it.
    Base64,
}

/// An embeddings request, whichever protocol it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Embed {
    pub protocol: Protocol,
    /// Ollama's older `/api/embeddings`: one `prompt`, answered `{"embedding": […]}`.
    pub legacy: bool,
    pub model: String,
    pub input: Vec<String>,
    pub encoding: Encoding,
    /// How long each vector must be, when the client said.
    pub dimensions: Option<u64>,
    body: Value,
}

/// Reads an embeddings request (`input`: a string or a list of strings, in
/// both protocols; the older Ollama route's `prompt`).
pub fn read_embed(protocol: Protocol, legacy: bool, body: &Value) -> Result<Embed, String> {
    let model = body.get("model").and_then(Value::as_str).ok_or("`model` is required")?.to_owned();
    let input = if legacy {
        vec![body.get("prompt").and_then(Value::as_str).ok_or("`prompt` must be a string")?.to_owned()]
    } else {
        match body.get("input") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("`input` must be text (a string or a list of strings; token ids are not taken)")?,
            _ => return Err("`input` must be a string or a list of strings".into()),
        }
    };
    let encoding = match (protocol, body.get("encoding_format")) {
        (Protocol::Ollama, _) | (_, None | Some(Value::Null)) => Encoding::Float,
        (Protocol::OpenAi, Some(Value::String(f))) if f == "float" => Encoding::Float,
        (Protocol::OpenAi, Some(Value::String(f))) if f == "base64" => Encoding::Base64,
        (Protocol::OpenAi, Some(_)) => return Err("`encoding_format` must be \"float\" or \"base64\"".into()),
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|d| *d >= 1).ok_or("`dimensions` must be a whole number from 1")?),
    };
    Ok(Embed { protocol, legacy, model, input, encoding, dimensions, body: body.clone() })
}

/// The body for an upstream that speaks `to` (`/v1/embeddings` or
/// `/api/embed`): the client's own request in its own protocol (asking
/// for floats), else what both protocols share.
pub fn write_embed(to: Protocol, embed: &Embed) -> Result<Value, String> {
    if to == embed.protocol && !embed.legacy {
        let mut same = embed.body.clone();
        if to == Protocol::OpenAi {
            same["encoding_format"] = json!("float");
        }
        return Ok(same);
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(embed.model));
    out.insert("input".into(), json!(embed.input));
    if let Some(d) = embed.dimensions {
        out.insert("dimensions".into(), json!(d));
    }
    match (to, embed.protocol) {
        (Protocol::OpenAi, _) => {
            out.insert("encoding_format".into(), json!("float"));
            if let Some(Value::Object(options)) = embed.body.get("options")
                && let Some(name) = options.keys().next()
            {
                return Err(format!(
                    "`options.{name}` cannot be passed on: the server for this model speaks OpenAI's protocol, \
                     which has no such setting (remove it)"
                ));
            }
        }
        // The older route to a current Ollama: its options and keep-alive go too.
        (Protocol::Ollama, _) => {
            for field in ["options", "keep_alive", "truncate"] {
                if let Some(v) = embed.body.get(field) {
                    out.insert(field.into(), v.clone());
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// The vectors (as floats) and the prompt's token count in an embeddings
/// answer from an upstream asked for floats.
pub fn read_vectors(protocol: Protocol, v: &Value) -> Option<(Vec<Vec<f64>>, u64)> {
    let floats = |e: &Value| e.as_array()?.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>();
    match protocol {
        Protocol::OpenAi => {
            let mut data = v.get("data")?.as_array()?.clone();
            data.sort_by_key(|d| d.get("index").and_then(Value::as_u64).unwrap_or(0));
            let vectors = data.iter().map(|d| d.get("embedding").and_then(floats)).collect::<Option<Vec<_>>>()?;
            Some((vectors, v.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0)))
        }
        Protocol::Ollama => {
            let vectors = v.get("embeddings")?.as_array()?.iter().map(floats).collect::<Option<Vec<_>>>()?;
            Some((vectors, v.get("prompt_eval_count").and_then(Value::as_u64).unwrap_or(0)))
        }
    }
}

/// An embeddings answer as the client asked for it.
pub fn write_vectors(embed: &Embed, vectors: Vec<Vec<f64>>, prompt_tokens: u64) -> Value {
    match (embed.protocol, embed.legacy) {
        (Protocol::OpenAi, _) => {
            let data: Vec<Value> = vectors
                .into_iter()
                .enumerate()
                .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": encoded(&e, embed.encoding)}))
                .collect();
            json!({"object": "list", "data": data, "model": embed.model,
                   "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
        }
        (Protocol::Ollama, true) => json!({"embedding": vectors.into_iter().next().unwrap_or_default()}),
        (Protocol::Ollama, false) => {
            json!({"model": embed.model, "embeddings": vectors, "prompt_eval_count": prompt_tokens})
        }
    }
}

fn encoded(vector: &[f64], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Float => json!(vector),
        Encoding::Base64 => {
            // float32 is the format: OpenAI's clients decode it so.
            #[allow(clippy::cast_possible_truncation)]
            let bytes: Vec<u8> = vector.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}
