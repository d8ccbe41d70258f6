//! The key hierarchy as stored and as held in memory.
//!
//! unseal key ──opens──▶ root key ──opens──▶ data keys v1, v2, … ──seal──▶ values
//!
//! The store holds the root key sealed under the unseal key (`vault_meta`)
//! and each data key sealed under the root key (`vault_keys`). New values are
//! sealed with the newest data key; older versions stay for opening what
//! they sealed. Each data key counts its encryptions: random 96-bit nonces
//! stay safe far below 2^32 messages per key, so the vault rotates at
//! [`ROTATE_AFTER_ENCRYPTIONS`] and refuses to go past [`MAX_ENCRYPTIONS`].
//! The count is checkpointed to the store now and then; after a restart it
//! resumes from the checkpoint plus [`RESTART_SLACK`], so encryptions made
//! after the last checkpoint are never forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tether_base::crypto::primitives::hmac;
use zeroize::Zeroize;

use super::cipher::{self, Place, Sealed};
use super::memory::KeyBytes;
use super::{Error, Method};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// `meta` -> the vault's metadata.
pub(super) const META: Collection<VaultMeta> = Collection::new("vault_meta");
pub(super) const META_KEY: &[u8] = b"meta";
/// Data key version (u32 BE) -> the sealed data key.
const KEYS: Collection<KeyRecord> = Collection::new("vault_keys");

/// Rotate to a new data key after this many encryptions with one key.
pub const ROTATE_AFTER_ENCRYPTIONS: u64 = 1 << 30;
/// Never encrypt more than this with one key (2^31, well below 2^32).
pub const MAX_ENCRYPTIONS: u64 = 1 << 31;
/// Added to a key's checkpointed count when it is loaded: more than the
/// appliance can encrypt between two checkpoints.
pub const RESTART_SLACK: u64 = 1 << 20;

const ROOT_PLACE: Place<'static> = Place::new("vault_meta", META_KEY, "root");

/// What the store knows about the vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultMeta {
    pub method: Method,
    /// The root key, sealed under the unseal key.
    pub root: Sealed,
    pub created_at: Timestamp,
}

/// One data key as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    /// The data key, sealed under the root key.
    key: Sealed,
    created_at: Timestamp,
    /// Encryptions made with it, as of the last checkpoint.
    encryptions: u64,
}

fn key_place(version_key: &[u8; 4]) -> Place<'_> {
    Place::new("vault_keys", version_key, "key")
}

/// A data key in memory.
#[derive(Debug)]
pub(super) struct DataKey {
    pub version: u32,
    pub key: KeyBytes,
    pub created_at: Timestamp,
    used: AtomicU64,
}

impl DataKey {
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// The unsealed keys. Dropping the last reference wipes them.
#[derive(Debug)]
pub(super) struct Keyring {
    root: KeyBytes,
    keys: BTreeMap<u32, Arc<DataKey>>,
}

impl Keyring {
    pub fn current(&self) -> Result<&Arc<DataKey>, Error> {
        self.keys.values().next_back().ok_or(Error::Corrupt("the vault has no data key"))
    }

    pub fn versions(&self) -> impl Iterator<Item = &Arc<DataKey>> {
        self.keys.values()
    }

    /// Seals `plaintext` for `place` with the newest data key.
    pub fn seal(&self, place: Place<'_>, plaintext: &[u8]) -> Result<Sealed, Error> {
        let current = self.current()?;
        if current.used.fetch_add(1, Ordering::Relaxed) >= MAX_ENCRYPTIONS {
            return Err(Error::KeyExhausted);
        }
        Ok(cipher::seal(&current.key, current.version, place, plaintext)?)
    }

    /// Opens a value sealed for `place` by any data key version.
    pub fn open(&self, place: Place<'_>, sealed: &Sealed) -> Result<Vec<u8>, Error> {
        let version = sealed.key_version().ok_or(Error::Integrity { table: place.table, field: place.field })?;
        let key = self.keys.get(&version).ok_or(Error::UnknownKeyVersion(version))?;
        cipher::open(&key.key, place, sealed).map_err(|_| Error::Integrity { table: place.table, field: place.field })
    }

