//! CA rotation without downtime, in phases, each audited:
//!
//! 1. **add**: a new CA is made (its key sealed in the store, slot `Next`).
//!    Both CAs are trusted: the worker gateway accepts certificates from
//!    either, and workers receive the two-CA bundle.
//! 2. **issue**: new certificates (enrollments, renewals, the server's own)
//!    come from the new CA; workers still on the old one are asked to renew.
//! 3. **retire**: the old CA leaves the trust and the new one becomes the
//!    CA. Refused while an active worker's newest certificate, or the
//!    server's, is from the old CA.
//!
//! **rollback** undoes the last phase, until retirement: from issue back to
//! add (issuing from the old CA again), from add to no rotation (the new CA
//! dropped; refused while an active worker's newest certificate is from it).
//!
//! The store is the authority on which CA is which: `ca.pem` in the data
//! directory is a copy for distribution (the trust bundle), rewritten from
//! the store after each phase and at start.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::enroll::list_workers;
use super::issued;
use super::keystore::{self, CaSlot};
use super::{CertAndKey, CertError, fingerprint_pem};
use crate::audit::{self, Event, Origin, Resource};
use crate::vault::{self, Keys};
use tether_base::clock::Timestamp;
use tether_base::ids::WorkerId;
use tether_store::{self as store, Collection, ReadTx, WriteTx};

const ROTATION: Collection<Rotation> = Collection::new("pki_ca_rotation");
const ROTATION_KEY: &[u8] = b"rotation";
/// The current CA's certificate (absent in stores from before rotation:
/// then `ca.pem` is the current CA).
const CA_CERT: Collection<String> = Collection::new("pki_ca_cert");
const CA_CERT_KEY: &[u8] = b"current";

/// A rotation in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub phase: Phase,
    /// The new CA's certificate.
    pub next_pem: String,
    pub started_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Both trusted; the old CA still issues.
    Added,
    /// Both trusted; the new CA issues.
    Issuing,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("a CA rotation is already in progress (phase {0:?}); finish or roll it back first")]
    InProgress(Phase),
    #[error("no CA rotation is in progress; start one with `tether ca rotate add`")]
    NotInProgress,
    #[error("the rotation is in phase {found:?}; this step needs phase {needed:?}")]
    WrongPhase { found: Phase, needed: Phase },
    /// Workers that could still connect hold a certificate from the CA
    /// that would leave the trust.
    #[error(
        "{count} active worker(s) still depend on the CA being dropped (e.g. {first}); wait for them to renew, or revoke them"
    )]
    StillInUse { count: usize, first: WorkerId },
    #[error("the server certificate is still from the old CA; wait for it to renew from the new one")]
    ServerOnOldCa,
    #[error("the rotation changed while this step was being checked; look at its status and try again")]
    Changed,
    #[error(
        "{count} active worker(s) have not yet been sent the new CA (e.g. {first}); wait for their next poll (at most 30 s), or revoke them"
    )]
    BundleNotDelivered { count: usize, first: WorkerId },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The CAs as they stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSet {
    /// The current CA's certificate.
    pub current: String,
    pub rotation: Option<Rotation>,
}

impl CaSet {
    /// As recorded in the store; `file_pem` (`ca.pem`) names the current CA
    /// in a store from before rotation.
    pub fn load(tx: &ReadTx, file_pem: &str) -> Result<CaSet, store::Error> {
        let current = tx.get(CA_CERT, CA_CERT_KEY)?.unwrap_or_else(|| first_cert(file_pem));
        Ok(CaSet { current, rotation: tx.get(ROTATION, ROTATION_KEY)? })
    }

    /// The CA that signs new certificates, and where its key is.
    pub fn issuing(&self) -> (CaSlot, &str) {
        match &self.rotation {
            Some(Rotation { phase: Phase::Issuing, next_pem, .. }) => (CaSlot::Next, next_pem),
            _ => (CaSlot::Current, &self.current),
        }
    }

    /// Every CA a worker or client must trust now, as one PEM bundle.
    pub fn bundle(&self) -> String {
        match &self.rotation {
            Some(r) => format!("{}\n{}", self.current.trim_end(), r.next_pem),
            None => self.current.clone(),
        }
    }

    /// Every CA certificate in the set, the current one first.
    pub fn all(&self) -> Vec<&str> {
        let mut all = vec![self.current.as_str()];
        all.extend(self.rotation.as_ref().map(|r| r.next_pem.as_str()));
        all
    }

    /// The CA in the set that issued `cert_pem`, if any.
    pub fn issuer_of(&self, cert_pem: &str) -> Option<&str> {
        self.all().into_iter().find(|ca| super::issued_by(cert_pem, ca).unwrap_or(false))
    }

