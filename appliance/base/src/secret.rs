//! Random bearer secrets and the hash they are stored under.
//!
//! Bearer secrets here (API tokens, enrollment tokens) are 256 random bits, so
//! a single SHA-256 is the right storage hash: there is nothing to brute-force.

use crate::crypto::primitives::digest::{SHA256, digest};
use crate::crypto::primitives::rand::{SecureRandom, SystemRandom};

const SECRET_BYTES: usize = 32;

/// The system random source failed; nothing safe can be issued.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomFailed;

/// `prefix` followed by 64 hex digits of fresh randomness.
pub fn random_token(prefix: &str) -> Result<String, RandomFailed> {
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new().fill(&mut bytes).map_err(|_| RandomFailed)?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// A new bearer secret (API token, virtual key, enrollment token, session):
/// the secret itself, shown once; the key it is stored under (its
/// SHA-256); and its public id (the key's first 8 bytes, hex), safe to log.
#[derive(Debug)]
pub struct Minted {
    pub secret: String,
    pub key: [u8; 32],
    pub id: String,
}

/// Mints a bearer secret with `prefix`.
pub fn mint(prefix: &str) -> Result<Minted, RandomFailed> {
    let secret = random_token(prefix)?;
    let key = sha256(secret.as_bytes());
    Ok(Minted { id: hex::encode(&key[..8]), secret, key })
}

/// The storage key of a presented secret, if it has the shape [`mint`]
/// gives for `prefix`.
pub fn storage_key(presented: &str, prefix: &str) -> Option<[u8; 32]> {
    is_token_shaped(presented, prefix).then(|| sha256(presented.as_bytes()))
}

/// Whether `s` has the shape [`random_token`] gives for `prefix`.
pub fn is_token_shaped(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == SECRET_BYTES * 2 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// SHA-256 over several fields, each length-prefixed so that field
/// boundaries cannot be shifted to forge a collision.
pub fn sha256_fields(fields: &[&[u8]]) -> [u8; 32] {
    let mut buf = Vec::new();
    for f in fields {
        buf.extend_from_slice(&(f.len() as u64).to_be_bytes());
        buf.extend_from_slice(f);
    }
    sha256(&buf)
}

/// Compares two digests in time that does not depend on where they differ.
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_recognisable() {
        let a = random_token("x_").unwrap();
        let b = random_token("x_").unwrap();
        assert_ne!(a, b);
        assert!(is_token_shaped(&a, "x_"));
        assert!(!is_token_shaped(&a, "y_"));
        assert!(!is_token_shaped("x_abc", "x_"));
    }

    #[test]
    fn field_boundaries_matter() {
        assert_ne!(sha256_fields(&[b"ab", b"c"]), sha256_fields(&[b"a", b"bc"]));
    }
}
