//! The appliance's certificates as an operator sees them: what is served,
//! until when, and what needs attention.

use axum::extract::State;
use serde::Serialize;

use super::extract::Caller;
use super::{ApiError, AppState};
use crate::pki::{self, ExpiryAlert};

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
    let set = state.ca_set()?;
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
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let alerts = expiry_alerts(&state)?;
    Ok(axum::Json(Certificates { certificates, alerts }))
}

pub fn expiry_alerts(state: &AppState) -> Result<Vec<ExpiryAlert>, ApiError> {
    state
        .certs
        .expiry_alerts(&state.store, &state.config, state.clock.now())
        .map_err(|e| ApiError::Internal(format!("{e:#}")))
}
