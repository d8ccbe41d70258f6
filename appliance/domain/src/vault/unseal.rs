//! How an unseal key is made at init and found again at unseal: from a
//! passphrase (Argon2id, or PBKDF2-HMAC-SHA256 in FIPS mode), from k of n
//! officer shares, or from a key file.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::Error;
use super::memory::KeyBytes;
use super::shamir::{self, SetId, Share};
use tether_base::clock::Timestamp;
use tether_base::crypto::primitives::pbkdf2;
use tether_base::crypto::primitives::rand::{SecureRandom, SystemRandom};
use tether_base::crypto::{CryptoPolicy, NotApproved, PBKDF2_MIN_ITERATIONS, PassphraseKdf};
use tether_base::secret::RandomFailed;

/// Shortest passphrase `init` and `rekey` accept.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Most shares one set may have.
pub const MAX_SHARES: u8 = 32;
const KEY_FILE_PREFIX: &str = "tether-unseal-key-v1:";

/// How this appliance unseals. Stored (in the clear) with the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Passphrase { kdf: Kdf },
    Shares { set: SetId, threshold: u8, count: u8 },
    KeyFile,
}

impl Method {
    /// Refused if the policy does not allow how this method derives its key.
    pub fn check(&self, policy: CryptoPolicy) -> Result<(), NotApproved> {
        match self {
            Method::Passphrase { kdf } => {
                let (kind, iterations) = match kdf {
                    Kdf::Argon2id { .. } => (PassphraseKdf::Argon2id, 0),
                    Kdf::Pbkdf2Sha256 { iterations, .. } => (PassphraseKdf::Pbkdf2Sha256, *iterations),
                };
                policy.check_passphrase_kdf("the vault's unseal passphrase", kind, iterations)
            }
            Method::Shares { .. } | Method::KeyFile => Ok(()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Passphrase { .. } => "passphrase",
            Method::Shares { .. } => "shares",
            Method::KeyFile => "key_file",
        }
    }
}

/// The passphrase stretching function and its parameters, recorded with the
/// data so that a later build (or the FIPS build, with PBKDF2) still opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kdf {
    Argon2id { memory_kib: u32, iterations: u32, parallelism: u32, salt: [u8; 16] },
    Pbkdf2Sha256 { iterations: u32, salt: [u8; 16] },
}

impl Kdf {
    /// A fresh salt and the policy's KDF: Argon2id with OWASP's first
    /// recommended setting (64 MiB, 3 passes), or PBKDF2-HMAC-SHA256 with
    /// the fewest iterations FIPS mode accepts.
    pub fn new(policy: CryptoPolicy) -> Result<Kdf, RandomFailed> {
        let mut salt = [0u8; 16];
        SystemRandom::new().fill(&mut salt).map_err(|_| RandomFailed)?;
        Ok(match policy.passphrase_kdf() {
            PassphraseKdf::Argon2id => Kdf::Argon2id { memory_kib: 64 * 1024, iterations: 3, parallelism: 1, salt },
            PassphraseKdf::Pbkdf2Sha256 => Kdf::Pbkdf2Sha256 { iterations: PBKDF2_MIN_ITERATIONS, salt },
        })
    }

    /// Stretches `passphrase` into an unseal key. Slow on purpose (~0.2 s);
    /// run it off the async runtime.
    pub fn derive(&self, passphrase: &str) -> Result<KeyBytes, Error> {
        match self {
            Kdf::Argon2id { memory_kib, iterations, parallelism, salt } => {
                let params = Params::new(*memory_kib, *iterations, *parallelism, Some(32))
                    .map_err(|_| Error::Corrupt("the stored Argon2id parameters are invalid"))?;
                let mut out = Zeroizing::new([0u8; 32]);
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(passphrase.as_bytes(), salt, &mut out[..])
                    .map_err(|_| Error::Corrupt("Argon2id failed"))?;
                KeyBytes::from_slice(&out[..]).ok_or(Error::Corrupt("derived key length"))
            }
            Kdf::Pbkdf2Sha256 { iterations, salt } => {
                let rounds = std::num::NonZeroU32::new(*iterations)
                    .ok_or(Error::Corrupt("the stored PBKDF2 iteration count is zero"))?;
                let mut out = Zeroizing::new([0u8; 32]);
                pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, passphrase.as_bytes(), &mut out[..]);
                KeyBytes::from_slice(&out[..]).ok_or(Error::Corrupt("derived key length"))
            }
        }
    }
}

