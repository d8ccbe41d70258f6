//! One value at a time: AES-256-GCM with a fresh random 96-bit nonce, the
//! key's version in the header, and associated data naming where the value
//! lives, so a ciphertext copied to another record or field does not open.
//!
//! Layout of a [`Sealed`] value:
//! `[format = 1][key version, u32 BE][nonce, 12 bytes][ciphertext][tag, 16 bytes]`.
//!
//! ring's AEAD is used (already linked for TLS); its API is the one
//! aws-lc-rs offers too, which is what the FIPS build swaps in. The expanded
//! key schedule is built per call on the stack, so the only long-lived copy
//! of a key is its wiped, locked [`KeyBytes`].

use serde::{Deserialize, Serialize};
use tether_base::crypto::primitives::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use tether_base::crypto::primitives::rand::{SecureRandom, SystemRandom};

use super::memory::KeyBytes;

const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;
/// Domain separation for the associated data of every ciphertext we make.
const AAD_DOMAIN: &[u8] = b"tether.sealed.v1";

/// Where a ciphertext lives. It is bound there through the associated data.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub table: &'static str,
    pub record: &'a [u8],
    pub field: &'static str,
}

impl<'a> Place<'a> {
    pub const fn new(table: &'static str, record: &'a [u8], field: &'static str) -> Place<'a> {
        Place { table, record, field }
    }

    fn aad(&self, version: u32) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 32 + self.record.len());
        aad.extend_from_slice(AAD_DOMAIN);
        for part in [self.table.as_bytes(), self.record, self.field.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }
}

/// An encrypted value as it is stored. Serialises as a plain byte string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// The version of the data key that sealed this, if the header is intact.
    pub fn key_version(&self) -> Option<u32> {
        match self.0.first() {
            Some(&FORMAT_V1) if self.0.len() >= HEADER_LEN + TAG_LEN => {
                let mut v = [0u8; 4];
                v.copy_from_slice(&self.0[1..5]);
                Some(u32::from_be_bytes(v))
            }
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Sealed {
        Sealed(bytes)
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(key v{:?}, {} bytes)", self.key_version(), self.0.len())
    }
}

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// Tampered, truncated, moved to another place, or the wrong key.
    #[error("the value failed its integrity check (tampered, moved or under another key)")]
    Integrity,
    #[error("the system random source failed")]
    Random,
}

fn aead_key(key: &KeyBytes) -> Result<LessSafeKey, CipherError> {
    // Only fails for a wrong key length, which KeyBytes rules out.
    let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| CipherError::Integrity)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `plaintext` under `key` (version `version`) for `place`.
pub fn seal(key: &KeyBytes, version: u32, place: Place<'_>, plaintext: &[u8]) -> Result<Sealed, CipherError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| CipherError::Random)?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = aead_key(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(place.aad(version)),
            &mut out[HEADER_LEN..],
        )
        .map_err(|_| CipherError::Integrity)?;
    out.extend_from_slice(tag.as_ref());
    Ok(Sealed(out))
}

/// Decrypts `sealed` with `key`, checking that it was sealed for `place`.
pub fn open(key: &KeyBytes, place: Place<'_>, sealed: &Sealed) -> Result<Vec<u8>, CipherError> {
    let version = sealed.key_version().ok_or(CipherError::Integrity)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed.0[5..HEADER_LEN]);
    let mut body = sealed.0[HEADER_LEN..].to_vec();
    let plain_len = aead_key(key)?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(place.aad(version)), &mut body)
        .map_err(|_| CipherError::Integrity)?
        .len();
    body.truncate(plain_len);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Place<'static> = Place::new("tasks", b"task-1", "input");

    #[test]
    fn a_value_opens_only_where_it_was_sealed() {
        let key = KeyBytes::random().unwrap();
        let sealed = seal(&key, 3, HERE, b"canary").unwrap();
        assert_eq!(sealed.key_version(), Some(3));
        assert_eq!(open(&key, HERE, &sealed).unwrap(), b"canary");
        for elsewhere in [
            Place::new("tasks", b"task-2", "input"),
            Place::new("tasks", b"task-1", "result"),
            Place::new("secrets", b"task-1", "input"),
        ] {
            assert_eq!(open(&key, elsewhere, &sealed), Err(CipherError::Integrity), "{elsewhere:?}");
        }
        let other = KeyBytes::random().unwrap();
        assert_eq!(open(&other, HERE, &sealed), Err(CipherError::Integrity));
    }

    #[test]
    fn every_flipped_bit_is_an_integrity_error() {
        let key = KeyBytes::random().unwrap();
        let sealed = seal(&key, 1, HERE, b"some input").unwrap();
        for bit in 0..sealed.0.len() * 8 {
            let mut bytes = sealed.0.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open(&key, HERE, &Sealed(bytes)), Err(CipherError::Integrity), "bit {bit}");
        }
        for len in 0..sealed.0.len() {
            assert_eq!(open(&key, HERE, &Sealed(sealed.0[..len].to_vec())), Err(CipherError::Integrity));
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let key = KeyBytes::random().unwrap();
        let a = seal(&key, 1, HERE, b"same").unwrap();
        let b = seal(&key, 1, HERE, b"same").unwrap();
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains("same"));
    }
}
