//! `tether upgrade`: a data directory made by the broker core (schema 1,
//! before the vault) becomes one in which nothing sensitive is plaintext.
//!
//! Three steps, each safe to interrupt (kill -9, power loss), run with the
//! appliance stopped:
//!
//! 1. [`begin`]: one transaction creates the vault with the unseal method the
//!    operator chose, seals the CA key (the broker core kept it in the
//!    plaintext file `ca.key`) into the store, records the upgrade's
//!    [`Progress`] and stamps schema 2, so a broker-core binary no longer
//!    opens the directory. Then `ca.key` is removed.
//! 2. [`seal_tasks`]: tasks are sealed in key order, a batch per transaction
//!    that also advances the progress record. Interrupted, the next run
//!    (given the unseal credentials) resumes after the last committed batch.
//! 3. [`finish`]: the store is copied into a fresh file, because the old
//!    file's freed pages may still hold the plaintext values; the copy drops
//!    the progress record and audits `system.upgraded`, then replaces the old
//!    file by an atomic rename.
//!
//! Until the rename, `tether serve` refuses the directory and says how to
//! finish ([`needed`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{self, Event, Origin, Resource};
use crate::broker;
use crate::pki;
use crate::vault::{self, Keys, Method, memory::KeyBytes};
use tether_base::clock::Timestamp;
use tether_base::files;
use tether_base::files::IoError;
use tether_base::ids::TaskId;
use tether_store::{self as store, Collection, Store};

/// Where the broker core kept the CA's private key, in plaintext.
pub const PLAINTEXT_CA_KEY: &str = "ca.key";
/// Tasks sealed per transaction.
const BATCH: usize = 256;
/// Beside the store: where its fresh copy is built.
const STAGING: &str = ".upgrade-staging";
const PROGRESS: Collection<Progress> = Collection::new("upgrade_progress");
const PROGRESS_KEY: &[u8] = b"vault";

/// How far an upgrade has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub started_at: Timestamp,
    /// Every task up to this one (in key order) is sealed; those after are not.
    pub after: Option<TaskId>,
    pub sealed: u64,
    pub total: u64,
}

/// What a data directory needs before `tether serve` may open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needed {
    Nothing,
    /// Made by the broker core: choose an unseal method and upgrade.
    Begin,
    /// An upgrade was interrupted: run it again with the unseal credentials.
    Resume(Progress),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the data directory is in use: stop the appliance before upgrading it")]
    InUse,
    #[error("{} is missing: this is not a data directory the broker core made", .0.display())]
    NoPlaintextCaKey(PathBuf),
    #[error("no upgrade is under way in this data directory")]
    NotUpgrading,
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Broker(#[from] broker::Error),
    #[error(transparent)]
    Store(store::Error),
    #[error(transparent)]
    Io(#[from] IoError),
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::AlreadyOpen => Error::InUse,
            other => Error::Store(other),
        }
    }
}

fn io(what: &str, path: &Path) -> impl Fn(std::io::Error) -> Error + use<> {
    let failed = IoError::on(what, path);
    move |e| Error::Io(failed(e))
}

fn resource() -> Resource {
    Resource::new("appliance", "tether")
}

/// What `store` needs: nothing, an upgrade, or the rest of one.
pub fn needed(store: &Store) -> Result<Needed, Error> {
    let schema = store.schema_version()?;
    let (has_vault, progress) =
        store.read(|tx| Ok::<_, Error>((vault::exists(tx)?, tx.get(PROGRESS, PROGRESS_KEY)?)))?;
    Ok(match progress {
        Some(progress) => Needed::Resume(progress),
        None if schema == 1 && !has_vault => Needed::Begin,
        None => Needed::Nothing,
    })
}

/// The broker core's plaintext CA key in `dir`; read before anything is
/// written or any unseal material handed out.
pub fn plaintext_ca_key(dir: &Path) -> Result<Zeroizing<String>, Error> {
    let path = dir.join(PLAINTEXT_CA_KEY);
    if !path.exists() {
        return Err(Error::NoPlaintextCaKey(path));
    }
    std::fs::read_to_string(&path).map(Zeroizing::new).map_err(io("read", &path))
}

