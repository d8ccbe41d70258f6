//! The one library every module takes its primitives from: digests, HMAC,
//! AEAD, PBKDF2, random numbers and signatures, and the rustls and webpki
//! back ends built on the same library.
//!
//! The standard build uses ring. The `fips` build uses aws-lc-rs over the
//! AWS-LC FIPS module (a FIPS 140-3 validated module), for TLS and for
//! everything the appliance computes itself, so that in that build no
//! approved function runs outside the validated module. The two libraries
//! share one API; where they differ, a function here hides it.

#[cfg(feature = "fips")]
pub use aws_lc_rs::{aead, digest, error, hmac, pbkdf2, rand, signature};
#[cfg(not(feature = "fips"))]
pub use ring::{aead, digest, error, hmac, pbkdf2, rand, signature};

/// The rustls crypto back end on the same library.
#[cfg(feature = "fips")]
pub use rustls::crypto::aws_lc_rs as tls;
#[cfg(not(feature = "fips"))]
pub use rustls::crypto::ring as tls;

/// webpki's signature algorithms on the same library.
#[cfg(feature = "fips")]
pub use webpki::aws_lc_rs as webpki_algorithms;
#[cfg(not(feature = "fips"))]
pub use webpki::ring as webpki_algorithms;

/// The cryptographic library this build uses, as the status reports it.
#[cfg(feature = "fips")]
pub const MODULE: &str = "aws-lc-rs over the AWS-LC FIPS module";
#[cfg(not(feature = "fips"))]
pub const MODULE: &str = "ring";

/// An ECDSA key pair from its PKCS#8 document.
#[cfg(feature = "fips")]
pub fn ecdsa_key_pair(
    alg: &'static signature::EcdsaSigningAlgorithm,
    pkcs8: &[u8],
) -> Result<signature::EcdsaKeyPair, error::KeyRejected> {
    signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8)
}

/// An ECDSA key pair from its PKCS#8 document.
#[cfg(not(feature = "fips"))]
pub fn ecdsa_key_pair(
    alg: &'static signature::EcdsaSigningAlgorithm,
    pkcs8: &[u8],
) -> Result<signature::EcdsaKeyPair, error::KeyRejected> {
    signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rand::SystemRandom::new())
}
