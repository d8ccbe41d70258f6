//! Enrollment tokens and the registry of enrolled workers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{IssuedCert, issued};
use crate::audit::{self, Event, Origin, Outcome, Resource};
use tether_base::clock::Timestamp;
use tether_base::crypto::{CryptoPolicy, KeyKind};
use tether_base::ids::WorkerId;
use tether_base::labels;
use tether_base::secret;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

const TOKEN_PREFIX: &str = "tetherenroll_";

/// Keyed by SHA-256 of the token secret.
const ENROLL_TOKENS: Collection<EnrollmentToken> = Collection::new("enroll_tokens");
/// Which worker and key a used token went to, keyed like the token: the
/// same key may enroll again with it (its answer was lost), no other may.
const BINDINGS: Collection<Binding> = Collection::new("enroll_bindings");
/// Keyed by worker id.
pub(super) const WORKERS: Collection<WorkerRecord> = Collection::new("workers");
/// Keyed by worker id: the serial of the certificate that the worker's
/// newest one renewed, kept until the worker is seen using the newest. While
/// it is kept, that older certificate may renew again (the answer to its
/// renewal may have been lost); no other older certificate may renew.
const RENEWED_FROM: Collection<String> = Collection::new("pki_renewed_from");

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Unknown, used or expired: one answer, so probing learns nothing.
    #[error("the enrollment token is not valid (unknown, already used, or expired)")]
    TokenInvalid,
    #[error("no such worker")]
    UnknownWorker,
    #[error("the worker's enrollment has been revoked")]
    Revoked,
    /// Renewal from a certificate that is not the newest of its lineage: a
    /// copy of an old key, or a worker restored from an old state directory.
    #[error("this certificate has been superseded by a newer one for the same worker; only the newest may renew")]
    Superseded,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Cert(#[from] super::ca::CertError),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What the store keeps about an enrollment token. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// Public id (first 8 bytes of the hash, hex).
    pub id: String,
    /// The labels the enrolling worker gets; none if unset. What the worker
    /// asks for is never granted: labels gate tasks and secrets, so they
    /// are the admin's to give (here, or later with [`set_labels`]).
    pub labels: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub created_by: String,
    pub used_by: Option<WorkerId>,
}

/// An enrolled worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: WorkerId,
    /// Sorted. From the enrollment token, or an admin's later change; never
    /// from the worker.
    pub labels: Vec<String>,
    pub enrolled_at: Timestamp,
    pub cert_serial: String,
    pub cert_not_after: Timestamp,
    pub renewed_at: Option<Timestamp>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Binding {
    worker: WorkerId,
    /// `sha256:<hex>` of the public key in the CSR that used the token.
    key: String,
}

/// The worker an enrollment with `token` and the key `csr_key` must keep:
/// the one the token went to, when this is the key it went with. A worker
/// whose enrollment answer was lost retries with the same key and token and
/// gets its identity back, with a fresh certificate.
pub fn bound_worker(tx: &ReadTx, token: &str, csr_key: &str) -> Result<Option<WorkerId>, store::Error> {
    let binding = tx.get(BINDINGS, &secret::sha256(token.as_bytes()))?;
    Ok(binding.filter(|b| b.key == csr_key).map(|b| b.worker))
}

fn valid_labels(requested: &[String]) -> Result<Vec<String>, EnrollError> {
    labels::normalize(requested.to_vec()).map_err(EnrollError::Invalid)
}