    /// A keyed digest (HMAC-SHA256 under a key derived from the root key) for
    /// comparing values without storing a guessable plain hash of them.
    pub fn digest(&self, purpose: &str, fields: &[&[u8]]) -> [u8; 32] {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, self.root.expose()), purpose.as_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        let mut ctx = hmac::Context::with_key(&key);
        for f in fields {
            ctx.update(&(f.len() as u64).to_be_bytes());
            ctx.update(f);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// A copy that also holds `key` (rotation swaps the whole ring).
    fn with(&self, key: DataKey) -> Result<Keyring, Error> {
        let root = KeyBytes::from_slice(self.root.expose()).ok_or(Error::Corrupt("root key length"))?;
        let mut keys = self.keys.clone();
        keys.insert(key.version, Arc::new(key));
        Ok(Keyring { root, keys })
    }

    /// The root key sealed under a new unseal key (for rekey).
    pub fn seal_root(&self, unseal_key: &KeyBytes) -> Result<Sealed, Error> {
        Ok(cipher::seal(unseal_key, 0, ROOT_PLACE, self.root.expose())?)
    }
}

/// A new vault: the root key sealed under `unseal_key`, one data key, and
/// the keyring they open (so `init` can seal the CA key at once).
pub(super) fn create(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    method: Method,
    unseal_key: &KeyBytes,
) -> Result<Keyring, Error> {
    if tx.get(META, META_KEY)?.is_some() {
        return Err(Error::AlreadyInitialised);
    }
    let root = KeyBytes::random()?;
    let ring = Keyring { root, keys: BTreeMap::new() };
    let meta = VaultMeta { method, root: ring.seal_root(unseal_key)?, created_at: now };
    let (ring, record) = add_key(&ring, 1, now)?;
    tx.put(META, META_KEY, &meta)?;
    tx.put(KEYS, &1u32.to_be_bytes(), &record)?;
    Ok(ring)
}

fn add_key(ring: &Keyring, version: u32, now: Timestamp) -> Result<(Keyring, KeyRecord), Error> {
    let key = KeyBytes::random()?;
    let sealed = cipher::seal(&ring.root, 0, key_place(&version.to_be_bytes()), key.expose())?;
    let record = KeyRecord { key: sealed, created_at: now, encryptions: 0 };
    let data_key = DataKey { version, key, created_at: now, used: AtomicU64::new(0) };
    Ok((ring.with(data_key)?, record))
}

/// Adds the next data key version; returns the new ring.
pub(super) fn rotate(tx: &mut WriteTx<'_>, ring: &Keyring, now: Timestamp) -> Result<Keyring, Error> {
    let mut newest = 0u32;
    tx.scan(KEYS, None, Order::Descending, |k, _| {
        newest = u32_key(k);
        Ok(false)
    })?;
    let version = newest.checked_add(1).ok_or(Error::Corrupt("data key versions exhausted"))?;
    let (ring, record) = add_key(ring, version, now)?;
    tx.put(KEYS, &version.to_be_bytes(), &record)?;
    Ok(ring)
}

/// Records how many encryptions each key has made.
pub(super) fn checkpoint(tx: &mut WriteTx<'_>, counts: &[(u32, u64)]) -> Result<(), Error> {
    for &(version, used) in counts {
        let k = version.to_be_bytes();
        if let Some(mut record) = tx.get(KEYS, &k)?
            && record.encryptions < used
        {
            record.encryptions = used;
            tx.put(KEYS, &k, &record)?;
        }
    }
    Ok(())
}

fn u32_key(k: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(k.get(..4).unwrap_or(&[0; 4]));
    u32::from_be_bytes(b)
}

pub(super) fn meta(tx: &ReadTx) -> Result<Option<VaultMeta>, store::Error> {
    tx.get(META, META_KEY)
}

/// Whether `unseal_key` opens this vault's root key.
pub(super) fn opens_root(meta: &VaultMeta, unseal_key: &KeyBytes) -> bool {
    cipher::open(unseal_key, ROOT_PLACE, &meta.root).map(|mut k| k.zeroize()).is_ok()
}

/// Opens the root key with `unseal_key`, then every data key with the root.
/// `Ok(None)` means the unseal key is not this vault's.
pub(super) fn open(tx: &ReadTx, meta: &VaultMeta, unseal_key: &KeyBytes) -> Result<Option<Keyring>, Error> {
    let Ok(mut root_bytes) = cipher::open(unseal_key, ROOT_PLACE, &meta.root) else {
        return Ok(None);
    };
    let root = KeyBytes::from_slice(&root_bytes);
    root_bytes.zeroize();
    let root = root.ok_or(Error::Corrupt("root key length"))?;
    let mut keys = BTreeMap::new();
    let mut failure = None;
    tx.scan(KEYS, None, Order::Ascending, |k, record: KeyRecord| {
        let version = u32_key(k);
        let opened = cipher::open(&root, key_place(&version.to_be_bytes()), &record.key).ok().and_then(|mut bytes| {
            let key = KeyBytes::from_slice(&bytes);
            bytes.zeroize();
            key
        });
        match opened {
            Some(key) => {
                let used = AtomicU64::new(record.encryptions.saturating_add(RESTART_SLACK));
                keys.insert(version, Arc::new(DataKey { version, key, created_at: record.created_at, used }));
                Ok(true)
            }
            None => {
                failure = Some(version);
                Ok(false)
            }
        }
    })?;
    if failure.is_some() {
        return Err(Error::Corrupt("a data key failed its integrity check"));
    }
    Ok(Some(Keyring { root, keys }))
}
