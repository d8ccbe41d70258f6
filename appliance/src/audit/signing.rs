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

use crate::crypto::primitives::ecdsa_key_pair;
use crate::crypto::primitives::rand::SystemRandom;
use crate::crypto::primitives::signature::{
    self, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
};
use crate::store::{self, Collection, ReadTx, WriteTx};
use crate::vault::{self, Keys, Place, Sealed};

const KEYS: Collection<SigningKey> = Collection::new("audit_signing");
const KEY_ID: &[u8] = b"key";
const PLACE: Place<'static> = Place::new("audit_signing", KEY_ID, "pkcs8");

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

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
    #[error("not a P-256 public key in PEM (-----BEGIN PUBLIC KEY-----)")]
    BadPublicKey,
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
    let rng = SystemRandom::new();
    let pkcs8 = Zeroizing::new(
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| SigningError::BadKey)?
            .as_ref()
            .to_vec(),
    );
    let pair = ecdsa_key_pair(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).map_err(|_| SigningError::BadKey)?;
    let key = SigningKey { pkcs8: keys.encrypt(PLACE, &pkcs8)?, public: pair.public_key().as_ref().to_vec() };
    tx.put(KEYS, KEY_ID, &key)?;
    Ok(true)
}

/// Makes the key if there is none yet, in its own write (needs the vault
/// unsealed). The first checkpoint or export after the first unseal does it.
pub async fn ensure(store: &crate::store::Store, keys: &Keys) -> Result<(), SigningError> {
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
    Ok(spki_pem(&key.public))
}

fn spki_pem(point: &[u8]) -> String {
    use base64::Engine;
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// A short public id of the key: the first 8 bytes of SHA-256 of its point.
pub fn key_id(point: &[u8]) -> String {
    hex::encode(&crate::secret::sha256(point)[..8])
}

/// A signature over `(seq, hash)` for `purpose`, and the key's id.
pub fn sign(
    tx: &ReadTx,
    keys: &Keys,
    purpose: Purpose,
    seq: u64,
    hash: &[u8; 32],
) -> Result<(String, String), SigningError> {
    let key = tx.get(KEYS, KEY_ID)?.ok_or(SigningError::NoKey)?;
    let pkcs8 = Zeroizing::new(keys.decrypt(PLACE, &key.pkcs8)?);
    let pair = ecdsa_key_pair(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).map_err(|_| SigningError::BadKey)?;
    let sig = pair.sign(&SystemRandom::new(), &message(purpose, seq, hash)).map_err(|_| SigningError::BadKey)?;
    Ok((hex::encode(sig.as_ref()), key_id(&key.public)))
}

/// A public key read from PEM, to check signatures with.
#[derive(Debug, Clone)]
pub struct PublicKey {
    point: Vec<u8>,
}

impl PublicKey {
    pub fn from_pem(pem: &str) -> Result<PublicKey, SigningError> {
        use base64::Engine;
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der =
            base64::engine::general_purpose::STANDARD.decode(body.trim()).map_err(|_| SigningError::BadPublicKey)?;
        let point = der.strip_prefix(&P256_SPKI_PREFIX[..]).ok_or(SigningError::BadPublicKey)?;
        if point.len() != 65 {
            return Err(SigningError::BadPublicKey);
        }
        Ok(PublicKey { point: point.to_vec() })
    }

    pub fn id(&self) -> String {
        key_id(&self.point)
    }

    /// Whether `signature_hex` is this key's signature over `(seq, hash)` for `purpose`.
    pub fn verifies(&self, purpose: Purpose, seq: u64, hash: &[u8; 32], signature_hex: &str) -> bool {
        let Ok(sig) = hex::decode(signature_hex) else { return false };
        signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(&message(purpose, seq, hash), &sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, Timestamp};
    use crate::store::Store;

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
        let (sig, id) = store.read(|tx| Ok(sign(tx, &keys, Purpose::Checkpoint, 41, &hash))).unwrap().unwrap();
        let public = PublicKey::from_pem(&store.read(|tx| Ok(public_key_pem(tx))).unwrap().unwrap()).unwrap();
        assert_eq!(public.id(), id);
        assert!(public.verifies(Purpose::Checkpoint, 41, &hash, &sig));
        assert!(!public.verifies(Purpose::ExportSeal, 41, &hash, &sig), "a checkpoint is no export seal");
        assert!(!public.verifies(Purpose::Checkpoint, 42, &hash, &sig));
        assert!(!public.verifies(Purpose::Checkpoint, 41, &[8u8; 32], &sig));
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    }
}