    /// Whether a worker whose newest certificate came from `issuer`
    /// (fingerprint) should renew now rather than when due: during a
    /// rotation, when another CA issues (after `issue`, or after a rollback
    /// to `add`, which brings workers back to the old CA).
    pub fn should_renew_early(&self, issuer: &str) -> bool {
        self.rotation.is_some() && fingerprint_pem(self.issuing().1).ok().as_deref() != Some(issuer)
    }
}

/// Which workers have been sent the trust bundle of the rotation in
/// progress (in a poll answer or a renewal), in memory: the new CA may not
/// start issuing (so the server certificate may not move to it) before
/// every active worker trusts it. After a restart the workers' next polls
/// fill it again.
#[derive(Debug, Default)]
pub struct BundleDeliveries {
    /// The rotation's start, and who has been sent its bundle.
    sent: std::sync::Mutex<(Option<Timestamp>, std::collections::HashSet<WorkerId>)>,
}

impl BundleDeliveries {
    /// Notes that `worker` was sent the bundle of the rotation begun at `started_at`.
    pub fn sent(&self, rotation_started_at: Timestamp, worker: WorkerId) {
        let mut sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sent.0 != Some(rotation_started_at) {
            *sent = (Some(rotation_started_at), Default::default());
        }
        sent.1.insert(worker);
    }

    fn has(&self, rotation_started_at: Timestamp, worker: WorkerId) -> bool {
        let sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.0 == Some(rotation_started_at) && sent.1.contains(&worker)
    }
}

/// The first certificate of a PEM bundle.
fn first_cert(pem: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match pem.find(END) {
        Some(at) => format!("{}\n", &pem[..at + END.len()]),
        None => pem.to_owned(),
    }
}

/// The fingerprint of the CA that issued `worker`'s newest certificate
/// (not recorded for workers not renewed since rotation existed: then the
/// CA there was, `set`'s current one).
pub fn worker_issuer(tx: &ReadTx, set: &CaSet, worker: WorkerId) -> Result<String, RotationError> {
    match issued::newest_issuer(tx, worker)? {
        Some(issuer) => Ok(issuer),
        None => Ok(fingerprint_pem(&set.current)?),
    }
}

/// Where one worker stands in a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerProgress {
    pub worker: WorkerId,
    /// The fingerprint of the CA that issued its newest certificate.
    pub issuer: String,
    pub on_new_ca: bool,
    /// Unrevoked, and its certificate still usable (grace included): it
    /// could connect, so it counts for retirement.
    pub active: bool,
}

/// Every worker's standing against `set`.
pub fn progress(
    tx: &ReadTx,
    set: &CaSet,
    now: Timestamp,
    grace: Duration,
) -> Result<Vec<WorkerProgress>, RotationError> {
    let new = set.rotation.as_ref().map(|r| fingerprint_pem(&r.next_pem)).transpose()?;
    let mut out = Vec::new();
    for w in list_workers(tx)? {
        let issuer = worker_issuer(tx, set, w.id)?;
        let active = !w.revoked && w.cert_not_after.plus(grace) > now;
        out.push(WorkerProgress { worker: w.id, on_new_ca: new.as_deref() == Some(issuer.as_str()), issuer, active });
    }
    Ok(out)
}

/// Phase 1: trusts `next` beside the current CA.
pub fn add(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    keys: &Keys,
    set: &CaSet,
    next: &CertAndKey,
) -> Result<Rotation, RotationError> {
    if let Some(r) = tx.get(ROTATION, ROTATION_KEY)? {
        return Err(RotationError::InProgress(r.phase));
    }
    let rotation = Rotation { phase: Phase::Added, next_pem: next.cert_pem.clone(), started_at: now };
    keystore::store_ca_key(tx, keys, CaSlot::Next, &next.key_pem)?;
    tx.put(CA_CERT, CA_CERT_KEY, &set.current)?;
    tx.put(ROTATION, ROTATION_KEY, &rotation)?;
    audit_phase(tx, now, origin, ("pki.ca_rotation_added", "add", "added"), set, &rotation)?;
    Ok(rotation)
}

