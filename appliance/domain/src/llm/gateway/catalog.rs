//! What the gateway tells Ollama clients about models beyond their names:
//! `/api/show` (a model's details) and `/api/ps` (the models loaded now),
//! asked of the Ollama servers that serve them, with what would name a
//! server's files or addresses left out. An OpenAI-style server (vLLM)
//! keeps the models it serves loaded; little more is known of them.

use serde_json::{Value, json};

use super::super::keys::VirtualKey;
use super::super::relay::QUIET_TIMEOUT;
use super::super::upstreams::{self, Upstream, UpstreamKind};
use super::{Gateway, GatewayError, lock};

/// What `/api/show` passes on of Ollama's answer.
const SHOWN: [&str; 8] =
    ["license", "system", "parameters", "template", "details", "model_info", "capabilities", "modified_at"];
/// What `/api/ps` passes on of each model Ollama has loaded.
const RUNNING: [&str; 7] = ["name", "model", "size", "size_vram", "expires_at", "details", "context_length"];

impl Gateway {
    /// Ollama's `/api/show` for a model this key may call: asked of an
    /// Ollama server serving it, with what would name the server's files
    /// (the modelfile) left out; for a model only OpenAI-style servers
    /// serve, the little that is known.
    pub async fn show(&self, key: &VirtualKey, model: &str) -> Result<Value, GatewayError> {
        if !key.allows_model(model) {
            return Err(GatewayError::ModelNotAllowed(model.to_owned()));
        }
        let serving: Vec<Upstream> =
            self.store.read(upstreams::list)?.into_iter().filter(|u| u.models.iter().any(|m| m == model)).collect();
        if serving.is_empty() {
            return Err(GatewayError::ModelNotFound(model.to_owned()));
        }
        let ollamas: Vec<&Upstream> = serving.iter().filter(|u| u.kind == UpstreamKind::Ollama).collect();
        if ollamas.is_empty() {
            return Ok(json!({
                "details": {"format": "", "family": "", "parameter_size": "", "quantization_level": ""},
                "model_info": {}, "capabilities": ["completion"], "modified_at": "1970-01-01T00:00:00Z",
            }));
        }
        for upstream in ollamas {
            let url = format!("{}/api/show", upstream.url.trim_end_matches('/'));
            let request = upstreams::authorize(&self.vault, upstream, self.client(upstream)?.post(url))?;
            let answer =
                match tokio::time::timeout(QUIET_TIMEOUT, request.json(&json!({ "model": model })).send()).await {
                    Ok(Ok(response)) if response.status().is_success() => response.json::<Value>().await.ok(),
                    Ok(Ok(response)) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                        return Err(GatewayError::ModelNotFound(model.to_owned()));
                    }
                    _ => None,
                };
            if let Some(Value::Object(mut info)) = answer {
                info.retain(|k, _| SHOWN.contains(&k.as_str()));
                return Ok(Value::Object(info));
            }
            tracing::warn!(upstream = %upstream.name, "upstream could not show a model; trying the next");
        }
        Err(GatewayError::Unavailable)
    }

    /// Ollama's `/api/ps`: the models this key may call that are loaded
    /// now — those an Ollama server says it has loaded, and those a healthy
    /// OpenAI-style server serves. A server that does not answer is left
    /// out (this is a listing, not a call).
    pub async fn running(&self, key: &VirtualKey) -> Result<Vec<Value>, GatewayError> {
        let upstreams = self.store.read(upstreams::list)?;
        let mut running: Vec<Value> = Vec::new();
        let mut add = |model: Value| {
            let name = model.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
            if !running.iter().any(|m| m["model"] == name.as_str()) {
                running.push(model);
            }
        };
        for upstream in &upstreams {
            let allowed = |m: &str| key.allows_model(m) && upstream.models.iter().any(|served| served == m);
            match upstream.kind {
                UpstreamKind::Openai => {
                    if lock(&self.health).get(&upstream.name).is_some_and(|h| !h.healthy) {
                        continue;
                    }
                    for model in upstream.models.iter().filter(|m| key.allows_model(m)) {
                        add(json!({"name": model, "model": model, "size": 0, "size_vram": 0,
                                   "expires_at": "9999-12-31T23:59:59Z"}));
                    }
                }
                UpstreamKind::Ollama => {
                    for model in self.ollama_running(upstream).await {
                        if model.get("model").and_then(Value::as_str).is_some_and(allowed) {
                            add(model);
                        }
                    }
                }
            }
        }
        running.sort_by(|a, b| a["model"].as_str().cmp(&b["model"].as_str()));
        Ok(running)
    }

    /// What an Ollama server says it has loaded (nothing, if it does not say).
    async fn ollama_running(&self, upstream: &Upstream) -> Vec<Value> {
        let url = format!("{}/api/ps", upstream.url.trim_end_matches('/'));
        let Ok(client) = self.client(upstream) else { return Vec::new() };
        let Ok(request) = upstreams::authorize(&self.vault, upstream, client.get(url)) else { return Vec::new() };
        let answer = match tokio::time::timeout(super::PROBE_TIMEOUT, request.send()).await {
            Ok(Ok(response)) if response.status().is_success() => response.json::<Value>().await.ok(),
            _ => None,
        };
        let models = answer.and_then(|a| a.get("models").and_then(Value::as_array).cloned()).unwrap_or_default();
        models
            .into_iter()
            .filter_map(|m| match m {
                Value::Object(mut m) => {
                    m.retain(|k, _| RUNNING.contains(&k.as_str()));
                    Some(Value::Object(m))
                }
                _ => None,
            })
            .collect()
    }
}
