//! The audit log's signing key: ECDSA P-256, made once, its private half
//! sealed in the store (opened per signature, so a sealed appliance signs
//! nothing), its public half in the clear so that anyone can verify an
//! export offline.
//!
//! Two things are signed, each with its own domain label so a signature of
//! one can never pass for the other: checkpoints in the chain (every 1,000
//! records or `audit_checkpoint_interval`), and the seal that ends an export.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::vault::{self, Keys, Place, Sealed};
use tether_base::crypto::p256::{self, KeyError, PrivateKey};
use tether_store::{self as store, Collection, ReadTx, WriteTx};

const KEYS: Collection<SigningKey> = Collection::new("audit_signing");
const KEY_ID: &[u8] = b"key";
const PLACE: Place<'static> = Place::new("audit_signing", KEY_ID, "pkcs8");

/// What is signed: a checkpoint in the chain, or the seal of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Checkpoint,
    ExportSeal,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Checkpoint => b"tether.audit.checkpoint.v1",
            Purpose::ExportSeal => b"tether.audit.export-seal.v1",
        }
    }
}

/// The bytes a signature covers: the purpose, then the record's seq and hash.
fn message(purpose: Purpose, seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = purpose.label().to_vec();
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SigningKey {
    pkcs8: Sealed,
    /// The uncompressed P-256 point.
    public: Vec<u8>,
}

/// Why signing or checking a signature failed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the audit signing key is missing; unseal the appliance once to create it")]
    NoKey,
    #[error("the audit signing key is damaged")]
    BadKey,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Makes the key if there is none yet (needs the vault unsealed).
pub fn ensure_key(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<bool, SigningError> {
    if tx.get(KEYS, KEY_ID)?.is_some() {
        return Ok(false);
    }
    let private = PrivateKey::generate()?;
    let key = SigningKey { pkcs8: keys.encrypt(PLACE, private.pkcs8())?, public: private.public().point().to_vec() };
    tx.put(KEYS, KEY_ID, &key)?;
    Ok(true)
}

/// Makes the key if there is none yet, in its own write (needs the vault
/// unsealed). The first checkpoint or export after the first unseal does it.
pub async fn ensure(store: &tether_store::Store, keys: &Keys) -> Result<(), SigningError> {
    if store.read(has_key)? {
        return Ok(());
    }
    let keys = keys.clone();
    store.write(move |tx| ensure_key(tx, &keys)).await?;
    Ok(())
}

/// Whether the key exists yet.
pub fn has_key(tx: &ReadTx) -> Result<bool, store::Error> {
    Ok(tx.get(KEYS, KEY_ID)?.is_some())
}

/// Seals the key again under the current data key if an older one sealed it.
pub fn refresh_key(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<bool, vault::Error> {
    let Some(mut key) = tx.get(KEYS, KEY_ID)? else { return Ok(false) };
    match keys.refresh(PLACE, &key.pkcs8)? {
        Some(fresh) => {
            key.pkcs8 = fresh;
            tx.put(KEYS, KEY_ID, &key)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The public key as PEM (SubjectPublicKeyInfo), for `verify --public-key`.
pub fn public_key_pem(tx: &ReadTx) -> Result<String, SigningError> {
    let key = tx.get(KEYS, KEY_ID)?.ok_or(SigningError::NoKey)?;
    Ok(p256::PublicKey::from_point(&key.public)?.to_pem())
}

/// A signature over `(seq, hash)` for `purpose` (hex), and the key's id.
pub fn sign(
    tx: &ReadTx,
    keys: &Keys,
    purpose: Purpose,
    seq: u64,
    hash: &[u8; 32],
) -> Result<(String, String), SigningError> {
    let key = tx.get(KEYS, KEY_ID)?.ok_or(SigningError::NoKey)?;
    let pkcs8 = Zeroizing::new(keys.decrypt(PLACE, &key.pkcs8)?);
    let private = PrivateKey::from_pkcs8(&pkcs8).map_err(|_| SigningError::BadKey)?;
    Ok((hex::encode(private.sign(&message(purpose, seq, hash))?), private.public().id()))
}

/// A public key read from PEM, to check the log's signatures with.
#[derive(Debug, Clone)]
pub struct PublicKey(p256::PublicKey);

impl PublicKey {
    pub fn from_pem(pem: &str) -> Result<PublicKey, SigningError> {
        Ok(PublicKey(p256::PublicKey::from_pem(pem)?))
    }

    pub fn id(&self) -> String {
        self.0.id()
    }

    /// Whether `signature_hex` is this key's signature over `(seq, hash)` for `purpose`.
    pub fn verifies(&self, purpose: Purpose, seq: u64, hash: &[u8; 32], signature_hex: &str) -> bool {
        hex::decode(signature_hex).is_ok_and(|sig| self.0.verifies(&message(purpose, seq, hash), &sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_base::clock::{ManualClock, Timestamp};
    use tether_store::Store;

    #[test]
    fn a_signature_verifies_with_the_exported_public_key_for_its_purpose_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let vault =
            crate::vault::unsealed_for_tests(&store, std::sync::Arc::new(ManualClock::at(Timestamp::from_millis(1))));
        let keys = vault.keys().unwrap();
        let k = keys.clone();
        assert!(store.write_blocking(move |tx| ensure_key(tx, &k)).unwrap());
        let k = keys.clone();
        assert!(!store.write_blocking(move |tx| ensure_key(tx, &k)).unwrap(), "made once");
        let hash = [7u8; 32];
        let (sig, id) = store.read(|tx| sign(tx, &keys, Purpose::Checkpoint, 41, &hash)).unwrap();
        let public = PublicKey::from_pem(&store.read(public_key_pem).unwrap()).unwrap();
        assert_eq!(public.id(), id);
        assert!(public.verifies(Purpose::Checkpoint, 41, &hash, &sig));
        assert!(!public.verifies(Purpose::ExportSeal, 41, &hash, &sig), "a checkpoint is no export seal");
        assert!(!public.verifies(Purpose::Checkpoint, 42, &hash, &sig));
        assert!(!public.verifies(Purpose::Checkpoint, 41, &[8u8; 32], &sig));
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    }
}
