//! The appliance's certificates as an operator sees them: what is served,
//! until when, and what needs attention.

use axum::extract::{Path, State};
use serde::Serialize;

use super::extract::Caller;
use super::{ApiError, AppState};
use tether_domain::pki::{self, ExpiryAlert};

#[derive(Debug, Serialize)]
pub struct CertificateView {
    /// `ca`, `ca_next` (during a rotation), `server` or `console` (the operator's).
    certificate: &'static str,
    fingerprint: String,
    not_after: String,
}

#[derive(Debug, Serialize)]
pub struct Certificates {
    certificates: Vec<CertificateView>,
    /// Certificates expiring within the warning period, or expired, and
    /// workers whose renewal is overdue.
    alerts: Vec<ExpiryAlert>,
}

pub async fn list(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<Certificates>, ApiError> {
    let served = state.certs.served();
    let set = state.authority.ca_set()?;
    let mut shown = vec![("ca", set.current.clone())];
    shown.extend(set.rotation.map(|r| ("ca_next", r.next_pem)));
    shown.push(("server", served.own));
    shown.extend(served.operator.map(|(pem, _)| ("console", pem)));
    let certificates = shown
        .into_iter()
        .map(|(certificate, pem)| {
            let (_, not_after) = pki::cert_validity(&pem)?;
            let fingerprint = pki::fingerprint_pem(&pem)?;
            Ok(CertificateView { certificate, fingerprint, not_after: not_after.to_rfc3339() })
        })
        .collect::<Result<_, pki::CertError>>()
        .map_err(ApiError::internal)?;
    let alerts = expiry_alerts(&state)?;
    Ok(axum::Json(Certificates { certificates, alerts }))
}

pub fn expiry_alerts(state: &AppState) -> Result<Vec<ExpiryAlert>, ApiError> {
    state.certs.expiry_alerts(&state.store, &state.config, state.clock.now()).map_err(ApiError::internal)
}

/// A CA rotation as an operator follows it.
#[derive(Debug, Serialize)]
pub struct RotationStatus {
    /// `none`, `added` (both trusted, the old CA issues) or `issuing` (the new CA issues).
    phase: &'static str,
    current_ca: String,
    next_ca: Option<String>,
    /// The CA that signs new certificates now.
    issuing_ca: String,
    /// The CA that issued the server certificate being served.
    server_cert_issuer: String,
    workers_active: usize,
    workers_on_new_ca: usize,
    workers: Vec<pki::WorkerProgress>,
}

pub async fn rotation(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<RotationStatus>, ApiError> {
    Ok(axum::Json(rotation_status(&state)?))
}

fn rotation_status(state: &AppState) -> Result<RotationStatus, ApiError> {
    let (set, workers) = state.authority.rotation_progress()?;
    let fingerprint = |pem: &str| pki::fingerprint_pem(pem).map_err(ApiError::internal);
    let active: Vec<&pki::WorkerProgress> = workers.iter().filter(|w| w.active).collect();
    Ok(RotationStatus {
        phase: match set.rotation.as_ref().map(|r| r.phase) {
            None => "none",
            Some(pki::Phase::Added) => "added",
            Some(pki::Phase::Issuing) => "issuing",
        },
        current_ca: fingerprint(&set.current)?,
        next_ca: set.rotation.as_ref().map(|r| fingerprint(&r.next_pem)).transpose()?,
        issuing_ca: fingerprint(set.issuing().1)?,
        server_cert_issuer: fingerprint(&state.certs.served().own_issuer)?,
        workers_active: active.len(),
        workers_on_new_ca: active.iter().filter(|w| w.on_new_ca).count(),
        workers,
    })
}

/// Takes one rotation step (`add`, `issue`, `retire`, `rollback`), then
/// brings the listeners in line: trust, `ca.pem`, the server certificate.
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(step): Path<String>,
) -> Result<axum::Json<RotationStatus>, ApiError> {
    let step: pki::RotationStep = step.parse().map_err(|()| ApiError::NotFound)?;
    let server_issuer = pki::fingerprint_pem(&state.certs.served().own_issuer)?;
    state.authority.rotate(&caller.origin, step, &server_issuer).await?;
    state.certs.ca_changed(&state.renewer()).await.map_err(ApiError::internal)?;
    Ok(axum::Json(rotation_status(&state)?))
}