/// What `init` (or `rekey`) is asked to set up.
#[derive(Debug)]
pub enum Choice {
    Passphrase(Zeroizing<String>),
    Shares { threshold: u8, count: u8 },
    KeyFile,
}

/// What must be handed to people once, and is never stored.
#[derive(Debug)]
pub enum Material {
    /// The passphrase is the people's own.
    None,
    /// One text per officer.
    Shares(Vec<Zeroizing<String>>),
    /// The content of the key file to write to separate media.
    KeyFile(Zeroizing<String>),
}

/// Makes a new unseal key for `choice`, with the policy's algorithms: the
/// method to record, the key, and what to hand out.
pub fn prepare(policy: CryptoPolicy, choice: Choice) -> Result<(Method, KeyBytes, Material), Error> {
    match choice {
        Choice::Passphrase(passphrase) => {
            if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
                return Err(Error::WeakPassphrase);
            }
            let kdf = Kdf::new(policy)?;
            let key = kdf.derive(&passphrase)?;
            Ok((Method::Passphrase { kdf }, key, Material::None))
        }
        Choice::Shares { threshold, count } => {
            if threshold == 0 || threshold > count || count > MAX_SHARES {
                return Err(Error::BadShareSetup);
            }
            let key = KeyBytes::random()?;
            let mut set: SetId = [0; 4];
            SystemRandom::new().fill(&mut set).map_err(|_| RandomFailed)?;
            let texts = shamir::split(key.expose(), threshold, count)?
                .into_iter()
                .map(|(index, value)| Share { set, threshold, index, value }.encode())
                .collect();
            Ok((Method::Shares { set, threshold, count }, key, Material::Shares(texts)))
        }
        Choice::KeyFile => {
            let key = KeyBytes::random()?;
            let text =
                Zeroizing::new(format!("{KEY_FILE_PREFIX}{}\n", Zeroizing::new(hex::encode(key.expose())).as_str()));
            Ok((Method::KeyFile, key, Material::KeyFile(text)))
        }
    }
}

/// Reads the unseal key out of a key file's text.
pub fn parse_key_file(text: &str) -> Result<KeyBytes, Error> {
    let hex_part = text.trim().strip_prefix(KEY_FILE_PREFIX).ok_or(Error::NotAKeyFile)?;
    let mut bytes = hex::decode(hex_part).map_err(|_| Error::NotAKeyFile)?;
    let key = KeyBytes::from_slice(&bytes);
    bytes.zeroize();
    key.ok_or(Error::NotAKeyFile)
}

/// A ceremony not finished this long after its first share starts over:
/// the shares given are forgotten.
pub const CEREMONY_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Officer shares received so far while sealed (in memory only), and when
/// the first of them came.
#[derive(Debug, Default)]
pub struct PendingShares {
    shares: Vec<Share>,
    since: Option<Timestamp>,
}

impl PendingShares {
    pub fn received(&self) -> u8 {
        self.shares.len() as u8
    }

    pub fn clear(&mut self) {
        self.shares.clear();
        self.since = None;
    }

