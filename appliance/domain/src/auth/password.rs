//! People's passwords: the length rule, and the slow hash they are kept as.
//!
//! The hash is the vault's passphrase stretching ([`Kdf`]): Argon2id in
//! standard mode, PBKDF2-HMAC-SHA256 under the FIPS policy, with the
//! parameters recorded beside the output so a later build still checks it.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::vault::unseal::Kdf;
use tether_base::crypto::{CryptoPolicy, PassphraseKdf};
use tether_base::secret::digests_equal;

/// Shortest password accepted.
pub const MIN_CHARS: usize = 12;
/// Longest password accepted: long enough for any passphrase, short enough
/// that a megabyte body cannot make the hash work hard.
pub const MAX_CHARS: usize = 128;

/// A password as stored: how it was stretched, and the result.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    kdf: Kdf,
    output: [u8; 32],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// Why a password was not accepted or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password needs at least {MIN_CHARS} characters")]
    TooShort,
    #[error("a password may have at most {MAX_CHARS} characters")]
    TooLong,
    #[error("a password must not be the account name")]
    IsTheName,
    #[error("the password was stored with {0}, which the crypto policy no longer allows; an admin must reset it")]
    KdfNotAllowed(&'static str),
    #[error("the new password must differ from the current one")]
    Reused,
    #[error("the password hash could not be computed")]
    Failed,
}

/// The rules a new password must meet.
pub fn check_strength(user: &str, password: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    if chars > MAX_CHARS {
        return Err(PasswordError::TooLong);
    }
    if password.eq_ignore_ascii_case(user) {
        return Err(PasswordError::IsTheName);
    }
    Ok(())
}

impl PasswordHash {
    /// Hashes a new password with the policy's KDF and a fresh salt. Slow
    /// on purpose; run it off the async runtime.
    pub fn new(policy: CryptoPolicy, user: &str, password: &str) -> Result<PasswordHash, PasswordError> {
        check_strength(user, password)?;
        let kdf = Kdf::new(policy).map_err(|_| PasswordError::Failed)?;
        let output = stretch(&kdf, password)?;
        Ok(PasswordHash { kdf, output: *output })
    }

    /// Whether `password` is the one stored. Refused outright if the policy
    /// no longer allows the stored KDF (Argon2id after a switch to FIPS).
    pub fn verify(&self, policy: CryptoPolicy, password: &str) -> Result<bool, PasswordError> {
        let (kind, name, iterations) = match &self.kdf {
            Kdf::Argon2id { .. } => (PassphraseKdf::Argon2id, "Argon2id", 0),
            Kdf::Pbkdf2Sha256 { iterations, .. } => (PassphraseKdf::Pbkdf2Sha256, "PBKDF2", *iterations),
        };
        policy.check_passphrase_kdf("a password", kind, iterations).map_err(|_| PasswordError::KdfNotAllowed(name))?;
        if password.chars().count() > MAX_CHARS {
            return Ok(false);
        }
        Ok(digests_equal(&stretch(&self.kdf, password)?[..], &self.output))
    }
}

/// A password to hand over once (a first admin's, a reset's): 20 hex
/// digits (80 bits), to be changed at the first login.
pub fn generate() -> Result<Zeroizing<String>, tether_base::secret::RandomFailed> {
    let token = Zeroizing::new(tether_base::secret::random_token("")?);
    Ok(Zeroizing::new(token[..20].to_owned()))
}

fn stretch(kdf: &Kdf, password: &str) -> Result<Zeroizing<[u8; 32]>, PasswordError> {
    let key = kdf.derive(password).map_err(|_| PasswordError::Failed)?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(key.expose());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_itself_and_only_under_a_policy_allowing_its_kdf() {
        let hash = PasswordHash::new(CryptoPolicy::STANDARD, "alice", "correct horse battery").unwrap();
        assert_eq!(hash.verify(CryptoPolicy::STANDARD, "correct horse battery"), Ok(true));
        assert_eq!(hash.verify(CryptoPolicy::STANDARD, "correct horse batterx"), Ok(false));
        assert_eq!(
            hash.verify(CryptoPolicy::FIPS, "correct horse battery"),
            Err(PasswordError::KdfNotAllowed("Argon2id"))
        );
        assert!(!format!("{hash:?}").contains("horse"));
    }

    #[test]
    fn the_length_rules_hold() {
        assert_eq!(check_strength("bob", "short"), Err(PasswordError::TooShort));
        assert_eq!(check_strength("bob", &"x".repeat(MAX_CHARS + 1)), Err(PasswordError::TooLong));
        assert_eq!(check_strength("administrator", "Administrator"), Err(PasswordError::IsTheName));
        assert_eq!(check_strength("bob", &"é".repeat(MIN_CHARS)), Ok(()));
        assert_eq!(check_strength("bob", &"x".repeat(64)), Ok(()));
    }
}
