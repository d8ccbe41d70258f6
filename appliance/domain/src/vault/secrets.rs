//! Secrets for tasks: named, versioned values that people write and only
//! workers read.
//!
//! A secret's value is sealed in `secret_values` under `name 0x00 version`;
//! its metadata (policy, versions, who wrote them) is plain in `secrets`.
//! Nothing here returns a value to a person: the one way out is
//! [`open_value`], which the worker gateway calls for a worker holding the
//! lease of a task the policy lets receive it. Each delivery is audited by
//! the lease that carries it ([`grant`] names the versions).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Error, Keys, Place, Sealed, Vault};
use crate::audit::{self, Event, Origin, Resource};
use tether_base::clock::Timestamp;
use tether_base::labels;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

const SECRETS: Collection<SecretRecord> = Collection::new("secrets");
const VALUES: Collection<Sealed> = Collection::new("secret_values");
const VALUES_TABLE: &str = "secret_values";

/// The largest value a secret may hold.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The most secrets one task may name.
pub const MAX_PER_TASK: usize = 16;

/// Who may receive a secret: tasks of one of `kinds`, run by a worker that
/// holds every one of `labels`. An empty `kinds` lets no task receive it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub kinds: Vec<String>,
    pub labels: Vec<String>,
}

impl Policy {
    /// Checks the names and sorts both lists.
    pub fn normalized(self) -> Result<Policy, String> {
        if let Some(bad) = self.kinds.iter().find(|k| !labels::is_valid_name(k)) {
            return Err(format!("task kind {bad:?} must be {}", labels::NAME_RULE));
        }
        let mut kinds = self.kinds;
        kinds.sort();
        kinds.dedup();
        Ok(Policy { kinds, labels: labels::normalize(self.labels)? })
    }

    pub fn allows_kind(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// `worker_labels` sorted.
    pub fn allows_worker(&self, worker_labels: &[String]) -> bool {
        labels::labels_match(&self.labels, worker_labels)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u32,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// A secret's metadata: everything about it but its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub policy: Policy,
    /// Oldest first; the last is the one delivered.
    pub versions: Vec<VersionInfo>,
}

impl SecretRecord {
    pub fn current(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }
}

/// One secret version handed to a task's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
    pub version: u32,
}

/// A value on its way to a worker: wiped when dropped, masked in Debug.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

/// Checks a secret's name (the same rule as task kinds and labels).
pub fn check_name(name: &str) -> Result<(), String> {
    if labels::is_valid_name(name) {
        Ok(())
    } else {
        Err(format!("secret name {name:?} must be {}", labels::NAME_RULE))
    }
}

fn value_key(name: &str, version: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 5);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn resource(name: &str) -> Resource {
    Resource::new("secret", name)
}

/// A new version of a secret, still to be sealed and stored.
pub struct NewVersion {
    pub name: String,
    pub value: Zeroizing<Vec<u8>>,
    /// Replaces the policy; required for a new secret.
    pub policy: Option<Policy>,
}

impl std::fmt::Debug for NewVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewVersion").field("name", &self.name).field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// Why a secret could not be written or named.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Invalid(String),
    #[error("no secret named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Vault(#[from] Error),
}

impl From<store::Error> for SecretError {
    fn from(e: store::Error) -> Self {
        SecretError::Vault(Error::Store(e))
    }
}

impl Vault {
    /// Stores a new version of a secret (the first makes it), sealed, and
    /// audits it (never the value).
    pub async fn put_secret(&self, origin: &Origin, new: NewVersion) -> Result<SecretRecord, SecretError> {
        let (keys, now, origin) = (self.keys()?, self.clock.now(), origin.clone());
        self.store.write(move |tx| put(tx, now, &origin, &keys, new)).await
    }

    /// Deletes a secret and every version of it, audited.
    pub async fn delete_secret(&self, origin: &Origin, name: String) -> Result<SecretRecord, SecretError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| delete(tx, now, &origin, &name)).await
    }

    /// One secret's metadata (no value), if it exists.
    pub fn secret(&self, name: &str) -> Result<Option<SecretRecord>, store::Error> {
        self.store.read(|tx| get(tx, name))
    }

    /// Every secret's metadata (no values).
    pub fn secrets(&self) -> Result<Vec<SecretRecord>, store::Error> {
        self.store.read(list)
    }
}

/// Stores the next version of a secret (creating it with version 1).
pub fn put(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    keys: &Keys,
    new: NewVersion,
) -> Result<SecretRecord, SecretError> {
    check_name(&new.name).map_err(SecretError::Invalid)?;
    if new.value.is_empty() || new.value.len() > MAX_VALUE_BYTES {
        return Err(SecretError::Invalid(format!("a secret's value must be 1-{MAX_VALUE_BYTES} bytes")));
    }
    let policy = new.policy.map(Policy::normalized).transpose().map_err(SecretError::Invalid)?;
    let mut record = match (tx.get(SECRETS, new.name.as_bytes())?, policy) {
        (Some(mut existing), policy) => {
            if let Some(p) = policy {
                existing.policy = p;
            }
            existing
        }
        (None, Some(policy)) => SecretRecord { name: new.name.clone(), policy, versions: Vec::new() },
        (None, None) => {
            return Err(SecretError::Invalid(
                "a new secret needs a policy: the task kinds (and worker labels) that may receive it".into(),
            ));
        }
    };
    let version = record.current().checked_add(1).ok_or(Error::Corrupt("secret version overflow"))?;
    let key = value_key(&new.name, version);
    let sealed = keys.encrypt(Place::new(VALUES_TABLE, &key, "value"), &new.value)?;
    record.versions.push(VersionInfo { version, created_at: now, created_by: origin.actor.id.clone() });
    tx.put(VALUES, &key, &sealed)?;
    tx.put(SECRETS, new.name.as_bytes(), &record)?;
    let event = Event::new("secret.written", "write", resource(&new.name))
        .detail("version", version)
        .detail("kinds", record.policy.kinds.join(","))
        .detail("labels", record.policy.labels.join(","));
    audit::append(tx, now, origin, event)?;
    Ok(record)
}

