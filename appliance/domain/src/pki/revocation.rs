//! Revoking a worker: the record in the store (what a CRL lists, what
//! survives a restart) and the set in memory that the worker gateway checks
//! at every handshake and that closes the worker's live connections.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::UnixTime;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::enroll::{EnrollError, WORKERS};
use super::{Ca, CertError, RevokedSerial, issued};
use crate::audit::{self, Event, Origin, Resource};
use tether_base::clock::Timestamp;
use tether_base::ids::WorkerId;
use tether_base::tls::Admission;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by worker id.
const REVOCATIONS: Collection<Revocation> = Collection::new("pki_revocations");
/// The number of the last CRL signed (CRLs are numbered, RFC 5280 5.2.3).
const CRL_NUMBER: Collection<u64> = Collection::new("pki_crl_number");
const CRL_NUMBER_KEY: &[u8] = b"last";

/// What the store keeps about a revoked worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub worker: WorkerId,
    pub revoked_at: Timestamp,
    pub revoked_by: String,
    /// The serials (hex) of its certificates that had not expired.
    pub serials: Vec<String>,
}

/// The workers whose enrollment is revoked, in memory: loaded at start,
/// added to as each revocation commits. Subscribers hear of every change.
#[derive(Debug)]
pub struct Revoked {
    workers: RwLock<HashSet<WorkerId>>,
    changed: watch::Sender<u64>,
}

impl Revoked {
    /// The revoked workers recorded in the store.
    pub fn load(tx: &ReadTx) -> Result<Arc<Revoked>, store::Error> {
        let mut workers = HashSet::new();
        tx.scan(REVOCATIONS, None, Order::Ascending, |_, r: Revocation| {
            workers.insert(r.worker);
            Ok(true)
        })?;
        Ok(Arc::new(Revoked { workers: RwLock::new(workers), changed: watch::Sender::new(0) }))
    }

    pub fn contains(&self, worker: WorkerId) -> bool {
        self.workers.read().is_ok_and(|set| set.contains(&worker))
    }

    /// Wakes when a worker is revoked; the receiver then checks its own.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The worker gateway's word on a client certificate at `now`: refused
    /// if it names no worker or a revoked one; if it expired no more than
    /// `grace` ago, to be judged as of its expiry, so that the worker, back
    /// from being offline, can renew it.
    pub fn admit(&self, der: &[u8], now: UnixTime, grace: Duration) -> Admission {
        let Some(peer) = super::peer_cert(der) else { return Admission::Refused };
        if self.contains(peer.worker) {
            return Admission::Refused;
        }
        let not_after = Duration::from_millis(peer.not_after.as_millis());
        let now = now.as_secs();
        if not_after.as_secs() < now && now <= not_after.saturating_add(grace).as_secs() {
            return Admission::InGrace { not_after: UnixTime::since_unix_epoch(not_after) };
        }
        Admission::Current
    }

    fn add(&self, worker: WorkerId) {
        if let Ok(mut set) = self.workers.write() {
            set.insert(worker);
        }
        self.changed.send_modify(|generation| *generation += 1);
    }
}

/// Revokes `worker` in the caller's transaction: marks its record, records
/// the serials of its unexpired certificates and audits it. Once the
/// transaction is durable, `revoked` holds the worker: its handshakes fail
/// and its open connections close. Revoking again changes nothing.
pub fn revoke(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    worker: WorkerId,
    revoked: Arc<Revoked>,
) -> Result<Revocation, EnrollError> {
    let mut record = tx.get(WORKERS, &worker.to_key())?.ok_or(EnrollError::UnknownWorker)?;
    if let Some(done) = tx.get(REVOCATIONS, &worker.to_key())? {
        return Ok(done);
    }
    let mut serials = issued::unexpired_serials(tx, worker, now)?;
    serials.push(record.cert_serial.clone());
    serials.sort();
    serials.dedup();
    let revocation = Revocation { worker, revoked_at: now, revoked_by: origin.actor.id.clone(), serials };
    record.revoked = true;
    tx.put(WORKERS, &worker.to_key(), &record)?;
    tx.put(REVOCATIONS, &worker.to_key(), &revocation)?;
    let event = Event::new("worker.revoked", "revoke", Resource::new("worker", worker))
        .detail("serials", revocation.serials.join(","));
    audit::append(tx, now, origin, event)?;
    tx.after_commit(move || revoked.add(worker));
    Ok(revocation)
}

/// A freshly signed CRL (DER) listing every certificate of every revoked
/// worker that had not expired when it was revoked, with the next CRL
/// number. Needs the CA key, so the vault open.
pub fn sign_crl(tx: &mut WriteTx<'_>, now: Timestamp, ca: &Ca) -> Result<Vec<u8>, CrlError> {
    let mut entries = Vec::new();
    tx.scan(REVOCATIONS, None, Order::Ascending, |_, r: Revocation| {
        entries.extend(r.serials.into_iter().map(|serial| RevokedSerial { serial, revoked_at: r.revoked_at }));
        Ok(true)
    })?;
    let number = tx.get(CRL_NUMBER, CRL_NUMBER_KEY)?.unwrap_or(0) + 1;
    let der = ca.sign_crl(&entries, number, now)?;
    tx.put(CRL_NUMBER, CRL_NUMBER_KEY, &number)?;
    Ok(der)
}

/// A DER CRL as PEM.
pub fn crl_pem(der: &[u8]) -> String {
    tether_base::pem::encode("X509 CRL", der)
}

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Store(#[from] store::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::new_worker_key_and_csr;
    use tether_base::crypto::CryptoPolicy;
    use tether_store::Store;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    #[test]
    fn an_expired_certificate_is_admitted_as_of_its_expiry_only_within_the_grace_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let revoked = store.read(Revoked::load).unwrap();
        let (ca, _) = Ca::create(NOW).unwrap();
        let (_, csr) = new_worker_key_and_csr().unwrap();
        let cert =
            ca.sign_worker_csr(CryptoPolicy::STANDARD, &csr, WorkerId::new(), NOW, Duration::from_secs(60)).unwrap();
        let der = tether_base::tls::certs_from_pem(&cert.cert_pem, "test").unwrap().remove(0);
        let not_after = Duration::from_millis(cert.not_after.as_millis());
        let at = |offset_s: i64| {
            UnixTime::since_unix_epoch(Duration::from_secs(not_after.as_secs().saturating_add_signed(offset_s)))
        };
        let grace = Duration::from_secs(3600);
        assert_eq!(revoked.admit(&der, at(-1), grace), Admission::Current);
        let in_grace = Admission::InGrace { not_after: UnixTime::since_unix_epoch(not_after) };
        assert_eq!(revoked.admit(&der, at(1), grace), in_grace);
        assert_eq!(revoked.admit(&der, at(3600), grace), in_grace);
        assert_eq!(revoked.admit(&der, at(3601), grace), Admission::Current, "past the window: the chain says expired");
        assert_eq!(revoked.admit(&der, at(1), Duration::ZERO), Admission::Current, "no grace configured");
        assert_eq!(revoked.admit(b"not a certificate", at(-1), grace), Admission::Refused);
    }
}
