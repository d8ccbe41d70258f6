//! The appliance's CA as a service: workers' enrollment with a token and
//! renewal with the current certificate, and the steps of a CA rotation.
//! Enrollment and renewal sign first (a bad token then costs one
//! signature, but the transaction holds only checks and writes), then makes
//! the change and its audit record in one transaction. Refusals are audited
//! too: an enrollment refusal through the failure tally (anyone can send a
//! bad token, so a flood costs one record per source and window), a renewal
//! refusal as its own record, whose failed write fails the request.

use std::sync::Arc;
use std::time::Duration;

use super::ca::{Ca, IssuedCert, PeerCert, csr_key_fingerprint};
use super::enroll::{self, EnrollError, EnrollmentToken, Refused, WorkerRecord, bound_worker, refused_event};
use super::keystore::load_ca;
use super::revocation::{self, CrlError, Revocation, Revoked};
use super::rotation::{self, BundleDeliveries, CaSet, RotationError, WorkerProgress};
use crate::audit::tally::FailureLog;
use crate::audit::{self, Origin};
use crate::vault::Vault;
use tether_base::clock::{SharedClock, Timestamp};
use tether_base::crypto::CryptoPolicy;
use tether_base::ids::WorkerId;
use tether_store::{self as store, Store};

/// Issues and renews workers' certificates; rotates the CA.
#[derive(Debug)]
pub struct Authority {
    store: Store,
    vault: Arc<Vault>,
    clock: SharedClock,
    policy: CryptoPolicy,
    /// How long a worker certificate is valid.
    lifetime: Duration,
    /// How long after expiry a worker may still renew (so a worker that
    /// could still connect counts as depending on its CA).
    grace: Duration,
    failures: Arc<FailureLog>,
    deliveries: Arc<BundleDeliveries>,
    /// The revoked workers the listeners refuse (updated by [`Authority::revoke`]).
    revoked: Arc<Revoked>,
    /// `ca.pem` as read at start: the current CA of a store from before
    /// rotation existed.
    ca_file_pem: String,
}

/// What the worker is given: its identity, certificate and the CAs to trust.
#[derive(Debug)]
pub struct Enrollment {
    pub worker: WorkerId,
    pub cert: IssuedCert,
    pub ca_bundle: String,
    pub labels: Vec<String>,
}

/// A renewed certificate and the CAs to trust.
#[derive(Debug)]
pub struct Renewal {
    pub cert: IssuedCert,
    pub ca_bundle: String,
}

/// The parts [`Authority`] is built from.
#[derive(Debug)]
pub struct AuthorityParts {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub clock: SharedClock,
    pub policy: CryptoPolicy,
    pub lifetime: Duration,
    pub grace: Duration,
    pub failures: Arc<FailureLog>,
    pub deliveries: Arc<BundleDeliveries>,
    pub revoked: Arc<Revoked>,
    pub ca_file_pem: String,
}

impl Authority {
    pub fn new(parts: AuthorityParts) -> Authority {
        let AuthorityParts { store, vault, clock, policy, lifetime, grace, failures, deliveries, revoked, ca_file_pem } =
            parts;
        Authority { store, vault, clock, policy, lifetime, grace, failures, deliveries, revoked, ca_file_pem }
    }

    /// The CAs as the store has them now.
    pub fn ca_set(&self) -> Result<CaSet, store::Error> {
        self.store.read(|tx| CaSet::load(tx, &self.ca_file_pem))
    }

    /// Enrolls the holder of `token` with the key of `csr_pem`. A retry with
    /// the key the token was bound to keeps its worker (the transaction
    /// checks the binding again).
    pub async fn enroll(
        &self,
        origin: Origin,
        token: String,
        csr_pem: &str,
        labels: Vec<String>,
    ) -> Result<Enrollment, EnrollError> {
        let now = self.clock.now();
        let csr_key = csr_key_fingerprint(csr_pem)?;
        let worker = self.store.read(|tx| bound_worker(tx, &token, &csr_key))?.unwrap_or_else(WorkerId::new);
        let (set, cert) = self.issue(csr_pem, worker, now)?;
        let (issued, attempt) = (cert.clone(), origin.clone());
        let result =
            self.store.write(move |tx| enroll::enroll(tx, now, &attempt, &token, &labels, &issued, worker)).await;
        match result {
            Ok(record) => Ok(Enrollment { worker, cert, ca_bundle: set.bundle(), labels: record.labels }),
            Err(e) => {
                let reason = if matches!(e, EnrollError::TokenInvalid) { "token_invalid" } else { "refused" };
                self.failures.note(origin, refused_event(Refused::Enrollment, reason)).await;
                Err(e)
            }
        }
    }

