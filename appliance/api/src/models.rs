//! Offline models: the site's model-signing key, bundle imports, the list
//! of imported models.
//!
//! An import's body is the bundle itself, streamed to a staging file: it is
//! not held to `max_body_bytes` nor to `request_timeout` (a model is
//! gigabytes), but its length must be declared and fit the disk, and a
//! client that stops sending for `idle_timeout` is cut off.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use tether_base::crypto::p256::PublicKey;
use tether_domain::llm::models::{self, ModelInfo, Target};

/// Room left on the disk beside a staged bundle, for the store to go on writing.
const HEADROOM: u64 = 256 << 20;

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
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(ApiError::LengthRequired)?;
    let available = tokio::task::spawn_blocking({
        let space = state.space.clone();
        move || space.check()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("checking free space")))?
    .available_bytes;
    if length.saturating_add(HEADROOM) > available {
        return Err(ApiError::BundleTooLarge(format!(
            "the bundle ({}) does not fit in the data directory's free space ({}, of which {} stays free)",
            gib(length),
            gib(available),
            gib(HEADROOM)
        )));
    }

    let (staged, file) = state.models.begin(&target)?;
    receive(body, tokio::fs::File::from_std(file), length, state.config.limits.idle_timeout).await?;
    let model = state.models.import(&staged, target, caller.principal, caller.origin).await?;
    Ok((StatusCode::CREATED, axum::Json(ModelInfo::from(&model))))
}

/// Writes the body to `file`: exactly `length` bytes, none of them more
/// than `idle` after the last.
async fn receive(
    mut body: Body,
    mut file: tokio::fs::File,
    length: u64,
    idle: std::time::Duration,
) -> Result<(), ApiError> {
    let mut received = 0u64;
    let write_failed =
        |e: std::io::Error| ApiError::internal(anyhow::Error::new(e).context("writing the staged bundle"));
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ApiError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::InvalidRequest(format!("the upload broke off: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        received += data.len() as u64;
        if received > length {
            return Err(ApiError::InvalidRequest("the body is longer than its Content-Length".into()));
        }
        file.write_all(&data).await.map_err(write_failed)?;
    }
    if received != length {
        return Err(ApiError::InvalidRequest(format!("the upload ended after {received} of {length} bytes")));
    }
    file.flush().await.map_err(write_failed)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1 << 30))
}
