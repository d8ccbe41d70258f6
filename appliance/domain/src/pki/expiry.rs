//! The expiry watch: which certificates are close to expiring, or have.
//!
//! The CA's, the server's and an operator's console certificate raise an
//! alert once fewer than the configured warning period (default 14 days)
//! remain. A worker's certificate raises one once its renewal is overdue:
//! less than a sixth of its lifetime left (renewal falls due at two thirds),
//! or expired; revoked workers raise none. Each alert is audited once per
//! certificate (a renewed certificate that nears expiry again alerts again).

use std::time::Duration;

use serde::Serialize;

use super::enroll::list_workers;
use super::{CertError, cert_validity, fingerprint_pem};
use crate::audit::{self, Event, Outcome, Resource};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, ReadTx, WriteTx};

/// Keyed by the alert's subject (`ca`, `server`, `console`, `worker:<id>`):
/// the expiry last alerted, so each certificate is audited once.
const ALERTED: Collection<Timestamp> = Collection::new("pki_expiry_alerted");

/// A certificate nearing expiry, or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiryAlert {
    /// `ca`, `server`, `console` or `worker`.
    pub certificate: &'static str,
    /// The certificate's fingerprint, or the worker's id.
    pub id: String,
    pub not_after: String,
    pub expired: bool,
    /// What the operator should do.
    pub action: &'static str,
    #[serde(skip)]
    expires: Timestamp,
}

impl ExpiryAlert {
    fn subject(&self) -> String {
        match self.certificate {
            "worker" => format!("worker:{}", self.id),
            other => other.to_owned(),
        }
    }
}

/// An appliance certificate to watch: what it is, its PEM, what to do.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    pub certificate: &'static str,
    pub pem: &'a str,
    pub action: &'static str,
}

/// The alerts at `now` for the appliance's certificates (with `warning`
/// ahead) and for every unrevoked worker whose certificate, of `lifetime`,
/// is overdue for renewal.
pub fn alerts(
    tx: &ReadTx,
    now: Timestamp,
    warning: Duration,
    watched: &[Watched<'_>],
    lifetime: Duration,
) -> Result<Vec<ExpiryAlert>, ExpiryError> {
    let mut out = Vec::new();
    for w in watched {
        let (_, not_after) = cert_validity(w.pem)?;
        if not_after <= now.plus(warning) {
            out.push(alert(w.certificate, fingerprint_pem(w.pem)?, not_after, now, w.action));
        }
    }
    for worker in list_workers(tx)?.into_iter().filter(|w| !w.revoked) {
        if worker.cert_not_after <= now.plus(lifetime / 6) {
            let action = "bring the worker back online to renew, or revoke it if it is retired";
            out.push(alert("worker", worker.id.to_string(), worker.cert_not_after, now, action));
        }
    }
    Ok(out)
}

fn alert(
    certificate: &'static str,
    id: String,
    expires: Timestamp,
    now: Timestamp,
    action: &'static str,
) -> ExpiryAlert {
    ExpiryAlert { certificate, id, not_after: expires.to_rfc3339(), expired: expires <= now, action, expires }
}

/// Audits each alert not yet audited for its certificate; returns those.
pub fn record_alerts(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    alerts: Vec<ExpiryAlert>,
) -> Result<Vec<ExpiryAlert>, store::Error> {
    let mut new = Vec::new();
    for a in alerts {
        let subject = a.subject();
        if tx.get(ALERTED, subject.as_bytes())? == Some(a.expires) {
            continue;
        }
        tx.put(ALERTED, subject.as_bytes(), &a.expires)?;
        let event = Event::new("pki.cert_expiring", "watch", Resource::new(a.certificate, &a.id))
            .outcome(if a.expired { Outcome::Failure } else { Outcome::Success })
            .detail("not_after", &a.not_after)
            .detail("expired", a.expired);
        audit::alerts::raise_as(tx, now, event, "cert_expiring", &subject)?;
        new.push(a);
    }
    Ok(new)
}

#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Store(#[from] store::Error),
}