/// Step 1: creates the vault (`method`, opened by `unseal_key` from
/// [`vault::unseal::prepare`]), seals the CA key into the store and starts
/// the upgrade, in one transaction; then removes the plaintext CA key.
/// Returns the keys for [`seal_tasks`].
pub fn begin(
    store: &Store,
    dir: &Path,
    method: Method,
    unseal_key: KeyBytes,
    ca_key_pem: Zeroizing<String>,
    now: Timestamp,
) -> Result<Keys, Error> {
    let total = store.read(broker::upgrade::count_tasks)?;
    let keys = store.write_blocking(move |tx| {
        let origin = Origin::system();
        let keys = vault::create(tx, now, &origin, method, &unseal_key)?;
        pki::store_ca_key(tx, &keys, pki::CaSlot::Current, &ca_key_pem)?;
        tx.put(PROGRESS, PROGRESS_KEY, &Progress { started_at: now, after: None, sealed: 0, total })?;
        tx.stamp_current_schema()?;
        let event = Event::new("system.upgrade_started", "upgrade", resource())
            .detail("from_schema", 1)
            .detail("to_schema", store::SCHEMA_VERSION)
            .detail("tasks", total);
        audit::append(tx, now, &origin, event)?;
        Ok::<_, Error>(keys)
    })?;
    remove_plaintext_ca_key(dir)?;
    Ok(keys)
}

/// Step 2: seals every task not yet sealed, a batch per transaction, and
/// hands the progress to `report` after each batch.
pub fn seal_tasks(store: &Store, keys: &Keys, mut report: impl FnMut(&Progress)) -> Result<Progress, Error> {
    loop {
        let keys = keys.clone();
        let (progress, done) = store.write_blocking(move |tx| {
            let mut progress = tx.get(PROGRESS, PROGRESS_KEY)?.ok_or(Error::NotUpgrading)?;
            let Some(batch) = broker::upgrade::seal_plaintext_tasks(tx, &keys, progress.after, BATCH)? else {
                return Ok::<_, Error>((progress, true));
            };
            progress.after = Some(batch.last);
            progress.sealed += batch.tasks as u64;
            tx.put(PROGRESS, PROGRESS_KEY, &progress)?;
            Ok((progress, false))
        })?;
        if done {
            return Ok(progress);
        }
        report(&progress);
    }
}

/// Step 3: replaces the store with a fresh copy that holds no freed page of
/// the old one, its upgrade marked done and audited. Consumes the store: the
/// old file is gone when this returns.
pub fn finish(store: Store, dir: &Path, now: Timestamp) -> Result<Progress, Error> {
    let staging = dir.join(STAGING);
    files::fresh_private_dir(&staging).map_err(io("prepare", &staging))?;
    store.copy_into(&staging)?;
    drop(store);
    let copy = Store::open(&staging)?;
    let progress = copy.write_blocking(move |tx| {
        let progress = tx.get(PROGRESS, PROGRESS_KEY)?.ok_or(Error::NotUpgrading)?;
        tx.delete(PROGRESS, PROGRESS_KEY)?;
        let event = Event::new("system.upgraded", "upgrade", resource())
            .detail("to_schema", store::SCHEMA_VERSION)
            .detail("tasks_sealed", progress.sealed);
        audit::append(tx, now, &Origin::system(), event)?;
        Ok::<_, Error>(progress)
    })?;
    drop(copy);
    // Before the rename: once it is done, nothing may still be plaintext.
    remove_plaintext_ca_key(dir)?;
    let from = staging.join(store::DB_FILE);
    std::fs::rename(&from, dir.join(store::DB_FILE)).map_err(io("move into place", &from))?;
    files::sync_dir(dir).map_err(io("sync", dir))?;
    files::remove_dir_if_present(&staging).map_err(io("remove", &staging))?;
    Ok(progress)
}

/// Clears what an upgrade interrupted after its last step may leave behind.
pub fn tidy(dir: &Path) -> Result<(), Error> {
    let staging = dir.join(STAGING);
    files::remove_dir_if_present(&staging).map_err(io("remove", &staging))
}

fn remove_plaintext_ca_key(dir: &Path) -> Result<(), Error> {
    let path = dir.join(PLAINTEXT_CA_KEY);
    if path.exists() {
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
        files::sync_dir(dir).map_err(io("sync", dir))?;
    }
    Ok(())
}
