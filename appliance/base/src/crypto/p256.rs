//! ECDSA P-256 keys that sign things other than TLS handshakes: the audit
//! log's checkpoints, the site's model bundles and the release bundles. Public keys travel as
//! PEM SubjectPublicKeyInfo, private keys as PEM PKCS#8; signatures are
//! ASN.1 DER over SHA-256 of the message.

use zeroize::Zeroizing;

use super::primitives::digest::{SHA256, digest};
use super::primitives::ecdsa_key_pair;
use super::primitives::rand::SystemRandom;
use super::primitives::signature::{
    self, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
};

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte point follows.
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a P-256 public key in PEM (-----BEGIN PUBLIC KEY-----)")]
    BadPublicKey,
    #[error("not a P-256 private key in PEM (-----BEGIN PRIVATE KEY-----, PKCS#8)")]
    BadPrivateKey,
    #[error("the system's random source failed")]
    Random,
}

/// A public key, to check signatures with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point.
    point: Vec<u8>,
}

impl PublicKey {
    pub fn from_point(point: &[u8]) -> Result<PublicKey, KeyError> {
        if point.len() != 65 || point[0] != 0x04 {
            return Err(KeyError::BadPublicKey);
        }
        Ok(PublicKey { point: point.to_vec() })
    }

    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let der = crate::pem::decode(pem, "PUBLIC KEY").ok_or(KeyError::BadPublicKey)?;
        PublicKey::from_point(der.strip_prefix(&SPKI_PREFIX[..]).ok_or(KeyError::BadPublicKey)?)
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        crate::pem::encode("PUBLIC KEY", &der)
    }

    pub fn point(&self) -> &[u8] {
        &self.point
    }

    /// A short public id: the first 8 bytes of SHA-256 of the point, in hex.
    pub fn id(&self) -> String {
        hex::encode(&digest(&SHA256, &self.point).as_ref()[..8])
    }

    /// `sha256:` and the hex SHA-256 of the SubjectPublicKeyInfo (DER), as
    /// `openssl pkey -pubin -outform der | sha256sum` shows it.
    pub fn fingerprint(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        format!("sha256:{}", hex::encode(digest(&SHA256, &der).as_ref()))
    }

    /// Whether `signature` (DER) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point).verify(message, signature).is_ok()
    }
}

/// A private key, to sign with.
#[derive(Debug)]
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
}

impl PrivateKey {
    pub fn generate() -> Result<PrivateKey, KeyError> {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::Random)?;
        PrivateKey::from_pkcs8(document.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<PrivateKey, KeyError> {
        let pair = ecdsa_key_pair(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).map_err(|_| KeyError::BadPrivateKey)?;
        Ok(PrivateKey { pkcs8: Zeroizing::new(pkcs8.to_vec()), pair })
    }

    pub fn from_pem(pem: &str) -> Result<PrivateKey, KeyError> {
        let der = Zeroizing::new(crate::pem::decode(pem, "PRIVATE KEY").ok_or(KeyError::BadPrivateKey)?);
        PrivateKey::from_pkcs8(&der)
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pem::encode("PRIVATE KEY", &self.pkcs8))
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { point: self.pair.public_key().as_ref().to_vec() }
    }

    /// A DER signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.pair.sign(&SystemRandom::new(), message).map_err(|_| KeyError::Random)?.as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_pem_and_a_signature_holds_for_its_message_and_key_only() {
        let key = PrivateKey::from_pem(&PrivateKey::generate().unwrap().to_pem()).unwrap();
        let public = PublicKey::from_pem(&key.public().to_pem()).unwrap();
        assert_eq!(public, key.public());
        let signature = key.sign(b"message").unwrap();
        assert!(public.verifies(b"message", &signature));
        assert!(!public.verifies(b"messagE", &signature));
        assert!(!PrivateKey::generate().unwrap().public().verifies(b"message", &signature));
        assert!(PublicKey::from_pem(&key.to_pem()).is_err(), "a private key is not read as a public one");
        assert!(PrivateKey::from_pem(&public.to_pem()).is_err());
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    }
}
