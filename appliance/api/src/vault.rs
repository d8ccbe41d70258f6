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
use tether_domain::vault::{self, Credential};

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
    pub(super) fn credential(self) -> Result<Credential, ApiError> {
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

/// `GET /api/v1/sys/vault/events`: the vault's status as Server-Sent
/// Events (`event: vault`), now and at every change — a share given, a
/// reset, the ceremony's expiry, an unseal, a seal — so every officer's
/// browser follows one ceremony live. Open while sealed, like the status.
pub async fn events(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let (vault, clock) = (state.vault.clone(), state.clock.clone());
    let changes = vault.changes();
    // State: the receiver, whether the first event is still to send, and
    // when the shares of the status last sent expire.
    let stream = futures_util::stream::unfold((changes, true, None), move |(mut changes, first, expiry)| {
        let (vault, clock) = (vault.clone(), clock.clone());
        async move {
            if !first {
                // The next change, or the moment the ceremony's shares expire.
                let until_expiry = expiry.map(|at: tether_base::clock::Timestamp| at.since(clock.now()));
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    () = tokio::time::sleep(until_expiry.unwrap_or(std::time::Duration::MAX)), if until_expiry.is_some() => {}
                }
            }
            let status = vault.status().ok()?;
            let expiry = status.shares.and_then(|p| p.expires_at);
            let event = Event::default().event("vault").json_data(&status).ok()?;
            Some((Ok::<_, std::convert::Infallible>(event), (changes, false, expiry)))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
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

/// The unseal method to move to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "method", rename_all = "snake_case")]
pub enum NewMethod {
    Shares { shares: u8, threshold: u8 },
    Passphrase { passphrase: Zeroizing<String> },
    KeyFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RekeyBody {
    /// The present credentials: the passphrase, a quorum of shares, or the key file.
    current: Vec<UnsealBody>,
    new: NewMethod,
}

impl std::fmt::Debug for RekeyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RekeyBody(****)")
    }
}

/// The new unseal material, shown once.
#[derive(Serialize)]
pub struct Rekeyed {
    method: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shares: Vec<Zeroizing<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Rekeyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rekeyed").field("method", &self.method).finish_non_exhaustive()
    }
}

pub async fn rekey(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RekeyBody>,
) -> Result<axum::Json<Rekeyed>, ApiError> {
    let current = body.current.into_iter().map(UnsealBody::credential).collect::<Result<Vec<_>, _>>()?;
    let (choice, method) = match body.new {
        NewMethod::Shares { shares, threshold } => (vault::Choice::Shares { threshold, count: shares }, "shares"),
        NewMethod::Passphrase { passphrase } => (vault::Choice::Passphrase(passphrase), "passphrase"),
        NewMethod::KeyFile => (vault::Choice::KeyFile, "key_file"),
    };
    let material = state.vault.rekey(&caller.origin, current, choice).await?;
    let (shares, key_file) = match material {
        vault::Material::Shares(s) => (s, None),
        vault::Material::KeyFile(k) => (Vec::new(), Some(k)),
        vault::Material::None => (Vec::new(), None),
    };
    Ok(axum::Json(Rekeyed { method, shares, key_file }))
}