/// Creates a single-use enrollment token; returns its record and secret.
pub fn create_enrollment_token(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    labels: Option<Vec<String>>,
    ttl: Duration,
) -> Result<(EnrollmentToken, String), EnrollError> {
    let labels = labels.map(|l| valid_labels(&l)).transpose()?;
    let secret::Minted { secret, key, id } = secret::mint(TOKEN_PREFIX).map_err(store::Error::from)?;
    let record = EnrollmentToken {
        id,
        labels,
        created_at: now,
        expires_at: now.plus(ttl),
        created_by: origin.actor.id.clone(),
        used_by: None,
    };
    tx.put(ENROLL_TOKENS, &key, &record)?;
    let mut event = Event::new("enrollment_token.created", "create", Resource::new("enrollment_token", &record.id))
        .detail("expires_at", record.expires_at);
    if let Some(l) = &record.labels {
        event = event.detail("labels", l.join(","));
    }
    audit::append(tx, now, origin, event)?;
    Ok((record, secret))
}

/// When each enrollment token still usable at `now` was made (the
/// security check flags those left outstanding).
pub fn outstanding_tokens(tx: &ReadTx, now: Timestamp) -> Result<Vec<Timestamp>, store::Error> {
    let tokens = tx.values(ENROLL_TOKENS)?;
    Ok(tokens.into_iter().filter(|t| t.used_by.is_none() && t.expires_at > now).map(|t| t.created_at).collect())
}

/// Burns the token, records the worker and its certificate, and audits it,
/// all in the caller's transaction. A refused attempt is audited as denied
/// (and nothing else is written).
pub fn enroll(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    token: &str,
    requested_labels: &[String],
    cert: &IssuedCert,
    worker: WorkerId,
) -> Result<WorkerRecord, EnrollError> {
    let Some(key) = secret::storage_key(token, TOKEN_PREFIX) else {
        return Err(EnrollError::TokenInvalid);
    };
    let Some(mut record) = tx.get(ENROLL_TOKENS, &key)?.filter(|t| t.expires_at > now) else {
        return Err(EnrollError::TokenInvalid);
    };
    let binding = Binding { worker, key: cert.key_fingerprint.clone() };
    if record.used_by.is_some() {
        return enroll_again(tx, now, origin, &key, &record, &binding, cert);
    }
    let labels = record.labels.clone().unwrap_or_default();
    record.used_by = Some(worker);
    tx.put(ENROLL_TOKENS, &key, &record)?;
    tx.put(BINDINGS, &key, &binding)?;
    let worker_record = WorkerRecord {
        id: worker,
        labels,
        enrolled_at: now,
        cert_serial: cert.serial.clone(),
        cert_not_after: cert.not_after,
        renewed_at: None,
        revoked: false,
    };
    tx.put(WORKERS, &worker.to_key(), &worker_record)?;
    issued::record(tx, worker, cert)?;
    let mut event = Event::new("worker.enrolled", "enroll", Resource::new("worker", worker))
        .detail("enrollment_token", &record.id)
        .detail("cert_serial", &cert.serial)
        .detail("labels", worker_record.labels.join(","));
    let asked = requested_labels.iter().filter(|l| !worker_record.labels.contains(l)).cloned().collect::<Vec<_>>();
    if !asked.is_empty() {
        event = event.detail("labels_not_granted", asked.join(","));
    }
    audit::append(tx, now, origin, event)?;
    Ok(worker_record)
}

/// An admin gives an enrolled worker new labels (what its enrollment token
/// named, or nothing, until then). Audited with both sets.
pub fn set_labels(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    worker: WorkerId,
    labels: Vec<String>,
) -> Result<WorkerRecord, EnrollError> {
    let labels = valid_labels(&labels)?;
    let mut record = tx.get(WORKERS, &worker.to_key())?.ok_or(EnrollError::UnknownWorker)?;
    if record.revoked {
        return Err(EnrollError::Revoked);
    }
    let event = Event::new("worker.labels_changed", "change", Resource::new("worker", worker))
        .detail("from", record.labels.join(","))
        .detail("to", labels.join(","));
    record.labels = labels;
    tx.put(WORKERS, &worker.to_key(), &record)?;
    audit::append(tx, now, origin, event)?;
    Ok(record)
}