    /// When the shares given so far will be forgotten, if any were given.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.since.map(|s| s.plus(CEREMONY_WINDOW))
    }

    /// Forgets the shares of a ceremony that ran past its window; says whether it did.
    pub fn expire(&mut self, now: Timestamp) -> bool {
        let stale = self.expires_at().is_some_and(|at| now >= at);
        if stale {
            self.clear();
        }
        stale
    }

    /// As [`PendingShares::add`], in a ceremony that keeps time: a share
    /// after the window starts a new ceremony.
    pub fn add_at(&mut self, method: &Method, text: &str, now: Timestamp) -> Result<Option<KeyBytes>, Error> {
        self.expire(now);
        let combined = self.add(method, text)?;
        if combined.is_none() && self.since.is_none() {
            self.since = Some(now);
        }
        Ok(combined)
    }

    /// Checks `text` against the recorded share set and keeps it. Once the
    /// threshold is reached, returns the combined unseal key (and forgets
    /// the shares).
    pub fn add(&mut self, method: &Method, text: &str) -> Result<Option<KeyBytes>, Error> {
        let Method::Shares { set, threshold, .. } = method else {
            return Err(Error::WrongMethod { method: method.name() });
        };
        let share = Share::parse(text)?;
        if share.set != *set || share.threshold != *threshold {
            return Err(Error::ShareFromAnotherSet { index: share.index });
        }
        if self.shares.iter().any(|s| s.index == share.index) {
            return Err(Error::DuplicateShare { index: share.index });
        }
        self.shares.push(share);
        if self.shares.len() < usize::from(*threshold) {
            return Ok(None);
        }
        let points: Vec<(u8, &[u8])> = self.shares.iter().map(|s| (s.index, &s.value[..])).collect();
        let combined = shamir::combine(&points);
        self.clear();
        Ok(Some(KeyBytes::from_slice(&combined).ok_or(Error::SharesDoNotOpen)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_passphrase_or_a_bad_share_setup_is_refused() {
        assert!(matches!(
            prepare(CryptoPolicy::STANDARD, Choice::Passphrase(Zeroizing::new("short".into()))),
            Err(Error::WeakPassphrase)
        ));
        for (threshold, count) in [(0, 3), (4, 3), (2, 33)] {
            assert!(matches!(
                prepare(CryptoPolicy::STANDARD, Choice::Shares { threshold, count }),
                Err(Error::BadShareSetup)
            ));
        }
    }

    #[test]
    fn the_passphrase_derives_the_same_key_each_time_with_the_kdf_its_policy_chose() {
        for policy in [CryptoPolicy::STANDARD, CryptoPolicy::FIPS] {
            let passphrase = Zeroizing::new("correct horse battery".to_string());
            let (method, key, _) = prepare(policy, Choice::Passphrase(passphrase)).unwrap();
            assert!(method.check(policy).is_ok());
            let Method::Passphrase { kdf } = &method else { panic!("passphrase method") };
            assert_eq!(matches!(kdf, Kdf::Pbkdf2Sha256 { .. }), policy.is_fips(), "{kdf:?}");
            assert_eq!(kdf.derive("correct horse battery").unwrap().expose(), key.expose());
            assert_ne!(kdf.derive("correct horse batterz").unwrap().expose(), key.expose());
            if !policy.is_fips() {
                let refused = method.check(CryptoPolicy::FIPS).unwrap_err().to_string();
                assert!(refused.contains("the vault's unseal passphrase uses Argon2id"), "{refused}");
            }
        }
    }

    #[test]
    fn a_key_file_round_trips() {
        let (_, key, material) = prepare(CryptoPolicy::STANDARD, Choice::KeyFile).unwrap();
        let Material::KeyFile(text) = material else { panic!("key file material") };
        assert_eq!(parse_key_file(&text).unwrap().expose(), key.expose());
        assert!(matches!(parse_key_file("tether-unseal-key-v1:abcd"), Err(Error::NotAKeyFile)));
    }

    #[test]
    fn shares_are_checked_one_by_one_and_combine_at_the_threshold() {
        let (method, key, material) =
            prepare(CryptoPolicy::STANDARD, Choice::Shares { threshold: 2, count: 3 }).unwrap();
        let Material::Shares(texts) = material else { panic!("shares") };
        let (_, _, other) = prepare(CryptoPolicy::STANDARD, Choice::Shares { threshold: 2, count: 3 }).unwrap();
        let Material::Shares(foreign) = other else { panic!("shares") };

        let mut pending = PendingShares::default();
        assert!(matches!(pending.add(&method, &foreign[0]), Err(Error::ShareFromAnotherSet { index: 1 })));
        assert!(pending.add(&method, &texts[2]).unwrap().is_none());
        assert!(matches!(pending.add(&method, &texts[2]), Err(Error::DuplicateShare { index: 3 })));
        assert_eq!(pending.received(), 1);
        let combined = pending.add(&method, &texts[0]).unwrap().unwrap();
        assert_eq!(combined.expose(), key.expose());
        assert_eq!(pending.received(), 0);
    }
}
