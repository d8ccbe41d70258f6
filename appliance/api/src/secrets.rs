//! Secret routes: write a version, list and read metadata, delete.
//!
//! Values go in and never come out: every answer here is metadata (name,
//! versions, who wrote them, policy). Workers receive values with a task's
//! lease, on the worker gateway ([`super::workers::poll`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use tether_domain::vault::secrets::{NewVersion, Policy, SecretRecord};

/// A new version. The value as text (`value`) or as bytes (`value_base64`),
/// exactly one; the policy is required the first time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    value: Option<Zeroizing<String>>,
    value_base64: Option<Zeroizing<String>>,
    policy: Option<PolicyBody>,
}

impl std::fmt::Debug for PutBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutBody").field("policy", &self.policy).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    kinds: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
}

impl PutBody {
    fn value(&self) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        match (&self.value, &self.value_base64) {
            (Some(text), None) => Ok(Zeroizing::new(text.as_bytes().to_vec())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(Zeroizing::new)
                // The decoder's message may quote the input: say only what is wrong.
                .map_err(|_| ApiError::InvalidRequest("value_base64 is not valid base64".into())),
            _ => Err(ApiError::InvalidRequest("give exactly one of value or value_base64".into())),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VersionView {
    version: u32,
    created_at: String,
    created_by: String,
}

#[derive(Debug, Serialize)]
pub struct PolicyView {
    kinds: Vec<String>,
    labels: Vec<String>,
}

/// A secret as anyone sees it: never its value.
#[derive(Debug, Serialize)]
pub struct SecretView {
    name: String,
    version: u32,
    policy: PolicyView,
    versions: Vec<VersionView>,
}

fn view(r: SecretRecord) -> SecretView {
    SecretView {
        name: r.name.clone(),
        version: r.current(),
        policy: PolicyView { kinds: r.policy.kinds, labels: r.policy.labels },
        versions: r
            .versions
            .into_iter()
            .map(|v| VersionView {
                version: v.version,
                created_at: v.created_at.to_rfc3339(),
                created_by: v.created_by,
            })
            .collect(),
    }
}

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PutBody>,
) -> Result<(StatusCode, axum::Json<SecretView>), ApiError> {
    let value = body.value()?;
    let policy = body.policy.map(|p| Policy { kinds: p.kinds, labels: p.labels });
    let record = state.vault.put_secret(&caller.origin, NewVersion { name, value, policy }).await?;
    let status = if record.versions.len() == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(view(record))))
}

pub async fn list(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<Vec<SecretView>>, ApiError> {
    Ok(axum::Json(state.vault.secrets()?.into_iter().map(view).collect()))
}

pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<SecretView>, ApiError> {
    let record = state.vault.secret(&name)?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(view(record)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.vault.delete_secret(&caller.origin, name).await?;
    Ok(StatusCode::NO_CONTENT)
}
