//! Worker routes: enrollment tokens and the worker list on the console, and
//! the worker gateway (enroll, poll, heartbeat, complete, renew).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{AnonymousOrigin, ApiJson, ApiQuery, Caller, RenewingWorker, WorkerCaller};
use super::{ApiError, AppState, parse_id};
use crate::config::parse_duration;
use tether_base::clock::Timestamp;
use tether_base::ids::{LeaseId, TaskId, WorkerId};
use tether_domain::broker::{Completion, Delivery, TaskError, WorkerView, events};
use tether_domain::pki;
use tether_wire::{
    CompleteReply, DeliveredSecret, EnrollRequest, Enrolled, HeartbeatReply, HeartbeatRequest, LeasedTask, Offers,
    PollReply, PollRequest, ProgressReply, ProgressRequest, RenewRequest, Renewed, Report,
};

#[derive(Debug, Serialize)]
pub struct WorkerSummary {
    id: String,
    labels: Vec<String>,
    enrolled_at: String,
    /// The certificate it holds now (each renewal makes a new serial).
    cert_serial: String,
    cert_not_after: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    renewed_at: Option<String>,
    revoked: bool,
    /// When it last made a request over its certificate; absent if not
    /// since the appliance started (this is kept in memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
}

impl WorkerSummary {
    fn new(w: pki::WorkerRecord, last_seen: Option<Timestamp>) -> WorkerSummary {
        WorkerSummary {
            id: w.id.to_string(),
            labels: w.labels,
            enrolled_at: w.enrolled_at.to_rfc3339(),
            cert_serial: w.cert_serial,
            cert_not_after: w.cert_not_after.to_rfc3339(),
            renewed_at: w.renewed_at.map(|t| t.to_rfc3339()),
            revoked: w.revoked,
            last_seen: last_seen.map(|t| t.to_rfc3339()),
        }
    }
}

