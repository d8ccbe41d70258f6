//! The crypto policy: the one place that decides which algorithms the
//! appliance may use — TLS versions, suites, key-exchange groups and
//! signature schemes, the key types it accepts in certificates, and the key
//! derivation for the vault's passphrase.
//!
//! Two modes. `standard` is what a careful site wants by default; `fips`
//! narrows it to the algorithms FIPS 140-3 approves. Both refuse
//! ChaCha20-Poly1305 and anything below TLS 1.2, so the only difference a
//! peer sees is that FIPS mode also refuses X25519 and Ed25519. Modules ask the
//! policy; none chooses an algorithm itself.

pub mod p256;
pub mod primitives;
pub mod self_test;

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{SignatureScheme, SupportedProtocolVersion};

/// Which set of algorithms is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Standard,
    Fips,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Fips => "fips",
        }
    }
}

/// A public key's algorithm, as the policy judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    /// Anything else (RSA, other curves): never accepted for a worker.
    Other,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ECDSA P-256",
            KeyKind::EcdsaP384 => "ECDSA P-384",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Other => "an unsupported key type",
        }
    }
}

/// A key or parameter the policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} uses {algorithm}, which {mode} mode does not allow")]
pub struct NotApproved {
    pub what: String,
    pub algorithm: String,
    pub mode: &'static str,
}

/// How the vault derives a key from a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassphraseKdf {
    Argon2id,
    /// PBKDF2-HMAC-SHA256 with at least [`PBKDF2_MIN_ITERATIONS`].
    Pbkdf2Sha256,
}

/// The fewest PBKDF2-HMAC-SHA256 iterations FIPS mode accepts (OWASP's
/// figure for SHA-256, and what NIST SP 800-132 leaves to the site).
pub const PBKDF2_MIN_ITERATIONS: u32 = 600_000;

const TLS_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CryptoPolicy {
    pub mode: Mode,
}

impl CryptoPolicy {
    pub const STANDARD: CryptoPolicy = CryptoPolicy { mode: Mode::Standard };
    pub const FIPS: CryptoPolicy = CryptoPolicy { mode: Mode::Fips };

    pub fn is_fips(self) -> bool {
        self.mode == Mode::Fips
    }

