//! The CA's private key at rest: sealed in the store under the vault's data
//! keys, opened only for the moment a certificate is signed. While the
//! appliance is sealed nothing can be signed, and no copy of the key is in
//! memory.

use super::{Ca, CertError};
use crate::store::{self, Collection, ReadTx, Store, WriteTx};
use crate::vault::{self, Keys, Place, Sealed, Vault};

const CA_KEY: Collection<Sealed> = Collection::new("pki_ca");
const KEY_ID: &[u8] = b"ca_key";
const PLACE: Place<'static> = Place::new("pki_ca", KEY_ID, "key_pem");

/// Seals the CA key (PEM) into the store.
pub fn store_ca_key(tx: &mut WriteTx<'_>, keys: &Keys, key_pem: &str) -> Result<(), vault::Error> {
    let sealed = keys.encrypt(PLACE, key_pem.as_bytes())?;
    tx.put(CA_KEY, KEY_ID, &sealed)?;
    Ok(())
}

/// Seals the CA key again under the current data key if an older one
/// sealed it; says whether it moved.
pub fn refresh_ca_key(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<bool, vault::Error> {
    let Some(sealed) = tx.get(CA_KEY, KEY_ID)? else {
        return Ok(false);
    };
    match keys.refresh(PLACE, &sealed)? {
        Some(fresh) => {
            tx.put(CA_KEY, KEY_ID, &fresh)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Whether the store holds the sealed CA key (a data directory from before
/// the vault keeps it in a file until the upgrade moves it in).
pub fn has_ca_key(tx: &ReadTx) -> Result<bool, store::Error> {
    Ok(tx.get(CA_KEY, KEY_ID)?.is_some())
}

/// The CA, ready to sign: needs the vault unsealed.
pub fn load_ca(store: &Store, vault: &Vault, cert_pem: &str) -> Result<Ca, CertError> {
    let sealed = store
        .read(|tx| tx.get(CA_KEY, KEY_ID))
        .map_err(vault::Error::from)?
        .ok_or(CertError::BadCa("the CA key is not in the store".into()))?;
    let pem = zeroize::Zeroizing::new(vault.decrypt(PLACE, &sealed)?);
    let pem = std::str::from_utf8(&pem).map_err(|_| CertError::BadCa("the CA key is not PEM".into()))?;
    Ca::load(cert_pem, pem)
}