/// A used token presented again: accepted only from the key it was bound
/// to, for the same worker, while that worker is not revoked (and, as
/// checked by the caller, before the token expires).
fn enroll_again(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    key: &[u8],
    token: &EnrollmentToken,
    binding: &Binding,
    cert: &IssuedCert,
) -> Result<WorkerRecord, EnrollError> {
    if tx.get(BINDINGS, key)?.as_ref() != Some(binding) || token.used_by != Some(binding.worker) {
        return Err(EnrollError::TokenInvalid);
    }
    let worker = binding.worker;
    let mut record = tx.get(WORKERS, &worker.to_key())?.ok_or(EnrollError::TokenInvalid)?;
    if record.revoked {
        return Err(EnrollError::TokenInvalid);
    }
    let previous = install_cert(tx, &mut record, cert)?;
    tx.delete(RENEWED_FROM, &worker.to_key())?;
    let event = Event::new("worker.enrolled_again", "enroll", Resource::new("worker", worker))
        .detail("enrollment_token", &token.id)
        .detail("cert_serial", &cert.serial)
        .detail("previous_serial", previous);
    audit::append(tx, now, origin, event)?;
    Ok(record)
}

/// What a refused [`enroll`] or [`renew`] was asked to do.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    Enrollment,
    Renewal(WorkerId),
}

/// The audit record of a refused enrollment or renewal. Separate from
/// [`enroll`] and [`renew`] because a refused operation must not write (the
/// store's rule); the API records it after (an enrollment's refusal is
/// anyone's to cause, so it is tallied: `audit::tally`).
pub fn refused_event(refused: Refused, reason: &str) -> Event {
    let (event_type, action, worker) = match refused {
        Refused::Enrollment => ("worker.enroll_refused", "enroll", "-".to_owned()),
        Refused::Renewal(id) => ("worker.renew_refused", "renew", id.to_string()),
    };
    Event::new(event_type, action, Resource::new("worker", worker)).outcome(Outcome::Denied).detail("reason", reason)
}

/// Records a renewed certificate for an enrolled, unrevoked worker that
/// presented `presented` (the serial it connected with): the newest
/// certificate of its lineage, or the one that newest renewed while the
/// worker has not yet been seen using it.
pub fn renew(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    worker: WorkerId,
    presented: &str,
    cert: &IssuedCert,
) -> Result<WorkerRecord, EnrollError> {
    let mut record = tx.get(WORKERS, &worker.to_key())?.ok_or(EnrollError::UnknownWorker)?;
    if record.revoked {
        return Err(EnrollError::Revoked);
    }
    let unconfirmed_parent = tx.get(RENEWED_FROM, &worker.to_key())?;
    if presented != record.cert_serial && unconfirmed_parent.as_deref() != Some(presented) {
        return Err(EnrollError::Superseded);
    }
    record.renewed_at = Some(now);
    let replaced = install_cert(tx, &mut record, cert)?;
    tx.put(RENEWED_FROM, &worker.to_key(), &presented.to_owned())?;
    let mut event = Event::new("worker.renewed", "renew", Resource::new("worker", worker))
        .detail("cert_serial", &cert.serial)
        .detail("previous_serial", presented);
    if replaced != presented {
        // The certificate issued by the renewal whose answer was lost.
        event = event.detail("abandoned_serial", replaced);
    }
    audit::append(tx, now, origin, event)?;
    Ok(record)
}

/// Whether a request with certificate `serial` shows the worker using the
/// newest certificate for the first time, so [`confirm_newest`] should run.
pub fn newest_unconfirmed(tx: &ReadTx, record: &WorkerRecord, serial: &str) -> Result<bool, store::Error> {
    Ok(serial == record.cert_serial && tx.get(RENEWED_FROM, &record.id.to_key())?.is_some())
}