/// Checks that the new CA may start issuing: phase add, and every active
/// worker has been sent the bundle that trusts it.
pub fn clear_to_issue(
    tx: &ReadTx,
    set: &CaSet,
    now: Timestamp,
    grace: Duration,
    deliveries: &BundleDeliveries,
) -> Result<Cleared, RotationError> {
    let rotation = set.rotation.as_ref().ok_or(RotationError::NotInProgress)?;
    if rotation.phase != Phase::Added {
        return Err(RotationError::WrongPhase { found: rotation.phase, needed: Phase::Added });
    }
    let waiting: Vec<WorkerId> = progress(tx, set, now, grace)?
        .into_iter()
        .filter(|p| p.active && !deliveries.has(rotation.started_at, p.worker))
        .map(|p| p.worker)
        .collect();
    match waiting.first() {
        Some(first) => Err(RotationError::BundleNotDelivered { count: waiting.len(), first: *first }),
        None => Ok(Cleared { set: set.clone() }),
    }
}

/// Phase 2: the new CA issues from now on.
pub fn start_issuing(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    cleared: &Cleared,
) -> Result<Rotation, RotationError> {
    let mut rotation = still_as_cleared(tx, cleared)?;
    rotation.phase = Phase::Issuing;
    tx.put(ROTATION, ROTATION_KEY, &rotation)?;
    audit_phase(tx, now, origin, ("pki.ca_rotation_issuing", "issue", "issuing"), &cleared.set, &rotation)?;
    Ok(rotation)
}

/// What a step that drops a CA from the trust has checked, in a read
/// before its write: that no active worker depends on that CA. The check
/// holds until the write because, within a phase, no certificate from the
/// leaving CA is issued; the write refuses if the phase changed meanwhile.
#[derive(Debug, Clone)]
pub struct Cleared {
    set: CaSet,
}

/// Checks that the old CA may be retired: phase issue, the server
/// certificate (from `server_issuer`, a fingerprint) and every active
/// worker's newest certificate from the new CA.
pub fn clear_to_retire(
    tx: &ReadTx,
    set: &CaSet,
    now: Timestamp,
    grace: Duration,
    server_issuer: &str,
) -> Result<Cleared, RotationError> {
    let rotation = set.rotation.as_ref().ok_or(RotationError::NotInProgress)?;
    if rotation.phase != Phase::Issuing {
        return Err(RotationError::WrongPhase { found: rotation.phase, needed: Phase::Issuing });
    }
    if server_issuer != fingerprint_pem(&rotation.next_pem)? {
        return Err(RotationError::ServerOnOldCa);
    }
    refuse_dependents(tx, set, now, grace, |p| !p.on_new_ca)?;
    Ok(Cleared { set: set.clone() })
}

/// Checks that the last phase may be undone: from add, only if no active
/// worker's newest certificate is from the new CA.
pub fn clear_to_roll_back(tx: &ReadTx, set: &CaSet, now: Timestamp, grace: Duration) -> Result<Cleared, RotationError> {
    let rotation = set.rotation.as_ref().ok_or(RotationError::NotInProgress)?;
    if rotation.phase == Phase::Added {
        refuse_dependents(tx, set, now, grace, |p| p.on_new_ca)?;
    }
    Ok(Cleared { set: set.clone() })
}

/// The rotation as cleared, if the store still has it so.
fn still_as_cleared(tx: &mut WriteTx<'_>, cleared: &Cleared) -> Result<Rotation, RotationError> {
    let stored = tx.get(ROTATION, ROTATION_KEY)?;
    match (stored, &cleared.set.rotation) {
        (Some(now), Some(then)) if &now == then => Ok(now),
        _ => Err(RotationError::Changed),
    }
}

/// Phase 3: the old CA leaves the trust; the new one is the CA. Returns
/// the new CA's certificate.
pub fn retire(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    keys: &Keys,
    cleared: &Cleared,
) -> Result<String, RotationError> {
    let rotation = still_as_cleared(tx, cleared)?;
    keystore::promote_next_key(tx, keys)?;
    tx.put(CA_CERT, CA_CERT_KEY, &rotation.next_pem)?;
    tx.delete(ROTATION, ROTATION_KEY)?;
    audit_phase(tx, now, origin, ("pki.ca_rotation_retired", "retire", "retired"), &cleared.set, &rotation)?;
    Ok(rotation.next_pem)
}

/// Undoes the last phase. Returns the rotation left (none after undoing add).
pub fn rollback(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    cleared: &Cleared,
) -> Result<Option<Rotation>, RotationError> {
    let mut rotation = still_as_cleared(tx, cleared)?;
    let left = match rotation.phase {
        Phase::Issuing => {
            rotation.phase = Phase::Added;
            tx.put(ROTATION, ROTATION_KEY, &rotation)?;
            Some(rotation.clone())
        }
        Phase::Added => {
            keystore::drop_next_key(tx)?;
            tx.delete(ROTATION, ROTATION_KEY)?;
            None
        }
    };
    let phase = if left.is_some() { "added" } else { "none" };
    audit_phase(tx, now, origin, ("pki.ca_rotation_rolled_back", "rollback", phase), &cleared.set, &rotation)?;
    Ok(left)
}

