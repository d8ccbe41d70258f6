//! Large uploads (model bundles, firmware updates): the body is the bundle
//! itself, streamed to a file. It is not held to `max_body_bytes` nor to
//! `request_timeout` (a bundle is hundreds of megabytes to gigabytes), but
//! its length must be declared and fit the disk, and a client that stops
//! sending for `idle_timeout` is cut off.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::{ApiError, AppState};

/// Room left on the disk beside a received bundle, for the store to go on writing.
const HEADROOM: u64 = 256 << 20;

/// The body's declared length, once it fits the data directory's free space.
pub async fn fitting_length(state: &AppState, headers: &HeaderMap) -> Result<u64, ApiError> {
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
    Ok(length)
}

/// Writes the body to `file`: exactly `length` bytes, none of them more
/// than `idle` after the last.
pub async fn receive(
    mut body: Body,
    file: std::fs::File,
    length: u64,
    idle: std::time::Duration,
) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::from_std(file);
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