/// The worker has used its newest certificate: the one before it may no
/// longer renew. (Bookkeeping, not a change of identity: not audited.)
pub fn confirm_newest(tx: &mut WriteTx<'_>, worker: WorkerId, serial: &str) -> Result<(), store::Error> {
    let current = tx.get(WORKERS, &worker.to_key())?;
    if current.is_some_and(|r| r.cert_serial == serial) {
        tx.delete(RENEWED_FROM, &worker.to_key())?;
    }
    Ok(())
}

/// Makes `cert` the worker's current certificate and records it as issued;
/// returns the serial it replaces.
fn install_cert(tx: &mut WriteTx<'_>, record: &mut WorkerRecord, cert: &IssuedCert) -> Result<String, store::Error> {
    let previous = std::mem::replace(&mut record.cert_serial, cert.serial.clone());
    record.cert_not_after = cert.not_after;
    tx.put(WORKERS, &record.id.to_key(), record)?;
    issued::record(tx, record.id, cert)?;
    Ok(previous)
}

/// Why `policy` cannot be switched to while workers hold keys it does not
/// allow (see [`unapproved_worker_keys`]); `None` if nothing stands in the way.
pub fn unapproved_worker_keys_refusal(
    tx: &ReadTx,
    policy: CryptoPolicy,
    now: Timestamp,
    grace: Duration,
) -> Result<Option<String>, store::Error> {
    let unapproved = unapproved_worker_keys(tx, policy, now, grace)?;
    Ok(unapproved.first().map(|(worker, kind)| {
        format!(
            "{} active worker(s) hold keys {} mode does not allow (e.g. worker {worker}: {}); revoke them first",
            unapproved.len(),
            policy.mode.as_str(),
            kind.as_str()
        )
    }))
}

/// The active workers (unrevoked, their certificate still usable within
/// `grace`) whose key `policy` does not approve, with that key's kind.
pub fn unapproved_worker_keys(
    tx: &ReadTx,
    policy: CryptoPolicy,
    now: Timestamp,
    grace: Duration,
) -> Result<Vec<(WorkerId, KeyKind)>, store::Error> {
    let mut out = Vec::new();
    for w in list_workers(tx)?.into_iter().filter(|w| !w.revoked && w.cert_not_after.plus(grace) > now) {
        if let Some(kind) = issued::newest_key_kind(tx, w.id)?
            && policy.check_worker_key(kind).is_err()
        {
            out.push((w.id, kind));
        }
    }
    Ok(out)
}

pub fn get_worker(tx: &ReadTx, id: WorkerId) -> Result<Option<WorkerRecord>, store::Error> {
    tx.get(WORKERS, &id.to_key())
}