/// Deletes a secret and every version of its value.
pub fn delete(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, name: &str) -> Result<SecretRecord, SecretError> {
    let record = tx.get(SECRETS, name.as_bytes())?.ok_or_else(|| SecretError::NotFound(name.into()))?;
    for v in &record.versions {
        tx.delete(VALUES, &value_key(name, v.version))?;
    }
    tx.delete(SECRETS, name.as_bytes())?;
    let event = Event::new("secret.deleted", "delete", resource(name)).detail("versions", record.versions.len());
    audit::append(tx, now, origin, event)?;
    Ok(record)
}

pub fn get(tx: &ReadTx, name: &str) -> Result<Option<SecretRecord>, store::Error> {
    tx.get(SECRETS, name.as_bytes())
}

/// Every secret's metadata, by name.
pub fn list(tx: &ReadTx) -> Result<Vec<SecretRecord>, store::Error> {
    let mut out = Vec::new();
    tx.scan(SECRETS, None, Order::Ascending, |_, r| {
        out.push(r);
        Ok(true)
    })?;
    Ok(out)
}

/// What a lease of a task may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// These versions go with the lease.
    Deliver(Vec<SecretRef>),
    /// Not to this worker (its labels fall short); another may take it.
    Withhold,
    /// To no worker: a secret is gone or no longer allows the task's kind.
    Refuse(String),
}

/// The secret `name`, if it exists and may go to `kind` tasks; otherwise
/// why not (for a person at task creation, for the record at dispatch).
fn for_kind(tx: &mut WriteTx<'_>, name: &str, kind: &str) -> Result<Result<SecretRecord, SecretError>, store::Error> {
    let Some(record) = tx.get(SECRETS, name.as_bytes())? else {
        return Ok(Err(SecretError::NotFound(name.into())));
    };
    if !record.policy.allows_kind(kind) {
        return Ok(Err(SecretError::Invalid(format!(
            "the secret {name:?} may not be given to {kind:?} tasks (its policy allows: {})",
            record.policy.kinds.join(", ")
        ))));
    }
    Ok(Ok(record))
}

/// Whether a task of `kind` naming `names` may be run by a worker with
/// `worker_labels` (sorted), and with which secret versions.
pub fn grant(
    tx: &mut WriteTx<'_>,
    kind: &str,
    names: &[String],
    worker_labels: &[String],
) -> Result<Grant, store::Error> {
    let mut refs = Vec::with_capacity(names.len());
    let mut withhold = false;
    for name in names {
        let record = match for_kind(tx, name, kind)? {
            Ok(record) => record,
            Err(why) => return Ok(Grant::Refuse(why.to_string())),
        };
        withhold |= !record.policy.allows_worker(worker_labels);
        refs.push(SecretRef { name: record.name.clone(), version: record.current() });
    }
    Ok(if withhold { Grant::Withhold } else { Grant::Deliver(refs) })
}

/// The labels a worker needs to receive every secret in `names` (those that
/// exist), so dispatch only offers the task to workers that may have them.
pub fn required_labels(tx: &mut WriteTx<'_>, names: &[String]) -> Result<Vec<String>, store::Error> {
    let mut out = Vec::new();
    for name in names {
        if let Some(record) = tx.get(SECRETS, name.as_bytes())? {
            out.extend(record.policy.labels);
        }
    }
    Ok(out)
}

/// Checks that every secret in `names` exists and may go to `kind` tasks.
pub fn check_for_task(tx: &mut WriteTx<'_>, kind: &str, names: &[String]) -> Result<(), SecretError> {
    for name in names {
        for_kind(tx, name, kind)??;
    }
    Ok(())
}

/// Seals again under the current key every secret value an older key
/// sealed; returns how many moved.
pub fn refresh_seals(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<usize, Error> {
    let mut sealed = Vec::new();
    tx.scan(VALUES, None, Order::Ascending, |key, value: Sealed| {
        sealed.push((key.to_vec(), value));
        Ok(true)
    })?;
    let mut fresh = Vec::new();
    for (key, value) in &sealed {
        if let Some(v) = keys.refresh(Place::new(VALUES_TABLE, key, "value"), value)? {
            fresh.push((key, v));
        }
    }
    for (key, value) in &fresh {
        tx.put(VALUES, key, value)?;
    }
    Ok(fresh.len())
}

/// Opens one secret version for delivery.
pub fn open_value(store: &store::Store, keys: &Keys, r: &SecretRef) -> Result<SecretValue, SecretError> {
    let key = value_key(&r.name, r.version);
    let sealed = store.read(|tx| tx.get(VALUES, &key))?.ok_or_else(|| SecretError::NotFound(r.name.clone()))?;
    let value = keys.decrypt(Place::new(VALUES_TABLE, &key, "value"), &sealed)?;
    Ok(SecretValue(Zeroizing::new(value)))
}

/// An audit event for one delivery (the caller appends it with the lease).
pub fn delivery_event(r: &SecretRef, task: impl ToString, worker: impl ToString) -> Event {
    Event::new("secret.delivered", "deliver", resource(&r.name))
        .detail("version", r.version)
        .detail("task", task.to_string())
        .detail("worker", worker.to_string())
}
