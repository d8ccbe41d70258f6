//! The agent card (`GET /.well-known/agent-card.json`): who the appliance
//! is to an A2A client, where its JSON-RPC endpoint is — built from the
//! address the client used, so what reached the card reaches the endpoint
//! as written — that it streams, that it takes an API token as a bearer
//! credential, and its skills: what the site's enrolled workers say they
//! run, a skill per handler and per allowed command, with each command's
//! parameters as a JSON Schema (an extension, since a skill has no field
//! for one). It names the site's commands, so only a token that may read
//! tasks is shown it (the client sends its bearer token for the card too).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use serde_json::{Value, json};

use super::wire::PROTOCOL_VERSION;
use crate::{ApiError, AppState};

/// Where the JSON-RPC endpoint is.
pub const ENDPOINT: &str = "/a2a/v1";
/// The extension whose parameters carry each skill's input schema.
pub const INPUT_SCHEMAS: &str = "urn:tether:a2a:skill-input-schemas:v1";

/// One skill: what it runs on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skill {
    /// A handler kind whose input is the message's data as it is.
    Kind(String),
    /// An allowed command: the data is its `params`.
    Command(String),
}

impl Skill {
    pub fn id(&self) -> String {
        match self {
            Skill::Kind(kind) => kind.clone(),
            Skill::Command(name) => format!("command.{name}"),
        }
    }

    /// The skill an id names (whether any worker offers it is for the caller).
    pub fn from_id(id: &str) -> Skill {
        match id.strip_prefix("command.") {
            Some(name) => Skill::Command(name.to_owned()),
            None => Skill::Kind(id.to_owned()),
        }
    }

    /// The broker task it makes of a message's input: kind and input.
    pub fn task(&self, input: Value) -> (String, Value) {
        match self {
            Skill::Kind(kind) => (kind.clone(), input),
            Skill::Command(name) => ("command".to_owned(), json!({"command": name, "params": input})),
        }
    }
}

/// The skills the active workers offer, by id, with the input schema where
/// one is known.
pub fn skills(state: &AppState) -> Result<BTreeMap<String, Option<Value>>, ApiError> {
    let active: Vec<_> = state.authority.workers()?.into_iter().filter(|w| !w.revoked).map(|w| w.id).collect();
    let mut skills = BTreeMap::new();
    for (worker, offers, _) in state.broker.offers()? {
        if !active.contains(&worker) {
            continue;
        }
        for kind in offers.kinds.iter().filter(|k| *k != "command") {
            skills.entry(Skill::Kind(kind.clone()).id()).or_insert(None);
        }
        for command in offers.commands {
            skills.insert(Skill::Command(command.name).id(), Some(command.params_schema));
        }
    }
    Ok(skills)
}

/// The address the client used: `https://` and its `Host`.
pub fn base_url(headers: &HeaderMap, uri: &Uri, state: &AppState) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)));
    match host {
        Some(host) => format!("https://{host}"),
        None => {
            let name = state.config.server_names.first().map_or("localhost", String::as_str);
            format!("https://{name}")
        }
    }
}

pub async fn agent_card(
    State(state): State<AppState>,
    _caller: crate::extract::Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<axum::Json<Value>, ApiError> {
    let base = base_url(&headers, &uri, &state);
    let skills = skills(&state)?;
    let described = |id: &str, schema: &Option<Value>| {
        let description = match Skill::from_id(id) {
            Skill::Command(name) => format!(
                "Runs the site's command {name:?} on a worker that allows it; the input (a data part, or a \
                 text part holding a JSON object) is its parameters"
            ),
            Skill::Kind(kind) if kind == "echo" => "Answers with its input: a check that the workers answer".into(),
            Skill::Kind(kind) if kind == "llm.chat" => {
                "One chat with a model on a worker's model server: {\"model\", \"messages\", \"options\"?}".into()
            }
            Skill::Kind(kind) => format!("Runs a {kind} task on a worker"),
        };
        let mut skill = json!({
            "id": id,
            "name": id,
            "description": description,
            "tags": ["tether"],
            "inputModes": ["application/json", "text/plain"],
            "outputModes": ["application/json"],
        });
        if let Some(schema) = schema {
            skill["examples"] = json!([format!("input schema: {schema}")]);
        }
        skill
    };
    let schemas: serde_json::Map<String, Value> =
        skills.iter().filter_map(|(id, s)| s.clone().map(|s| (id.clone(), s))).collect();
    let card = json!({
        "name": format!("Tether ({})", state.config.server_names.first().map_or("appliance", String::as_str)),
        "description": "The site's task broker: each message becomes a task that one of the site's workers runs; \
                        name the skill in message.metadata.skill",
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{
            "url": format!("{base}{ENDPOINT}"),
            "protocolBinding": "JSONRPC",
            "protocolVersion": PROTOCOL_VERSION,
        }],
        "provider": {"organization": "Tether", "url": base},
        "capabilities": {
            "streaming": true,
            "pushNotifications": false,
            "extensions": [{
                "uri": INPUT_SCHEMAS,
                "description": "Each skill's input, as a JSON Schema, by skill id",
                "required": false,
                "params": schemas,
            }],
        },
        "securitySchemes": {
            "bearer": {"httpAuthSecurityScheme": {
                "scheme": "bearer",
                "description": "An API token of the appliance (tether token create); its role decides what it may do",
            }},
        },
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
        "defaultInputModes": ["application/json", "text/plain"],
        "defaultOutputModes": ["application/json"],
        "skills": skills.iter().map(|(id, schema)| described(id, schema)).collect::<Vec<_>>(),
    });
    Ok(axum::Json(card))
}
