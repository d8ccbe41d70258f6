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
    /// Whether this tether runs from the firmware image (else the rest is null).
    pub on_the_image: bool,
    /// The release the running slot holds.
    pub version: Option<String>,
    pub commit: Option<String>,
    /// The last upload's progress or outcome, until the next restart.
    pub update: Option<Status>,
}

impl FirmwareView {
    fn of(uploads: Option<&Uploads>) -> FirmwareView {
        let Some(uploads) = uploads else {
            return FirmwareView { on_the_image: false, version: None, commit: None, update: None };
        };
        let (running, update) = uploads.current();
        let (version, commit) = (Some(running.version.to_string()), Some(running.commit.clone()));
        FirmwareView { on_the_image: true, version, commit, update }
    }
}

/// `GET /api/v1/system/firmware`.
pub async fn status(State(state): State<AppState>, _caller: Caller) -> axum::Json<FirmwareView> {
    axum::Json(FirmwareView::of(state.firmware.as_deref()))
}

/// `POST /api/v1/system/firmware/update`: the bundle → 202 once it is
/// checked and handed over; the machine restarts into it when written.
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<FirmwareView>), ApiError> {
    let firmware = state.firmware.as_deref().ok_or(ApiError::NotTheImage)?;
    let length = uploads::fitting_length(&state, &headers).await?;
    let (staged, file) = firmware.begin()?;
    uploads::receive(body, file, length, state.config.limits.idle_timeout).await?;
    let by = caller.person().to_owned();
    firmware.hand_over(staged, &by, caller.origin).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(FirmwareView::of(Some(firmware)))))
}