    /// TLS 1.3, and TLS 1.2 for older clients (its suites are limited to
    /// ECDHE-ECDSA with AES-GCM below).
    pub fn tls_versions(self) -> &'static [&'static SupportedProtocolVersion] {
        TLS_VERSIONS
    }

    /// The rustls provider holding exactly the suites, groups and signature
    /// schemes this policy allows.
    pub fn tls_provider(self) -> Arc<CryptoProvider> {
        use primitives::tls::{cipher_suite as cs, kx_group};
        let base = primitives::tls::default_provider();
        let kx_groups = match self.mode {
            Mode::Standard => vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
            Mode::Fips => vec![kx_group::SECP256R1, kx_group::SECP384R1],
        };
        Arc::new(CryptoProvider {
            cipher_suites: vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            kx_groups,
            signature_verification_algorithms: self.signature_algorithms(),
            ..base
        })
    }

    /// The signatures a peer's certificate and handshake may use. FIPS mode
    /// drops Ed25519.
    fn signature_algorithms(self) -> WebPkiSupportedAlgorithms {
        match self.mode {
            Mode::Standard => primitives::tls::default_provider().signature_verification_algorithms,
            Mode::Fips => FIPS_SIGNATURES,
        }
    }

    /// May a worker hold a key of this kind?
    pub fn check_worker_key(self, kind: KeyKind) -> Result<(), NotApproved> {
        let allowed = match kind {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => true,
            KeyKind::Ed25519 => self.mode == Mode::Standard,
            KeyKind::Other => false,
        };
        if allowed { Ok(()) } else { Err(self.refuses("a worker key", kind.as_str())) }
    }

    /// May the appliance itself (its CA, its server certificates) hold a key
    /// of this kind? Only ECDSA, in either mode.
    pub fn check_own_key(self, what: &str, kind: KeyKind) -> Result<(), NotApproved> {
        match kind {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => Ok(()),
            KeyKind::Ed25519 | KeyKind::Other => Err(self.refuses(what, kind.as_str())),
        }
    }

    /// The KDF a new passphrase is wrapped with.
    pub fn passphrase_kdf(self) -> PassphraseKdf {
        match self.mode {
            Mode::Standard => PassphraseKdf::Argon2id,
            Mode::Fips => PassphraseKdf::Pbkdf2Sha256,
        }
    }

    /// May a stored passphrase wrap made with `kdf` (and `iterations`, for
    /// PBKDF2) be used?
    pub fn check_passphrase_kdf(self, what: &str, kdf: PassphraseKdf, iterations: u32) -> Result<(), NotApproved> {
        match (self.mode, kdf) {
            (Mode::Standard, _) => Ok(()),
            (Mode::Fips, PassphraseKdf::Pbkdf2Sha256) if iterations >= PBKDF2_MIN_ITERATIONS => Ok(()),
            (Mode::Fips, PassphraseKdf::Pbkdf2Sha256) => {
                Err(self.refuses(what, &format!("PBKDF2-HMAC-SHA256 with {iterations} iterations")))
            }
            (Mode::Fips, PassphraseKdf::Argon2id) => Err(self.refuses(what, "Argon2id")),
        }
    }

    fn refuses(self, what: &str, algorithm: &str) -> NotApproved {
        NotApproved { what: what.into(), algorithm: algorithm.into(), mode: self.mode.as_str() }
    }

    /// What this policy allows, named as a security officer reads them.
    pub fn describe(self) -> PolicySummary {
        let provider = self.tls_provider();
        PolicySummary {
            mode: self.mode,
            tls_versions: self.tls_versions().iter().map(|v| format!("{:?}", v.version)).collect(),
            tls_suites: provider.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect(),
            tls_groups: provider.kx_groups.iter().map(|g| format!("{:?}", g.name())).collect(),
            worker_keys: [KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::Ed25519]
                .into_iter()
                .filter(|k| self.check_worker_key(*k).is_ok())
                .map(KeyKind::as_str)
                .collect(),
            passphrase_kdf: match self.passphrase_kdf() {
                PassphraseKdf::Argon2id => "Argon2id".into(),
                PassphraseKdf::Pbkdf2Sha256 => format!("PBKDF2-HMAC-SHA256, {PBKDF2_MIN_ITERATIONS} iterations"),
            },
        }
    }
}

pub use primitives::MODULE;

/// What a running appliance reports about its cryptography
/// (`GET /api/v1/system/crypto`, `tether status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CryptoStatus {
    pub mode: Mode,
    pub module: &'static str,
    pub validated_module: bool,
    /// The self-tests that passed at start (FIPS mode runs them all; a
    /// standard-mode start runs none).
    pub self_tests_passed: Vec<&'static str>,
    pub policy: PolicySummary,
}

impl CryptoStatus {
    pub fn policy(&self) -> CryptoPolicy {
        CryptoPolicy { mode: self.mode }
    }
}

impl CryptoPolicy {
    /// What a start under this policy must do first: in FIPS mode, the
    /// self-tests. Returns the status to report.
    pub fn start(self) -> Result<CryptoStatus, self_test::SelfTestFailed> {
        let self_tests_passed = if self.is_fips() {
            self_test::run()?;
            self_test::TESTS.to_vec()
        } else {
            Vec::new()
        };
        Ok(CryptoStatus {
            mode: self.mode,
            module: MODULE,
            // True only in the `fips` build, and only in FIPS mode: the
            // provider then holds nothing but the module's approved algorithms.
            validated_module: self.tls_provider().fips(),
            self_tests_passed,
            policy: self.describe(),
        })
    }
}

/// [`CryptoPolicy::describe`]'s answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicySummary {
    pub mode: Mode,
    pub tls_versions: Vec<String>,
    pub tls_suites: Vec<String>,
    pub tls_groups: Vec<String>,
    pub worker_keys: Vec<&'static str>,
    pub passphrase_kdf: String,
}

