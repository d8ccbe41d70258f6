//! The vault: seal/unseal, the key hierarchy, and encryption at rest.
//!
//! The appliance starts **sealed**: it holds no key, and nothing sensitive in
//! the store can be read. Unsealing (a passphrase, k of n officer shares, or
//! a key file; see [`unseal`]) opens the root key, which opens the data keys
//! ([`keyring`]); sealing drops them all from memory at once. Sensitive
//! values are stored as [`Sealed`] ciphertexts bound to their [`Place`].
//!
//! Rules: key material lives only in [`memory::KeyBytes`] (wiped, locked,
//! masked); nothing here ever logs, returns in an error, or audits a key, a
//! passphrase, a share or a decrypted value.

mod cipher;
pub mod crypto_mode;
mod keyring;
pub mod memory;
pub mod secrets;
mod shamir;
pub mod unseal;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use zeroize::Zeroizing;

pub use cipher::{CipherError, Place, Sealed};
use keyring::Keyring;
pub use keyring::{MAX_ENCRYPTIONS, ROTATE_AFTER_ENCRYPTIONS};
pub use shamir::ShareError;
use unseal::PendingShares;
pub use unseal::{Choice, Material, Method};

use crate::audit::{self, Event, Origin, Resource};
use tether_base::clock::{SharedClock, Timestamp};
use tether_base::secret::RandomFailed;
use tether_store::{self as store, Store, WriteTx};