pub async fn list(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<Vec<WorkerSummary>>, ApiError> {
    let seen = state.monitor.last_seen();
    let workers = state.authority.workers()?;
    Ok(axum::Json(
        workers
            .into_iter()
            .map(|w| {
                let seen = seen.get(&w.id).copied();
                WorkerSummary::new(w, seen)
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize)]
pub struct RevokedWorker {
    worker_id: String,
    revoked_at: String,
    revoked_by: String,
    /// Its certificates that had not expired; all are in the CRL.
    serials: Vec<String>,
    /// Tasks it held, put back in line (or failed with no attempts left).
    tasks_released: usize,
}

/// Revokes a worker: its handshakes fail and its open connections close as
/// soon as the revocation is durable, then the tasks it held are released.
/// Revoking again answers the same and changes nothing.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<RevokedWorker>, ApiError> {
    let worker: WorkerId = parse_id(&id)?;
    let revocation = state.authority.revoke(&caller.origin, worker).await.map_err(for_an_admin)?;
    let tasks_released = state.broker.release_worker(worker).await?;
    Ok(axum::Json(RevokedWorker {
        worker_id: worker.to_string(),
        revoked_at: revocation.revoked_at.to_rfc3339(),
        revoked_by: revocation.revoked_by,
        serials: revocation.serials,
        tasks_released,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    labels: Vec<String>,
}

/// `PUT /api/v1/workers/{id}/labels`: an admin gives a worker its labels
/// (a worker never chooses its own).
pub async fn set_labels(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LabelsBody>,
) -> Result<axum::Json<WorkerSummary>, ApiError> {
    let worker: WorkerId = parse_id(&id)?;
    let record = state.authority.set_labels(&caller.origin, worker, body.labels).await.map_err(for_an_admin)?;
    let seen = state.monitor.last_seen().get(&worker).copied();
    Ok(axum::Json(WorkerSummary::new(record, seen)))
}

/// An enrollment error on an admin's route: an unknown worker is a 404
/// there (to a worker on its gateway it means "enroll again").
fn for_an_admin(e: pki::EnrollError) -> ApiError {
    match e {
        pki::EnrollError::UnknownWorker => ApiError::NotFound,
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlQuery {
    /// `der` (the default) or `pem`.
    format: Option<String>,
}

/// A CRL signed now by the appliance CA, listing every revoked worker
/// certificate, for other consumers on the site. Public, like any CRL.
pub async fn crl(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CrlQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let pem = match query.format.as_deref() {
        None | Some("der") => false,
        Some("pem") => true,
        Some(other) => return Err(ApiError::InvalidRequest(format!("format must be der or pem, not {other:?}"))),
    };
    let der = state.authority.crl().await?;
    let (body, content_type) =
        if pem { (pki::crl_pem(&der).into_bytes(), "application/x-pem-file") } else { (der, "application/pkix-crl") };
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// If given, the enrolling worker gets exactly these labels.
    labels: Option<Vec<String>>,
    /// Like `15m`; default from the configuration.
    ttl: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenCreated {
    token: String,
    /// `tether://HOST:PORT?token=…&ca=sha256:…` for `tether worker --join`:
    /// the host the caller reached the console by, the worker gateway's
    /// port, and the CA pin.
    join: String,
    id: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Vec<String>>,
}

const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub async fn create_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<(StatusCode, axum::Json<TokenCreated>), ApiError> {
    let ttl = match body.ttl {
        Some(t) => parse_duration(&t).map_err(ApiError::InvalidRequest)?,
        None => state.config.enrollment_token_ttl,
    };
    if ttl.is_zero() || ttl > MAX_ENROLLMENT_TTL {
        return Err(ApiError::InvalidRequest("ttl must be between 1s and 7d".into()));
    }
    let (record, token) = state.authority.enrollment_token(&caller.origin, body.labels, ttl).await?;
    let join = join_string(&state, &uri, &headers, &token)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenCreated {
            token,
            join,
            id: record.id,
            expires_at: record.expires_at.to_rfc3339(),
            labels: record.labels,
        }),
    ))
}

/// The join string for `token`. HTTP/2 carries the host in the URI, HTTP/1.1
/// in the Host header.
fn join_string(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    token: &str,
) -> Result<String, ApiError> {
    let from_header = || {
        let value = headers.get(axum::http::header::HOST)?.to_str().ok()?;
        value.parse::<axum::http::uri::Authority>().ok()
    };
    let authority = uri.authority().cloned().or_else(from_header);
    let host = authority.as_ref().map_or("localhost", |a| a.host());
    let port = state.worker_port;
    // The CA the worker will meet at the end of the enrollment chain.
    let pin = pki::fingerprint_pem(&state.certs.served().own_issuer)?;
    Ok(format!("tether://{host}:{port}?token={token}&ca={pin}"))
}

pub async fn enroll(
    State(state): State<AppState>,
    AnonymousOrigin(origin): AnonymousOrigin,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, axum::Json<Enrolled>), ApiError> {
    let done = state.authority.enroll(origin, body.token, &body.csr_pem, body.labels).await?;
    let (worker_id, cert_pem) = (done.worker.to_string(), done.cert.cert_pem);
    Ok((StatusCode::CREATED, axum::Json(Enrolled { worker_id, cert_pem, ca_pem: done.ca_bundle, labels: done.labels })))
}

/// A delivery as the worker receives it; `None` for one without a lease.
fn leased_task(d: Delivery) -> Option<LeasedTask> {
    let lease = d.task.lease?;
    let secrets =
        d.secrets.into_iter().map(|(r, value)| DeliveredSecret::new(r.name, r.version, value.expose())).collect();
    Some(LeasedTask {
        id: d.task.id.to_string(),
        kind: d.task.kind,
        input: serde_json::from_slice(&d.input).unwrap_or(serde_json::Value::Null),
        secrets,
        lease_id: lease.id.to_string(),
        lease_expires_at: lease.expires_at.to_rfc3339(),
        timeout_s: d.task.timeout.as_secs(),
        attempt: d.task.attempts,
    })
}

pub async fn poll(
    State(state): State<AppState>,
    caller: WorkerCaller,
    ApiJson(body): ApiJson<PollRequest>,
) -> Result<axum::Json<PollReply>, ApiError> {
    let settings = state.broker.settings().clone();
    let view = WorkerView { id: caller.record.id, labels: Arc::new(caller.record.labels) };
    let wait = Duration::from_secs(body.wait_s.unwrap_or(settings.max_poll_wait.as_secs()));
    let delivered = state.broker.poll(&caller.origin, &view, body.max_tasks.unwrap_or(1), wait).await?;
    let tasks = delivered.into_iter().filter_map(leased_task).collect();
    let (ca_pem, renew_now) = state.authority.rotation_news(caller.record.id)?;
    Ok(axum::Json(PollReply {
        tasks,
        lease_s: settings.lease.as_secs(),
        heartbeat_s: settings.heartbeat().as_secs(),
        ca_pem,
        renew_now,
    }))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    caller: WorkerCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatRequest>,
) -> Result<axum::Json<HeartbeatReply>, ApiError> {
    let id: TaskId = parse_id(&id)?;
    let lease: LeaseId = body.lease_id.parse().map_err(|_| ApiError::LeaseStale)?;
    let hb = state.broker.heartbeat(caller.record.id, id, lease).await?;
    Ok(axum::Json(HeartbeatReply { cancel: hb.cancel, lease_expires_at: hb.lease_expires_at.to_rfc3339() }))
}

/// What this worker runs (sent once it reached the broker).
pub async fn offers(
    State(state): State<AppState>,
    caller: WorkerCaller,
    ApiJson(body): ApiJson<Offers>,
) -> Result<axum::Json<Offers>, ApiError> {
    state.broker.set_offers(caller.record.id, body.clone()).await?;
    Ok(axum::Json(body))
}

/// Output one report may carry (a worker sends what it printed every
/// fraction of a second: far less).
const MAX_REPORTED_OUTPUT: usize = 256 * 1024;

pub async fn progress(
    State(state): State<AppState>,
    caller: WorkerCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProgressRequest>,
) -> Result<axum::Json<ProgressReply>, ApiError> {
    let id: TaskId = parse_id(&id)?;
    let lease: LeaseId = body.lease_id.parse().map_err(|_| ApiError::LeaseStale)?;
    if body.percent.is_none() && body.message.is_none() && body.output.is_none() {
        return Err(ApiError::InvalidRequest("report at least one of percent, message and output".into()));
    }
    if body.percent.is_some_and(|p| p > 100) {
        return Err(ApiError::InvalidRequest("percent must be from 0 to 100".into()));
    }
    if body.message.as_ref().is_some_and(|m| m.len() > events::MAX_MESSAGE_BYTES) {
        let most = events::MAX_MESSAGE_BYTES;
        return Err(ApiError::InvalidRequest(format!("a progress message is at most {most} bytes")));
    }
    if body.output.as_ref().is_some_and(|o| o.len() > MAX_REPORTED_OUTPUT) {
        return Err(ApiError::InvalidRequest(format!(
            "one report carries at most {MAX_REPORTED_OUTPUT} bytes of output"
        )));
    }
    let report = events::Progress { percent: body.percent, message: body.message, output: body.output };
    let seq = state.broker.report_progress(caller.record.id, id, lease, report).await?;
    Ok(axum::Json(ProgressReply { seq }))
}

const MAX_ERROR_CODE: usize = 64;
const MAX_ERROR_MESSAGE: usize = 4096;

pub async fn complete(
    State(state): State<AppState>,
    caller: WorkerCaller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Report>,
) -> Result<axum::Json<CompleteReply>, ApiError> {
    let id: TaskId = parse_id(&id)?;
    let (lease_id, completion) = match body {
        Report::Succeeded { lease_id, result } => {
            let result = serde_json::to_vec(&result).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            (lease_id, Completion::Succeeded { result })
        }
        Report::Failed { lease_id, error } => {
            if error.code.is_empty() || error.code.len() > MAX_ERROR_CODE {
                return Err(ApiError::InvalidRequest(format!("error.code must be 1-{MAX_ERROR_CODE} characters")));
            }
            let message: String = error.message.chars().take(MAX_ERROR_MESSAGE).collect();
            let reported = TaskError { code: error.code, message };
            (lease_id, Completion::Failed { error: reported, retryable: error.retryable })
        }
    };
    let lease: LeaseId = lease_id.parse().map_err(|_| ApiError::LeaseStale)?;
    let task = state.broker.complete(&caller.origin, caller.record.id, id, lease, completion).await?;
    Ok(axum::Json(CompleteReply { state: task.state.as_str().into() }))
}

pub async fn renew(
    State(state): State<AppState>,
    RenewingWorker(caller): RenewingWorker,
    ApiJson(body): ApiJson<RenewRequest>,
) -> Result<axum::Json<Renewed>, ApiError> {
    let (worker, presented) = (caller.record.id, caller.peer.serial);
    let done = state.authority.renew(caller.origin, worker, presented, &body.csr_pem).await?;
    let not_after = done.cert.not_after.to_rfc3339();
    Ok(axum::Json(Renewed { cert_pem: done.cert.cert_pem, ca_pem: done.ca_bundle, not_after }))
}