    /// The enrolled, unrevoked worker that presented `peer` in the TLS
    /// handshake. Its first request with a renewed certificate confirms
    /// that certificate, so the one before it may no longer renew
    /// (bookkeeping, not audited).
    pub async fn admit(&self, peer: &PeerCert) -> Result<WorkerRecord, EnrollError> {
        let (record, first_use) = self.store.read(|tx| {
            let Some(record) = enroll::get_worker(tx, peer.worker)? else { return Ok((None, false)) };
            let first_use = enroll::newest_unconfirmed(tx, &record, &peer.serial)?;
            Ok::<_, store::Error>((Some(record), first_use))
        })?;
        let record = record.filter(|r| !r.revoked).ok_or(EnrollError::Revoked)?;
        if first_use {
            let (worker, serial) = (record.id, peer.serial.clone());
            self.store.write(move |tx| enroll::confirm_newest(tx, worker, &serial)).await?;
        }
        Ok(record)
    }

    /// Renews `worker`'s certificate; `presented` is the serial of the one
    /// it connected with, which must be the newest of its lineage.
    pub async fn renew(
        &self,
        origin: Origin,
        worker: WorkerId,
        presented: String,
        csr_pem: &str,
    ) -> Result<Renewal, EnrollError> {
        let now = self.clock.now();
        let (set, cert) = self.issue(csr_pem, worker, now)?;
        let (issued, attempt) = (cert.clone(), origin.clone());
        let result = self.store.write(move |tx| enroll::renew(tx, now, &attempt, worker, &presented, &issued)).await;
        if let Err(EnrollError::Superseded) = result {
            let event = refused_event(Refused::Renewal(worker), "certificate_superseded");
            self.store.write(move |tx| audit::append(tx, now, &origin, event)).await?;
        }
        result?;
        if let Some(rotation) = &set.rotation {
            self.deliveries.sent(rotation.started_at, worker);
        }
        Ok(Renewal { cert, ca_bundle: set.bundle() })
    }

    /// Every enrolled worker, revoked ones included.
    pub fn workers(&self) -> Result<Vec<WorkerRecord>, store::Error> {
        self.store.read(enroll::list_workers)
    }