/// What went wrong, named for the person at the console. None of these
/// carries a key, a passphrase, a share or a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the appliance is sealed; unseal it first (`tether unseal`)")]
    Sealed,
    #[error(
        "this data directory was made before the vault and has none; run `tether upgrade` with the appliance stopped"
    )]
    NotInitialised,
    #[error("the vault is already set up in this data directory")]
    AlreadyInitialised,
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("this key file does not unseal this appliance")]
    WrongKeyFile,
    #[error("not a tether unseal key file")]
    NotAKeyFile,
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error("share {index} belongs to another appliance or to a share set replaced by rekey")]
    ShareFromAnotherSet { index: u8 },
    #[error("share {index} was already given")]
    DuplicateShare { index: u8 },
    #[error("these shares do not unseal this appliance; start again with the right shares")]
    SharesDoNotOpen,
    #[error("rekey needs the current credentials: the passphrase, a quorum of shares, or the key file")]
    QuorumNeeded,
    #[error("this appliance unseals with {method}, not with what was given")]
    WrongMethod { method: &'static str },
    #[error("the passphrase needs at least {} characters", unseal::MIN_PASSPHRASE_CHARS)]
    WeakPassphrase,
    #[error("shares need 1 <= threshold <= count <= {}", unseal::MAX_SHARES)]
    BadShareSetup,
    #[error("a stored value failed its integrity check ({table}.{field}): tampered or corrupted")]
    Integrity { table: &'static str, field: &'static str },
    #[error("a stored value names data key version {0}, which this vault does not have")]
    UnknownKeyVersion(u32),
    #[error("the data key has reached its encryption limit and must be rotated first")]
    KeyExhausted,
    #[error("the vault's records are damaged: {0}")]
    Corrupt(&'static str),
    #[error("the system random source failed")]
    Random,
    /// The crypto mode asked for does not allow something in use (the
    /// message says what, and what to do).
    #[error("{0}")]
    NotAllowedInMode(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl From<RandomFailed> for Error {
    fn from(_: RandomFailed) -> Self {
        Error::Random
    }
}

impl From<CipherError> for Error {
    fn from(e: CipherError) -> Self {
        match e {
            CipherError::Random => Error::Random,
            CipherError::Integrity => Error::Corrupt("a key failed its integrity check"),
        }
    }
}

/// What the unseal method is asked with.
#[derive(Debug)]
pub enum Credential {
    Passphrase(Zeroizing<String>),
    /// One officer's share text.
    Share(Zeroizing<String>),
    /// The key file's text.
    KeyFile(Zeroizing<String>),
    /// Forget the shares given so far.
    Reset,
}

/// The vault as the console and `/healthz` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub sealed: bool,
    /// `passphrase`, `shares` or `key_file`; absent before the vault exists.
    pub method: Option<&'static str>,
    /// Shares given so far while sealed, and how many are needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<ShareProgress>,
    /// The data key new values are sealed with (when unsealed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ShareProgress {
    pub received: u8,
    pub threshold: u8,
    /// When the shares given so far are forgotten (10 minutes after the
    /// first), if any were given.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "tether_base::clock::as_rfc3339_opt")]
    pub expires_at: Option<Timestamp>,
}

enum State {
    Sealed(PendingShares),
    Unsealed(Arc<Keyring>),
}

/// The unsealed keys, for sealing and opening values. Holding one keeps the
/// keys alive: hold it for one operation (its store write included), never
/// across a wait for a person or the network.
#[derive(Clone, Debug)]
pub struct Keys(Arc<Keyring>);

impl Keys {
    pub fn encrypt(&self, place: Place<'_>, plaintext: &[u8]) -> Result<Sealed, Error> {
        self.0.seal(place, plaintext)
    }

    pub fn decrypt(&self, place: Place<'_>, sealed: &Sealed) -> Result<Vec<u8>, Error> {
        self.0.open(place, sealed)
    }

    /// The version of the data key new values are sealed with.
    pub fn current_version(&self) -> Result<u32, Error> {
        Ok(self.0.current()?.version)
    }

    /// `sealed` opened and sealed again under the current key, if an older
    /// key sealed it (the background re-encryption's one step).
    pub fn refresh(&self, place: Place<'_>, sealed: &Sealed) -> Result<Option<Sealed>, Error> {
        if sealed.key_version() == Some(self.current_version()?) {
            return Ok(None);
        }
        let plain = Zeroizing::new(self.decrypt(place, sealed)?);
        Ok(Some(self.encrypt(place, &plain)?))
    }

    /// A keyed digest of `fields` for `purpose` (see [`keyring::Keyring::digest`]).
    pub fn digest(&self, purpose: &str, fields: &[&[u8]]) -> [u8; 32] {
        self.0.digest(purpose, fields)
    }
}

/// The vault service. Share one `Arc<Vault>`.
pub struct Vault {
    store: Store,
    clock: SharedClock,
    state: RwLock<State>,
    unsealed: watch::Sender<bool>,
    /// When it was last unsealed (`None` while sealed), for the posture check.
    unsealed_at: std::sync::Mutex<Option<Timestamp>>,
    /// Counts changes of the status (see [`Vault::changes`]).
    changed: watch::Sender<u64>,
    /// One unseal attempt at a time: bounds passphrase guessing to the KDF's pace.
    attempts: Mutex<()>,
    /// One rotation at a time, so each builds on the ring the last one made.
    rotation: Mutex<()>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("sealed", &self.is_sealed()).finish_non_exhaustive()
    }
}

/// The unseal key from a complete set of credentials: the passphrase, a
/// quorum of shares, or the key file.
async fn unseal_key_from(method: &Method, credentials: Vec<Credential>) -> Result<memory::KeyBytes, Error> {
    let mut pending = PendingShares::default();
    let mut unseal_key = None;
    for credential in credentials {
        unseal_key = derive(method, credential, &mut pending).await?;
    }
    unseal_key.ok_or(Error::QuorumNeeded)
}

/// Opens the keys of a store that is not being served (a backup under
/// inspection) with a complete set of credentials. Nothing is audited or
/// kept beyond the returned keys.
pub async fn open_offline(store: &Store, credentials: Vec<Credential>) -> Result<Keys, Error> {
    let meta = store.read(keyring::meta)?.ok_or(Error::NotInitialised)?;
    let unseal_key = unseal_key_from(&meta.method, credentials).await?;
    let ring = store.read(|tx| keyring::open(tx, &meta, &unseal_key))?;
    Ok(Keys(Arc::new(ring.ok_or_else(|| refusal_for(&meta.method))?)))
}

/// Whether the vault has been set up in this store (a data directory made
/// before the vault has none until `tether upgrade`).
pub fn exists(tx: &store::ReadTx) -> Result<bool, store::Error> {
    Ok(keyring::meta(tx)?.is_some())
}

/// Sets up the vault in a new store: returns the keys (so the caller can
/// seal what it stores next in the same transaction) and leaves the
/// method recorded. `unseal_key` comes from [`unseal::prepare`].
pub fn create(
    tx: &mut WriteTx<'_>,
    now: tether_base::clock::Timestamp,
    origin: &Origin,
    method: Method,
    unseal_key: &memory::KeyBytes,
) -> Result<Keys, Error> {
    let name = method.name();
    let ring = keyring::create(tx, now, method, unseal_key)?;
    audit::append(tx, now, origin, Event::new("vault.created", "create", resource()).detail("method", name))?;
    Ok(Keys(Arc::new(ring)))
}

fn resource() -> Resource {
    Resource::new("vault", "keys")
}

impl Vault {
    /// A sealed vault over `store`.
    pub fn new(store: Store, clock: SharedClock) -> Vault {
        Vault {
            store,
            clock,
            state: RwLock::new(State::Sealed(PendingShares::default())),
            unsealed: watch::channel(false).0,
            unsealed_at: std::sync::Mutex::new(None),
            changed: watch::channel(0).0,
            attempts: Mutex::new(()),
            rotation: Mutex::new(()),
        }
    }

    pub fn is_sealed(&self) -> bool {
        !*self.unsealed.borrow()
    }

    /// The keys, or [`Error::Sealed`].
    pub fn keys(&self) -> Result<Keys, Error> {
        match &*self.state.read().unwrap_or_else(PoisonError::into_inner) {
            State::Unsealed(ring) => Ok(Keys(ring.clone())),
            State::Sealed(_) => Err(Error::Sealed),
        }
    }

    pub fn encrypt(&self, place: Place<'_>, plaintext: &[u8]) -> Result<Sealed, Error> {
        self.keys()?.encrypt(place, plaintext)
    }

    pub fn decrypt(&self, place: Place<'_>, sealed: &Sealed) -> Result<Vec<u8>, Error> {
        self.keys()?.decrypt(place, sealed)
    }

    /// Since when the vault has been unsealed; `None` while sealed.
    pub fn unsealed_since(&self) -> Option<Timestamp> {
        *self.unsealed_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_unsealed_at(&self, at: Option<Timestamp>) {
        *self.unsealed_at.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Waits until the vault is unsealed; `false` if `until` comes first.
    pub async fn wait_unsealed(&self, until: tokio::time::Instant) -> bool {
        let mut rx = self.unsealed.subscribe();
        matches!(tokio::time::timeout_at(until, rx.wait_for(|u| *u)).await, Ok(Ok(_)))
    }

    /// A receiver that changes whenever the vault seals or unseals.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.unsealed.subscribe()
    }

    /// A receiver that changes whenever the vault's status may have: a
    /// share given or refused, a reset, an unseal, a seal (for live views
    /// of an unseal ceremony).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How this vault unseals (`None` before `init` made it).
    pub fn method(&self) -> Result<Option<Method>, Error> {
        Ok(self.store.read(keyring::meta)?.map(|m| m.method))
    }

    pub fn status(&self) -> Result<Status, Error> {
        let meta = self.store.read(keyring::meta)?;
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        let (sealed, key_version, received, expires_at) = match &*state {
            // A ceremony past its window is over, though its shares are
            // dropped only at the next one given.
            State::Sealed(pending) => match pending.expires_at() {
                Some(at) if now < at => (true, None, pending.received(), Some(at)),
                _ => (true, None, 0, None),
            },
            State::Unsealed(ring) => (false, ring.current().ok().map(|k| k.version), 0, None),
        };
        let shares = match meta.as_ref().map(|m| &m.method) {
            Some(Method::Shares { threshold, .. }) if sealed => {
                Some(ShareProgress { received, threshold: *threshold, expires_at })
            }
            _ => None,
        };
        Ok(Status { sealed, method: meta.map(|m| m.method.name()), shares, key_version })
    }

    /// Tries `credential`. Shares accumulate until the threshold; any refusal
    /// leaves the vault as it was (a refused share is not kept).
    pub async fn unseal(&self, origin: &Origin, credential: Credential) -> Result<Status, Error> {
        let _one_at_a_time = self.attempts.lock().await;
        let result = self.try_unseal(origin, credential).await;
        self.changed.send_modify(|n| *n += 1);
        result
    }

    async fn try_unseal(&self, origin: &Origin, credential: Credential) -> Result<Status, Error> {
        if !self.is_sealed() {
            return self.status();
        }
        let meta = self.store.read(keyring::meta)?.ok_or(Error::NotInitialised)?;
        if matches!(credential, Credential::Reset) {
            self.with_pending(PendingShares::clear);
            return self.status();
        }
        let derived = match credential {
            Credential::Share(text) => {
                let now = self.clock.now();
                self.with_pending(|p| p.add_at(&meta.method, &text, now))?
            }
            other => derive(&meta.method, other, &mut PendingShares::default()).await?,
        };
        let Some(unseal_key) = derived else {
            return self.status();
        };
        let Some(ring) = self.store.read(|tx| keyring::open(tx, &meta, &unseal_key))? else {
            self.audit(origin, "vault.unseal_refused", meta.method.name()).await;
            return Err(refusal_for(&meta.method));
        };
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = State::Unsealed(Arc::new(ring));
        self.set_unsealed_at(Some(self.clock.now()));
        self.unsealed.send_replace(true);
        self.audit(origin, "vault.unsealed", meta.method.name()).await;
        tracing::info!(method = meta.method.name(), "vault unsealed");
        self.status()
    }

    /// Replaces the unseal method (passphrase, share set or key file) after
    /// checking `current`, the present credentials (a passphrase, a quorum
    /// of shares, or the key file). The root key is rewrapped; no data is
    /// touched. Returns what to hand out for the new method.
    pub async fn rekey(&self, origin: &Origin, current: Vec<Credential>, choice: Choice) -> Result<Material, Error> {
        let _one_at_a_time = self.attempts.lock().await;
        let ring = self.keys()?.0;
        let meta = self.store.read(keyring::meta)?.ok_or(Error::NotInitialised)?;
        let unseal_key = unseal_key_from(&meta.method, current).await?;
        if !keyring::opens_root(&meta, &unseal_key) {
            return Err(refusal_for(&meta.method));
        }
        let policy = self.store.read(crypto_mode::stored)?;
        let (method, new_key, material) = tokio::task::spawn_blocking(move || unseal::prepare(policy, choice))
            .await
            .map_err(|_| Error::Corrupt("the key derivation stopped"))??;
        let (now, origin, old_method) = (self.clock.now(), origin.clone(), meta.method.name());
        let new_meta = keyring::VaultMeta { method, root: ring.seal_root(&new_key)?, created_at: meta.created_at };
        self.store
            .write(move |tx| {
                let event = Event::new("vault.rekeyed", "rekey", resource())
                    .detail("from", old_method)
                    .detail("to", new_meta.method.name());
                tx.put(keyring::META, keyring::META_KEY, &new_meta)?;
                audit::append(tx, now, &origin, event)?;
                Ok::<_, Error>(())
            })
            .await?;
        tracing::info!(from = old_method, "vault rekeyed");
        Ok(material)
    }

    fn with_pending<R>(&self, f: impl FnOnce(&mut PendingShares) -> R) -> R {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            State::Sealed(pending) => f(pending),
            State::Unsealed(_) => f(&mut PendingShares::default()),
        }
    }

    /// Drops every key from memory at once. In-flight operations finish with
    /// the keys they already hold; everything after gets [`Error::Sealed`].
    pub async fn seal(&self, origin: &Origin) -> Result<(), Error> {
        let previous = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *state, State::Sealed(PendingShares::default()))
        };
        self.set_unsealed_at(None);
        self.unsealed.send_replace(false);
        self.changed.send_modify(|n| *n += 1);
        if let State::Unsealed(ring) = previous {
            let counts = counts(&ring);
            drop(ring);
            self.store.write(move |tx| keyring::checkpoint(tx, &counts)).await?;
            self.audit(origin, "vault.sealed", "").await;
            tracing::info!("vault sealed");
        }
        Ok(())
    }

    /// Adds a new data key; new values are sealed with it from now on.
    pub async fn rotate(&self, origin: &Origin, reason: &'static str) -> Result<u32, Error> {
        let _one_at_a_time = self.rotation.lock().await;
        let ring = self.keys()?.0;
        let (now, origin) = (self.clock.now(), origin.clone());
        let rotated = self
            .store
            .write(move |tx| {
                let rotated = keyring::rotate(tx, &ring, now)?;
                let version = rotated.current()?.version;
                let event = Event::new("vault.key_rotated", "rotate", resource())
                    .detail("version", version)
                    .detail("reason", reason);
                audit::append(tx, now, &origin, event)?;
                Ok::<_, Error>(rotated)
            })
            .await?;
        let version = rotated.current()?.version;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if let State::Unsealed(ring) = &mut *state {
            *ring = Arc::new(rotated);
        }
        tracing::info!(version, reason, "data key rotated");
        Ok(version)
    }

    /// Checkpoints encryption counts and rotates the data key when it is old
    /// or has sealed [`ROTATE_AFTER_ENCRYPTIONS`] values.
    pub async fn maintain(&self, max_key_age: Duration) -> Result<(), Error> {
        let Ok(keys) = self.keys() else {
            return Ok(());
        };
        let counts = counts(&keys.0);
        let current = keys.0.current()?.clone();
        drop(keys);
        self.store.write(move |tx| keyring::checkpoint(tx, &counts)).await?;
        let now = self.clock.now();
        if current.used() >= ROTATE_AFTER_ENCRYPTIONS {
            self.rotate(&Origin::system(), "encryption_count").await?;
        } else if now.since(current.created_at) >= max_key_age {
            self.rotate(&Origin::system(), "age").await?;
        }
        Ok(())
    }

    /// Runs [`Vault::maintain`] every `every` (until the task is dropped).
    pub async fn run_maintenance(self: Arc<Self>, every: Duration, max_key_age: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.maintain(max_key_age).await {
                tracing::error!(error = %e, "vault maintenance failed; retrying");
            }
        }
    }

    async fn audit(&self, origin: &Origin, event_type: &'static str, method: &'static str) {
        let (now, origin) = (self.clock.now(), origin.clone());
        let written = self
            .store
            .write(move |tx| {
                let mut event = Event::new(event_type, "unseal", resource());
                if !method.is_empty() {
                    event = event.detail("method", method);
                }
                audit::append(tx, now, &origin, event)
            })
            .await;
        if let Err(e) = written {
            tracing::error!(error = %e, event_type, "could not audit a vault event");
        }
    }
}

