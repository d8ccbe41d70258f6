//! The vault's routes: status, unseal, seal, key rotation.
//!
//! Unsealing needs no token (the passphrase, share or key file is the
//! credential) and answers while sealed; every attempt is audited by the
//! vault. Sealing and rotation are for admins and security officers.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::extract::{AnonymousOrigin, ApiJson, Caller};
use super::{ApiError, AppState};
use crate::vault::{self, Credential};

/// One of the fields, exactly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsealBody {
    passphrase: Option<Zeroizing<String>>,
    share: Option<Zeroizing<String>>,
    /// The key file's content.
    key_file: Option<Zeroizing<String>>,
    /// `true` forgets the shares given so far.
    #[serde(default)]
    reset: bool,
}

impl std::fmt::Debug for UnsealBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsealBody(****)")
    }
}

impl UnsealBody {
    fn credential(self) -> Result<Credential, ApiError> {
        match (self.passphrase, self.share, self.key_file, self.reset) {
            (Some(p), None, None, false) => Ok(Credential::Passphrase(p)),
            (None, Some(s), None, false) => Ok(Credential::Share(s)),
            (None, None, Some(k), false) => Ok(Credential::KeyFile(k)),
            (None, None, None, true) => Ok(Credential::Reset),
            _ => {
                Err(ApiError::InvalidRequest("give exactly one of passphrase, share, key_file, or reset: true".into()))
            }
        }
    }
}

pub async fn status(State(state): State<AppState>) -> Result<axum::Json<vault::Status>, ApiError> {
    Ok(axum::Json(state.vault.status()?))
}

pub async fn unseal(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    ApiJson(body): ApiJson<UnsealBody>,
) -> Result<axum::Json<vault::Status>, ApiError> {
    let credential = body.credential()?;
    Ok(axum::Json(state.vault.unseal(&origin, credential).await?))
}

pub async fn seal(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<vault::Status>, ApiError> {
    state.vault.seal(&caller.origin).await?;
    Ok(axum::Json(state.vault.status()?))
}

#[derive(Debug, Serialize)]
pub struct Rotated {
    key_version: u32,
}

pub async fn rotate(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Rotated>, ApiError> {
    let key_version = state.vault.rotate(&caller.origin, "command").await?;
    Ok(axum::Json(Rotated { key_version }))
}