    /// A single-use enrollment token for a worker with `labels`, valid for
    /// `ttl`; the secret is returned once.
    pub async fn enrollment_token(
        &self,
        origin: &Origin,
        labels: Option<Vec<String>>,
        ttl: Duration,
    ) -> Result<(EnrollmentToken, String), EnrollError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| enroll::create_enrollment_token(tx, now, &origin, labels, ttl)).await
    }

    /// Gives `worker` new labels (an admin's choice, never the worker's).
    pub async fn set_labels(
        &self,
        origin: &Origin,
        worker: WorkerId,
        labels: Vec<String>,
    ) -> Result<WorkerRecord, EnrollError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| enroll::set_labels(tx, now, &origin, worker, labels)).await
    }

    /// Revokes `worker`: the listeners refuse it from the commit on.
    /// Revoking again answers the same and changes nothing.
    pub async fn revoke(&self, origin: &Origin, worker: WorkerId) -> Result<Revocation, EnrollError> {
        let (now, origin, revoked) = (self.clock.now(), origin.clone(), self.revoked.clone());
        self.store.write(move |tx| revocation::revoke(tx, now, &origin, worker, revoked)).await
    }

    /// A CRL of every revoked worker certificate, signed now by the CA that
    /// issues (DER).
    pub async fn crl(&self) -> Result<Vec<u8>, CrlError> {
        let (_, ca) = self.issuing_ca::<CrlError>()?;
        let now = self.clock.now();
        self.store.write(move |tx| revocation::sign_crl(tx, now, &ca)).await
    }

    /// What `worker` must hear of a CA rotation in progress: the bundle to
    /// trust (noted as sent), and whether to renew at once.
    pub fn rotation_news(&self, worker: WorkerId) -> Result<(Option<String>, bool), RotationError> {
        let set = self.ca_set()?;
        let Some(rotation) = &set.rotation else { return Ok((None, false)) };
        self.deliveries.sent(rotation.started_at, worker);
        let issuer = self.store.read(|tx| rotation::worker_issuer(tx, &set, worker))?;
        Ok((Some(set.bundle()), set.should_renew_early(&issuer)))
    }

    /// The CAs, and where each worker stands in the rotation.
    pub fn rotation_progress(&self) -> Result<(CaSet, Vec<WorkerProgress>), RotationError> {
        let (set, now) = (self.ca_set()?, self.clock.now());
        let workers = self.store.read(|tx| rotation::progress(tx, &set, now, self.grace))?;
        Ok((set, workers))
    }

    /// Takes one step of a CA rotation, each refused unless its guard holds
    /// (checked, then written in one transaction that checks it still
    /// holds). `server_issuer` is the fingerprint of the CA that issued the
    /// server certificate served now: retiring waits until it is the new one.
    pub async fn rotate(&self, origin: &Origin, step: RotationStep, server_issuer: &str) -> Result<(), RotationError> {
        let (set, now, grace, origin) = (self.ca_set()?, self.clock.now(), self.grace, origin.clone());
        match step {
            RotationStep::Add => {
                let (_, next) = Ca::create(now)?;
                let keys = self.vault.keys()?;
                self.store.write(move |tx| rotation::add(tx, now, &origin, &keys, &set, &next)).await?;
            }
            RotationStep::Issue => {
                let cleared = self.store.read(|tx| rotation::clear_to_issue(tx, &set, now, grace, &self.deliveries))?;
                self.store.write(move |tx| rotation::start_issuing(tx, now, &origin, &cleared)).await?;
            }
            RotationStep::Retire => {
                let cleared = self.store.read(|tx| rotation::clear_to_retire(tx, &set, now, grace, server_issuer))?;
                let keys = self.vault.keys()?;
                self.store.write(move |tx| rotation::retire(tx, now, &origin, &keys, &cleared)).await?;
            }
            RotationStep::Rollback => {
                let cleared = self.store.read(|tx| rotation::clear_to_roll_back(tx, &set, now, grace))?;
                self.store.write(move |tx| rotation::rollback(tx, now, &origin, &cleared)).await?;
            }
        }
        Ok(())
    }

    /// Signs `csr_pem` for `worker` with the CA that issues now (the vault
    /// must be unsealed: the CA key is opened per signature).
    fn issue(&self, csr_pem: &str, worker: WorkerId, now: Timestamp) -> Result<(CaSet, IssuedCert), EnrollError> {
        let (set, ca) = self.issuing_ca::<EnrollError>()?;
        let cert = ca.sign_worker_csr(self.policy, csr_pem, worker, now, self.lifetime)?;
        Ok((set, cert))
    }

    /// The CAs, and the one that issues now, ready to sign (its key opened
    /// from the vault for this use).
    fn issuing_ca<E: From<store::Error> + From<super::ca::CertError>>(&self) -> Result<(CaSet, Ca), E> {
        let set = self.ca_set()?;
        let (slot, pem) = set.issuing();
        let ca = load_ca(&self.store, &self.vault, slot, pem)?;
        Ok((set, ca))
    }
}

/// The steps of a CA rotation, in order (`rollback` from any phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// Make the next CA and trust it beside the current one.
    Add,
    /// Issue from the next CA, once every active worker has its bundle.
    Issue,
    /// Drop the old CA, once nothing active depends on it.
    Retire,
    /// Undo the rotation in progress.
    Rollback,
}

impl std::str::FromStr for RotationStep {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "add" => Ok(RotationStep::Add),
            "issue" => Ok(RotationStep::Issue),
            "retire" => Ok(RotationStep::Retire),
            "rollback" => Ok(RotationStep::Rollback),
            _ => Err(()),
        }
    }
}
