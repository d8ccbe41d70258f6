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
