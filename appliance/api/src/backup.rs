//! `POST /api/v1/sys/backup`: a consistent snapshot of the running
//! appliance, as one file (see [`tether_domain::backup`]). Admins only.
//! `POST /api/v1/sys/backup/restore-tests`: a backup of this appliance's
//! was restored elsewhere and checked (`tether restore-test`).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::extract::Caller;
use super::{ApiError, AppState};
use tether_domain::backup::{self, DataFile, RestoreTest};

pub async fn create(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let keys = state.vault.keys()?;
    let mut files = Vec::with_capacity(backup::FILES.len());
    for name in backup::FILES {
        let path = state.config.data_dir.join(name);
        let content = tokio::fs::read(&path)
            .await
            .map_err(|e| ApiError::internal(anyhow::Error::new(e).context(format!("reading {}", path.display()))))?;
        files.push(DataFile { name, content: content.into() });
    }
    let (header, file) = backup::take(&state.store, keys, state.clock.now(), caller.origin, files).await?;
    let mut response = file.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Ok(name) = HeaderValue::from_str(&format!("attachment; filename=\"tether-epoch-{}.backup\"", header.epoch)) {
        headers.insert(header::CONTENT_DISPOSITION, name);
    }
    if let Ok(epoch) = HeaderValue::from_str(&header.epoch.to_string()) {
        headers.insert("tether-backup-epoch", epoch);
    }
    Ok(response)
}

/// Records a tested restore; 422 `backup_not_ours` unless the backup's
/// HMAC verifies under this appliance's keys.
pub async fn restore_tested(
    State(state): State<AppState>,
    caller: Caller,
    super::extract::ApiJson(test): super::extract::ApiJson<RestoreTest>,
) -> Result<axum::http::StatusCode, ApiError> {
    let keys = state.vault.keys()?;
    let now = state.clock.now();
    state.store.write(move |tx| backup::record_restore_test(tx, now, &caller.origin, &keys, &test)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