pub fn list_workers(tx: &ReadTx) -> Result<Vec<WorkerRecord>, store::Error> {
    let mut out = Vec::new();
    tx.scan(WORKERS, None, Order::Ascending, |_, w| {
        out.push(w);
        Ok(true)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, new_worker_key_and_csr};
    use tether_base::crypto::CryptoPolicy;
    use tether_store::Store;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn issued(ca: &Ca, id: WorkerId) -> IssuedCert {
        let (_key, csr) = new_worker_key_and_csr().unwrap();
        ca.sign_worker_csr(CryptoPolicy::STANDARD, &csr, id, NOW, Duration::from_secs(3600)).unwrap()
    }

    /// A store, a CA and one enrollment token for it.
    fn setup(labels: Option<Vec<String>>, ttl: Duration) -> (tempfile::TempDir, Store, Ca, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let (ca, _) = Ca::create(NOW).unwrap();
        let (_, token) =
            store.write_blocking(move |tx| create_enrollment_token(tx, NOW, &Origin::system(), labels, ttl)).unwrap();
        (dir, store, ca, token)
    }

    #[test]
    fn a_token_enrolls_exactly_one_worker_and_fixes_its_labels() {
        let (_dir, store, ca, token) = setup(Some(vec!["gpu".into()]), Duration::from_secs(900));
        let (first, second) = (WorkerId::new(), WorkerId::new());
        let (c1, c2) = (issued(&ca, first), issued(&ca, second));
        let t = token.clone();
        let w = store
            .write_blocking(move |tx| enroll(tx, NOW, &Origin::system(), &t, &["root".into()], &c1, first))
            .unwrap();
        assert_eq!(w.labels, ["gpu"], "the token's labels win over the worker's request");
        let set = store
            .write_blocking(move |tx| set_labels(tx, NOW, &Origin::system(), first, vec!["b".into(), "a".into()]))
            .unwrap();
        assert_eq!(set.labels, ["a", "b"], "an admin's change, sorted");
        let again = store.write_blocking(move |tx| enroll(tx, NOW, &Origin::system(), &token, &[], &c2, second));
        assert!(matches!(again, Err(EnrollError::TokenInvalid)));
        assert!(store.read(|tx| get_worker(tx, second)).unwrap().is_none());
    }

    #[test]
    fn a_worker_asking_for_labels_its_token_did_not_give_gets_none() {
        let (_dir, store, ca, token) = setup(None, Duration::from_secs(900));
        let id = WorkerId::new();
        let cert = issued(&ca, id);
        let asked = vec!["secure".to_string(), "gpu".to_string()];
        let w = store.write_blocking(move |tx| enroll(tx, NOW, &Origin::system(), &token, &asked, &cert, id)).unwrap();
        assert!(w.labels.is_empty(), "{:?}", w.labels);
        let mut log = Vec::new();
        store.read(|tx| crate::audit::export_jsonl(tx, 0, &mut log)).unwrap();
        assert!(String::from_utf8(log).unwrap().contains(r#""labels_not_granted":"secure,gpu""#));
    }

    #[test]
    fn only_the_newest_certificate_renews_or_its_parent_until_the_newest_is_seen() {
        let (_dir, store, ca, token) = setup(None, Duration::from_secs(60));
        let id = WorkerId::new();
        let first = issued(&ca, id);
        let a = first.serial.clone();
        store.write_blocking(move |tx| enroll(tx, NOW, &Origin::system(), &token, &[], &first, id)).unwrap();
        let renew_from = |presented: &str| {
            let (presented, cert) = (presented.to_owned(), issued(&ca, id));
            let serial = cert.serial.clone();
            let r = store.write_blocking(move |tx| renew(tx, NOW, &Origin::system(), id, &presented, &cert));
            r.map(|_| serial)
        };
        // A renews to B, but B's answer is lost: A may renew again, to C.
        let b = renew_from(&a).unwrap();
        let c = renew_from(&a).unwrap();
        assert!(matches!(renew_from(&b), Err(EnrollError::Superseded)), "B was abandoned for C");
        // Once the worker is seen using C, A is done too.
        let record = store.read(|tx| get_worker(tx, id)).unwrap().unwrap();
        assert!(store.read(|tx| newest_unconfirmed(tx, &record, &c)).unwrap());
        let seen = c.clone();
        store.write_blocking(move |tx| confirm_newest(tx, id, &seen)).unwrap();
        assert!(!store.read(|tx| newest_unconfirmed(tx, &record, &c)).unwrap());
        assert!(matches!(renew_from(&a), Err(EnrollError::Superseded)));
        let d = renew_from(&c).unwrap();
        assert_eq!(store.read(|tx| get_worker(tx, id)).unwrap().unwrap().cert_serial, d);
    }

    #[test]
    fn an_expired_or_made_up_token_is_refused() {
        let (_dir, store, ca, token) = setup(None, Duration::from_secs(60));
        let later = NOW.plus(Duration::from_secs(60));
        for attempt in [token, format!("{TOKEN_PREFIX}{}", "0".repeat(64)), "junk".into()] {
            let id = WorkerId::new();
            let cert = issued(&ca, id);
            let r = store.write_blocking(move |tx| enroll(tx, later, &Origin::system(), &attempt, &[], &cert, id));
            assert!(matches!(r, Err(EnrollError::TokenInvalid)));
        }
    }
}