/// Refuses if an active worker is `on_the_leaving_ca`.
fn refuse_dependents(
    tx: &ReadTx,
    set: &CaSet,
    now: Timestamp,
    grace: Duration,
    on_the_leaving_ca: impl Fn(&WorkerProgress) -> bool,
) -> Result<(), RotationError> {
    let dependents: Vec<WorkerId> = progress(tx, set, now, grace)?
        .into_iter()
        .filter(|p| p.active && on_the_leaving_ca(p))
        .map(|p| p.worker)
        .collect();
    match dependents.first() {
        Some(first) => Err(RotationError::StillInUse { count: dependents.len(), first: *first }),
        None => Ok(()),
    }
}

/// Audits a phase step: (event type, action, the phase it leaves the rotation in).
fn audit_phase(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    (event_type, action, phase): (&'static str, &'static str, &str),
    set: &CaSet,
    rotation: &Rotation,
) -> Result<(), RotationError> {
    let next = fingerprint_pem(&rotation.next_pem)?;
    let event = Event::new(event_type, action, Resource::new("ca", &next))
        .detail("current_ca", fingerprint_pem(&set.current)?)
        .detail("phase", phase);
    audit::append(tx, now, origin, event)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pki::{Ca, IssuedCert, create_enrollment_token, enroll, load_ca, new_worker_key_and_csr, renew};
    use tether_base::clock::ManualClock;
    use tether_base::crypto::CryptoPolicy;
    use tether_store::Store;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
    const GRACE: Duration = Duration::from_secs(3600);

    fn issued(ca: &Ca, id: WorkerId) -> IssuedCert {
        let (_key, csr) = new_worker_key_and_csr().unwrap();
        ca.sign_worker_csr(CryptoPolicy::STANDARD, &csr, id, NOW, Duration::from_secs(3600)).unwrap()
    }

    struct Site {
        _dir: tempfile::TempDir,
        store: Store,
        vault: Arc<crate::vault::Vault>,
        file_pem: String,
    }

    impl Site {
        fn new() -> (Site, Ca) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::create(dir.path()).unwrap();
            let vault = crate::vault::unsealed_for_tests(&store, Arc::new(ManualClock::at(NOW)));
            let (ca, material) = Ca::create(NOW).unwrap();
            let keys = vault.keys().unwrap();
            store
                .write_blocking(move |tx| keystore::store_ca_key(tx, &keys, CaSlot::Current, &material.key_pem))
                .unwrap();
            let file_pem = ca.cert_pem().to_owned();
            (Site { _dir: dir, store, vault, file_pem }, ca)
        }

        fn set(&self) -> CaSet {
            self.store.read(|tx| CaSet::load(tx, &self.file_pem)).unwrap()
        }

        /// The CA that issues now, loaded from its sealed key.
        fn issuing_ca(&self) -> Ca {
            let set = self.set();
            let (slot, pem) = set.issuing();
            load_ca(&self.store, &self.vault, slot, pem).unwrap()
        }

        fn write<R: Send + 'static>(
            &self,
            op: impl FnOnce(&mut WriteTx<'_>, &CaSet) -> Result<R, RotationError> + Send + 'static,
        ) -> Result<R, RotationError> {
            let set = self.set();
            self.store.write_blocking(move |tx| op(tx, &set))
        }

        fn enroll_worker(&self) -> WorkerId {
            let (ca, id) = (self.issuing_ca(), WorkerId::new());
            let cert = issued(&ca, id);
            let ttl = Duration::from_secs(60);
            let (_, token) = self
                .store
                .write_blocking(move |tx| create_enrollment_token(tx, NOW, &Origin::system(), None, ttl))
                .unwrap();
            self.store.write_blocking(move |tx| enroll(tx, NOW, &Origin::system(), &token, &[], &cert, id)).unwrap();
            id
        }

        fn renew_worker(&self, id: WorkerId) {
            let cert = issued(&self.issuing_ca(), id);
            let presented = self.store.read(|tx| crate::pki::get_worker(tx, id)).unwrap().unwrap().cert_serial;
            self.store.write_blocking(move |tx| renew(tx, NOW, &Origin::system(), id, &presented, &cert)).unwrap();
        }

        fn progress(&self) -> Vec<WorkerProgress> {
            self.store.read(|tx| progress(tx, &self.set(), NOW, GRACE)).unwrap()
        }
    }

    #[test]
    fn a_rotation_goes_add_issue_retire_and_retiring_waits_for_every_active_worker() {
        let (site, old) = Site::new();
        let worker = site.enroll_worker();
        let (new, next) = Ca::create(NOW).unwrap();
        let keys = site.vault.keys().unwrap();
        site.write(move |tx, set| add(tx, NOW, &Origin::system(), &keys, set, &next)).unwrap();
        let set = site.set();
        assert_eq!(set.issuing().1, old.cert_pem(), "the old CA still issues");
        assert!(set.bundle().contains(old.cert_pem().trim()) && set.bundle().contains(new.cert_pem().trim()));
        let again = Ca::create(NOW).unwrap().1;
        let keys = site.vault.keys().unwrap();
        let twice = site.write(move |tx, set| add(tx, NOW, &Origin::system(), &keys, set, &again));
        assert!(matches!(twice, Err(RotationError::InProgress(Phase::Added))));

        let deliveries = BundleDeliveries::default();
        let clear_issue = |d: &BundleDeliveries| site.store.read(|tx| clear_to_issue(tx, &site.set(), NOW, GRACE, d));
        assert!(matches!(clear_issue(&deliveries), Err(RotationError::BundleNotDelivered { count: 1, .. })));
        deliveries.sent(site.set().rotation.unwrap().started_at, worker);
        let cleared = clear_issue(&deliveries).unwrap();
        site.write(move |tx, _| start_issuing(tx, NOW, &Origin::system(), &cleared)).unwrap();
        assert_eq!(site.issuing_ca().fingerprint(), new.fingerprint(), "the new CA's key opens from its slot");
        assert!(site.set().should_renew_early(&old.fingerprint()));
        let clear = |server: &Ca| {
            let server = server.fingerprint();
            site.store.read(|tx| clear_to_retire(tx, &site.set(), NOW, GRACE, &server))
        };
        assert!(matches!(clear(&old), Err(RotationError::ServerOnOldCa)));
        assert!(matches!(clear(&new), Err(RotationError::StillInUse { count: 1, first }) if first == worker));

        site.renew_worker(worker);
        assert!(site.progress().iter().all(|p| p.on_new_ca), "{:?}", site.progress());
        let cleared = clear(&new).unwrap();
        let keys = site.vault.keys().unwrap();
        let current = site.write(move |tx, _| retire(tx, NOW, &Origin::system(), &keys, &cleared)).unwrap();
        assert_eq!(current, new.cert_pem());
        let set = site.set();
        assert_eq!((set.current.as_str(), set.rotation.is_none()), (new.cert_pem(), true));
        assert_eq!(set.bundle(), new.cert_pem(), "the old CA is no longer trusted");
        assert_eq!(site.issuing_ca().fingerprint(), new.fingerprint(), "the new key moved to the CA's slot");
    }

    #[test]
    fn a_rotation_rolls_back_a_phase_at_a_time_but_keeps_a_ca_a_worker_depends_on() {
        let (site, old) = Site::new();
        let worker = site.enroll_worker();
        let next = Ca::create(NOW).unwrap().1;
        let keys = site.vault.keys().unwrap();
        site.write(move |tx, set| add(tx, NOW, &Origin::system(), &keys, set, &next)).unwrap();
        let deliveries = BundleDeliveries::default();
        deliveries.sent(site.set().rotation.unwrap().started_at, worker);
        let cleared = site.store.read(|tx| clear_to_issue(tx, &site.set(), NOW, GRACE, &deliveries)).unwrap();
        site.write(move |tx, _| start_issuing(tx, NOW, &Origin::system(), &cleared)).unwrap();
        site.renew_worker(worker);

        let roll_back = || {
            let cleared = site.store.read(|tx| clear_to_roll_back(tx, &site.set(), NOW, GRACE))?;
            site.write(move |tx, _| rollback(tx, NOW, &Origin::system(), &cleared))
        };
        let left = roll_back().unwrap();
        assert_eq!(left.map(|r| r.phase), Some(Phase::Added));
        assert_eq!(site.issuing_ca().fingerprint(), old.fingerprint(), "the old CA issues again");
        assert!(
            matches!(roll_back(), Err(RotationError::StillInUse { count: 1, .. })),
            "the worker holds a new-CA cert"
        );

        site.renew_worker(worker);
        assert_eq!(roll_back().unwrap(), None);
        let set = site.set();
        assert_eq!((set.current.as_str(), set.rotation.is_none()), (old.cert_pem(), true));
        assert!(matches!(roll_back(), Err(RotationError::NotInProgress)));
    }
}