/// A vault created in `store` and already unseal, for other modules' tests.
/// Safe to call from inside a tokio runtime.
#[cfg(test)]
pub fn unsealed_for_tests(store: &Store, clock: SharedClock) -> Arc<Vault> {
    let (s, now) = (store.clone(), clock.now());
    let keys = std::thread::spawn(move || {
        let (method, key, _) = unseal::prepare(tether_base::crypto::CryptoPolicy::STANDARD, Choice::KeyFile)?;
        s.write_blocking(move |tx| create(tx, now, &Origin::system(), method, &key))
    })
    .join()
    .map_err(|_| "vault setup panicked")
    .and_then(|r| r.map_err(|_| "vault setup failed"));
    let vault = Vault::new(store.clone(), clock);
    if let Ok(Keys(ring)) = keys {
        *vault.state.write().unwrap_or_else(PoisonError::into_inner) = State::Unsealed(ring);
        vault.set_unsealed_at(Some(now));
        vault.unsealed.send_replace(true);
    }
    Arc::new(vault)
}

/// The unseal key a credential yields under `method`; `None` while shares
/// are still short of the threshold.
async fn derive(
    method: &Method,
    credential: Credential,
    pending: &mut PendingShares,
) -> Result<Option<memory::KeyBytes>, Error> {
    match (credential, method) {
        (Credential::Passphrase(p), Method::Passphrase { kdf }) => {
            let kdf = kdf.clone();
            let key = tokio::task::spawn_blocking(move || kdf.derive(&p))
                .await
                .map_err(|_| Error::Corrupt("the key derivation stopped"))??;
            Ok(Some(key))
        }
        (Credential::Share(text), Method::Shares { .. }) => pending.add(method, &text),
        (Credential::KeyFile(text), Method::KeyFile) => Ok(Some(unseal::parse_key_file(&text)?)),
        (_, method) => Err(Error::WrongMethod { method: method.name() }),
    }
}

/// The error for an unseal key that does not open the root key.
fn refusal_for(method: &Method) -> Error {
    match method {
        Method::Passphrase { .. } => Error::WrongPassphrase,
        Method::Shares { .. } => Error::SharesDoNotOpen,
        Method::KeyFile => Error::WrongKeyFile,
    }
}

fn counts(ring: &Keyring) -> Vec<(u32, u64)> {
    ring.versions().map(|k| (k.version, k.used())).collect()
}

#[cfg(test)]
mod tests;