/// ECDSA on P-256/P-384 and RSA (PKCS#1 v1.5 and PSS), all with SHA-2:
/// what FIPS 186-5 approves among what webpki verifies. RSA stays so that an
/// operator-supplied console certificate from the site's own CA still works.
const FIPS_SIGNATURES: WebPkiSupportedAlgorithms = {
    use primitives::webpki_algorithms as alg;
    WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
        ],
        mapping: &[
            (SignatureScheme::ECDSA_NISTP384_SHA384, &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384]),
            (SignatureScheme::ECDSA_NISTP256_SHA256, &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256]),
            (SignatureScheme::RSA_PSS_SHA512, &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
            (SignatureScheme::RSA_PSS_SHA384, &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
            (SignatureScheme::RSA_PSS_SHA256, &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
            (SignatureScheme::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
            (SignatureScheme::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
            (SignatureScheme::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modes_refuse_chacha20_and_only_standard_allows_x25519() {
        for policy in [CryptoPolicy::STANDARD, CryptoPolicy::FIPS] {
            let s = policy.describe();
            assert!(s.tls_suites.iter().all(|n| n.contains("AES") && n.contains("GCM")), "{:?}", s.tls_suites);
            assert_eq!(s.tls_versions, ["TLSv1_3", "TLSv1_2"]);
        }
        assert!(CryptoPolicy::STANDARD.describe().tls_groups.contains(&"X25519".to_string()));
        assert_eq!(CryptoPolicy::FIPS.describe().tls_groups, ["secp256r1", "secp384r1"]);
    }

    /// The `fips` build: FIPS mode runs on the validated module, and says so.
    #[cfg(feature = "fips")]
    #[test]
    fn the_fips_build_runs_fips_mode_on_the_validated_module() {
        assert!(CryptoPolicy::FIPS.tls_provider().fips(), "every suite, group and signature from the FIPS module");
        let status = CryptoPolicy::FIPS.start().expect("the self-tests pass on the FIPS module");
        assert!(status.validated_module && status.module.contains("AWS-LC FIPS"), "{status:?}");
        assert!(!CryptoPolicy::STANDARD.tls_provider().fips(), "standard mode offers X25519, not approved");
    }

    /// The standard build claims no validated module, in either mode.
    #[cfg(not(feature = "fips"))]
    #[test]
    fn the_standard_build_claims_no_validated_module() {
        let status = CryptoPolicy::FIPS.start().unwrap();
        assert!(!status.validated_module && status.module.starts_with("ring"), "{status:?}");
    }

    #[test]
    fn fips_mode_verifies_no_ed25519_signature() {
        let schemes = CryptoPolicy::FIPS.tls_provider().signature_verification_algorithms.supported_schemes();
        assert!(!schemes.contains(&SignatureScheme::ED25519));
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
        let standard = CryptoPolicy::STANDARD.tls_provider().signature_verification_algorithms.supported_schemes();
        assert!(standard.contains(&SignatureScheme::ED25519));
    }

    #[test]
    fn worker_keys_by_mode() {
        use KeyKind::*;
        for (kind, standard, fips) in
            [(EcdsaP256, true, true), (EcdsaP384, true, true), (Ed25519, true, false), (Other, false, false)]
        {
            assert_eq!(CryptoPolicy::STANDARD.check_worker_key(kind).is_ok(), standard, "{kind:?}");
            assert_eq!(CryptoPolicy::FIPS.check_worker_key(kind).is_ok(), fips, "{kind:?}");
        }
        let refused = CryptoPolicy::FIPS.check_worker_key(Ed25519).unwrap_err();
        assert_eq!(refused.to_string(), "a worker key uses Ed25519, which fips mode does not allow");
    }

    #[test]
    fn fips_mode_accepts_only_pbkdf2_with_enough_iterations() {
        let fips = CryptoPolicy::FIPS;
        assert!(fips.check_passphrase_kdf("p", PassphraseKdf::Pbkdf2Sha256, PBKDF2_MIN_ITERATIONS).is_ok());
        assert!(fips.check_passphrase_kdf("p", PassphraseKdf::Pbkdf2Sha256, 100_000).is_err());
        let argon = fips.check_passphrase_kdf("the vault passphrase", PassphraseKdf::Argon2id, 0).unwrap_err();
        assert!(argon.to_string().contains("the vault passphrase uses Argon2id"), "{argon}");
        assert!(CryptoPolicy::STANDARD.check_passphrase_kdf("p", PassphraseKdf::Argon2id, 0).is_ok());
    }
}
