//! Offline models: the site's model-signing key, bundle imports, the list
//! of imported models.
//!
//! An import's body is the bundle itself, streamed to a staging file
//! ([`super::uploads`]: a model is gigabytes).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState, uploads};
use tether_base::crypto::p256::PublicKey;
use tether_domain::llm::models::{self, ModelInfo, Target};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyBody {
    /// The public half, PEM (`-----BEGIN PUBLIC KEY-----`), P-256.
    pub public_key_pem: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SigningKeyView {
    pub key_id: String,
    pub set_at: String,
    pub set_by: String,
}

impl From<&models::TrustedKey> for SigningKeyView {
    fn from(k: &models::TrustedKey) -> Self {
        SigningKeyView { key_id: k.key_id.clone(), set_at: k.set_at.to_rfc3339(), set_by: k.set_by.clone() }
    }
}

pub async fn set_signing_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SigningKeyBody>,
) -> Result<axum::Json<SigningKeyView>, ApiError> {
    let key = PublicKey::from_pem(&body.public_key_pem).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let trusted = state.models.trust_signing_key(&caller.origin, caller.principal.clone(), key).await?;
    Ok(axum::Json(SigningKeyView::from(&trusted)))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModelList {
    /// The key bundles must be signed with; none until a security officer sets it.
    pub signing_key: Option<SigningKeyView>,
    pub models: Vec<ModelInfo>,
}

pub async fn list(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<ModelList>, ApiError> {
    let (key, imported) = state.models.listing()?;
    Ok(axum::Json(ModelList {
        signing_key: key.as_ref().map(SigningKeyView::from),
        models: imported.iter().map(ModelInfo::from).collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// `ollama` (the default) or `vllm-dir`.
    pub into: Option<String>,
    /// Which Ollama upstream, when there are several.
    pub upstream: Option<String>,
}

pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<ModelInfo>), ApiError> {
    let target = match (query.into.as_deref().unwrap_or("ollama"), query.upstream) {
        ("ollama", upstream) => Target::Ollama { upstream },
        ("vllm-dir", None) => Target::VllmDir,
        ("vllm-dir", Some(_)) => return Err(ApiError::InvalidRequest("a vllm-dir import names no upstream".into())),
        (other, _) => {
            return Err(ApiError::InvalidRequest(format!("into={other:?}: import into ollama or vllm-dir")));
        }
    };
    let length = uploads::fitting_length(&state, &headers).await?;
    let (staged, file) = state.models.begin(&target)?;
    uploads::receive(body, file, length, state.config.limits.idle_timeout).await?;
    let model = state.models.import(&staged, target, caller.principal, caller.origin).await?;
    Ok((StatusCode::CREATED, axum::Json(ModelInfo::from(&model))))
}
