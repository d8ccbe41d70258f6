//! Alerts: conditions an operator or security officer must look at. Each is
//! an audit record (`alert.raised`, so it reaches the sinks with the rest)
//! and an entry in the alert list (`GET /api/v1/alerts`), written together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Event, Origin, Resource};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by the sequence number of the alert's audit record.
const ALERTS: Collection<Alert> = Collection::new("alerts");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The audit record that carries it.
    pub seq: u64,
    /// What kind of condition: `failed_logins`, `cert_expiring`, ….
    pub kind: String,
    /// What it is about (an address, a pseudonymous account, a certificate).
    pub subject: String,
    pub raised_at: Timestamp,
    pub details: BTreeMap<String, String>,
}

/// Raises an alert inside the caller's transaction; its audit record is an
/// `alert.raised`.
pub fn raise(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    kind: &'static str,
    subject: &str,
    details: &[(&str, String)],
) -> Result<u64, store::Error> {
    let mut event = Event::new("alert.raised", "raise", Resource::new("alert", kind)).detail("subject", subject);
    for (k, v) in details {
        event = event.detail(k, v);
    }
    raise_as(tx, now, event, kind, subject)
}

/// Raises an alert whose audit record is `event` (a domain event that is
/// itself the alarm, like `pki.cert_expiring`); its details go with it.
pub fn raise_as(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    event: Event,
    kind: &'static str,
    subject: &str,
) -> Result<u64, store::Error> {
    let details = event.details.clone();
    let seq = super::append(tx, now, &Origin::system(), event)?;
    let alert = Alert { seq, kind: kind.into(), subject: subject.into(), raised_at: now, details };
    tx.put(ALERTS, &seq.to_be_bytes(), &alert)?;
    Ok(seq)
}

/// The newest alerts first, at most `limit`.
pub fn list(tx: &ReadTx, limit: usize) -> Result<Vec<Alert>, store::Error> {
    let mut out = Vec::new();
    tx.scan(ALERTS, None, Order::Descending, |_, a| {
        out.push(a);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}
