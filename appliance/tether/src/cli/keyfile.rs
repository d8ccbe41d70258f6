//! Reading signing keys from files (model and release bundles).

use std::path::Path;

use anyhow::Context;

use tether_base::crypto::p256::{PrivateKey, PublicKey};

/// A private key (PKCS#8 PEM), read as a secret.
pub fn read_private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let pem = tether_base::files::read_secret(path)?;
    PrivateKey::from_pem(&pem).with_context(|| path.display().to_string())
}

/// A public key (SubjectPublicKeyInfo PEM).
pub fn read_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    PublicKey::from_pem(&pem).with_context(|| path.display().to_string())
}
