//! The second factor: time-based one-time passwords (RFC 6238, the form
//! every authenticator app reads: HMAC-SHA1, 6 digits, 30 s steps) and
//! single-use recovery codes.

use data_encoding::BASE32_NOPAD;
use zeroize::Zeroizing;

use tether_base::clock::Timestamp;
use tether_base::crypto::primitives::hmac;
use tether_base::crypto::primitives::rand::{SecureRandom, SystemRandom};
use tether_base::secret::RandomFailed;

const STEP_SECONDS: u64 = 30;
const DIGITS: u32 = 6;
/// Steps either side of now still accepted, for clocks a little apart.
const WINDOW: u64 = 1;
/// How many recovery codes a person gets at a time.
pub const RECOVERY_CODES: usize = 10;

/// A TOTP shared secret (160 bits, RFC 4226's recommended length).
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    pub fn random() -> Result<TotpSecret, RandomFailed> {
        let mut bytes = Zeroizing::new(vec![0u8; 20]);
        SystemRandom::new().fill(&mut bytes).map_err(|_| RandomFailed)?;
        Ok(TotpSecret(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> TotpSecret {
        TotpSecret(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as people type it into an app (base32).
    pub fn base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(&self.0))
    }

    /// The `otpauth://` URI an authenticator app scans.
    pub fn uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            self.base32().as_str()
        ))
    }

    /// The code for one time step.
    fn code_at_step(&self, step: u64) -> u32 {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let mac = hmac::sign(&key, &step.to_be_bytes());
        let mac = mac.as_ref();
        // RFC 4226 §5.3 dynamic truncation.
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let word = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
        word % 10u32.pow(DIGITS)
    }

    /// The step a presented code matches (now, or one step either side),
    /// if it is later than `after` (so each code works once).
    pub fn matching_step(&self, presented: &str, now: Timestamp, after: Option<u64>) -> Option<u64> {
        let presented = presented.trim();
        if presented.len() != DIGITS as usize || !presented.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let wanted: u32 = presented.parse().ok()?;
        let current = now.as_millis() / 1000 / STEP_SECONDS;
        (current.saturating_sub(WINDOW)..=current + WINDOW)
            .filter(|step| after.is_none_or(|last| *step > last))
            .find(|step| self.code_at_step(*step) == wanted)
    }
}

/// The code an authenticator shows at `now` (for the CLI's own tests and
/// for people checking their setup).
pub fn code(secret: &TotpSecret, now: Timestamp) -> String {
    format!("{:0width$}", secret.code_at_step(now.as_millis() / 1000 / STEP_SECONDS), width = DIGITS as usize)
}

/// Fresh recovery codes, `xxxx-xxxx-xxxx` in base32 (60 bits each).
pub fn recovery_codes() -> Result<Vec<Zeroizing<String>>, RandomFailed> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = Zeroizing::new([0u8; 8]);
            SystemRandom::new().fill(&mut bytes[..]).map_err(|_| RandomFailed)?;
            let text = Zeroizing::new(BASE32_NOPAD.encode(&bytes[..]).to_ascii_lowercase());
            Ok(Zeroizing::new(format!("{}-{}-{}", &text[0..4], &text[4..8], &text[8..12])))
        })
        .collect()
}

/// A recovery code as typed: case, spaces and dashes do not matter.
pub fn normalise_recovery_code(typed: &str) -> Zeroizing<String> {
    Zeroizing::new(typed.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows, last six digits.
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        for (seconds, want) in [(59u64, "287082"), (1_111_111_109, "081804"), (1_234_567_890, "005924")] {
            assert_eq!(code(&secret, Timestamp::from_millis(seconds * 1000)), want, "T={seconds}");
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_once() {
        let secret = TotpSecret::random().unwrap();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let previous = code(&secret, Timestamp::from_millis(now.as_millis() - 30_000));
        let step = secret.matching_step(&previous, now, None).expect("one step back is accepted");
        assert_eq!(secret.matching_step(&previous, now, Some(step)), None, "a used code is refused");
        let stale = code(&secret, Timestamp::from_millis(now.as_millis() - 90_000));
        assert_eq!(secret.matching_step(&stale, now, None), None);
        assert_eq!(secret.matching_step("12345", now, None), None);
        assert_eq!(secret.matching_step("abcdef", now, None), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_typed_loosely() {
        let codes = recovery_codes().unwrap();
        let set: std::collections::BTreeSet<_> = codes.iter().map(|c| c.to_string()).collect();
        assert_eq!(set.len(), RECOVERY_CODES);
        let c = &codes[0];
        assert_eq!(c.len(), 14);
        assert_eq!(normalise_recovery_code(&c.to_uppercase().replace('-', " ")).as_str(), c.replace('-', ""));
    }
}
