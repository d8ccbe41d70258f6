//! What was issued to each worker: every certificate by serial (revocation
//! lists them all, not only the newest), and of the newest, the CA that
//! signed it (CA rotation asks) and the kind of key it certifies (the
//! crypto policy asks). Written once per issuance, by enrollment and
//! renewal.

use serde::{Deserialize, Serialize};

use super::IssuedCert;
use tether_base::clock::Timestamp;
use tether_base::crypto::KeyKind;
use tether_base::ids::WorkerId;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by worker id then serial.
const ISSUED: Collection<Issued> = Collection::new("pki_issued");
/// Keyed by worker id: the fingerprint of the CA that signed the newest.
const WORKER_ISSUER: Collection<String> = Collection::new("pki_worker_issuer");
/// Keyed by worker id: the kind of key the newest certifies (absent for
/// workers not renewed since this was recorded).
const WORKER_KEYS: Collection<KeyKind> = Collection::new("pki_worker_keys");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Issued {
    not_after: Timestamp,
}

/// Records `cert`, just issued to `worker` as its newest certificate.
pub(super) fn record(tx: &mut WriteTx<'_>, worker: WorkerId, cert: &IssuedCert) -> Result<(), store::Error> {
    let mut key = worker.to_key().to_vec();
    key.extend_from_slice(cert.serial.as_bytes());
    tx.put(ISSUED, &key, &Issued { not_after: cert.not_after })?;
    tx.put(WORKER_ISSUER, &worker.to_key(), &cert.issuer)?;
    tx.put(WORKER_KEYS, &worker.to_key(), &cert.key_kind)
}

/// The serials (hex) of `worker`'s certificates still valid at `now`.
pub(super) fn unexpired_serials(
    tx: &mut WriteTx<'_>,
    worker: WorkerId,
    now: Timestamp,
) -> Result<Vec<String>, store::Error> {
    let mut serials = Vec::new();
    let prefix = worker.to_key();
    tx.scan(ISSUED, Some(&prefix[..]), Order::Ascending, |key, issued: Issued| {
        let Some(serial) = key.strip_prefix(&prefix[..]) else {
            return Ok(false);
        };
        if issued.not_after > now {
            serials.push(String::from_utf8_lossy(serial).into_owned());
        }
        Ok(true)
    })?;
    Ok(serials)
}

/// The fingerprint of the CA that signed `worker`'s newest certificate, if
/// recorded.
pub(super) fn newest_issuer(tx: &ReadTx, worker: WorkerId) -> Result<Option<String>, store::Error> {
    tx.get(WORKER_ISSUER, &worker.to_key())
}

/// The kind of key `worker`'s newest certificate certifies, if recorded.
pub(super) fn newest_key_kind(tx: &ReadTx, worker: WorkerId) -> Result<Option<KeyKind>, store::Error> {
    tx.get(WORKER_KEYS, &worker.to_key())
}
