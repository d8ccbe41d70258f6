//! The firmware image's updates in the console: what runs, and an update
//! uploaded here (the body is the release bundle, [`super::uploads`]),
//! checked as `tether update apply` checks it and handed to the root unit
//! that applies it and restarts the machine
//! ([`tether_domain::firmware::upload`]).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::extract::Caller;
use super::{ApiError, AppState, uploads};
use tether_domain::firmware::upload::{Status, Uploads};

#[derive(Debug, Serialize, Deserialize)]
pub struct FirmwareView {
    /// The release the running slot holds.
    pub version: String,
    pub commit: String,
    /// The last upload's progress or outcome, until the next restart.
    pub update: Option<Status>,
}

fn uploads(state: &AppState) -> Result<&Uploads, ApiError> {
    state.firmware.as_deref().ok_or(ApiError::NotTheImage)
}

/// `GET /api/v1/system/firmware`.
pub async fn status(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<FirmwareView>, ApiError> {
    let (running, update) = uploads(&state)?.current();
    Ok(axum::Json(FirmwareView { version: running.version.to_string(), commit: running.commit.clone(), update }))
}

/// `POST /api/v1/system/firmware/update`: the bundle → 202 once it is
/// checked and handed over; the machine restarts into it when written.
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<FirmwareView>), ApiError> {
    let firmware = uploads(&state)?;
    let length = uploads::fitting_length(&state, &headers).await?;
    let (staged, file) = firmware.begin()?;
    uploads::receive(body, file, length, state.config.limits.idle_timeout).await?;
    let by = caller.person().to_owned();
    firmware.hand_over(staged, &by, caller.origin).await?;
    let (running, update) = firmware.current();
    let view = FirmwareView { version: running.version.to_string(), commit: running.commit.clone(), update };
    Ok((StatusCode::ACCEPTED, axum::Json(view)))
}
