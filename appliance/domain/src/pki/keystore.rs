//! The CA's private keys at rest: sealed in the store under the vault's data
//! keys, opened only for the moment a certificate is signed. While the
//! appliance is sealed nothing can be signed, and no copy of a key is in
//! memory. There are two slots: the CA's, and during a rotation the new
//! CA's (see `rotation.rs`).

use super::{Ca, CertError};
use crate::vault::{self, Keys, Place, Sealed, Vault};
use tether_store::{self as store, Collection, ReadTx, Store, WriteTx};

const CA_KEY: Collection<Sealed> = Collection::new("pki_ca");

/// Which CA key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSlot {
    /// The CA's (the only one outside a rotation).
    Current,
    /// The new CA's, from `rotation add` until it is retired or rolled back.
    Next,
}

impl CaSlot {
    const ALL: [CaSlot; 2] = [CaSlot::Current, CaSlot::Next];

    fn key_id(self) -> &'static [u8] {
        match self {
            CaSlot::Current => b"ca_key",
            CaSlot::Next => b"ca_key_next",
        }
    }

    /// Where the sealed key lives; binds its ciphertext to the slot.
    fn place(self) -> Place<'static> {
        Place::new("pki_ca", self.key_id(), "key_pem")
    }
}

/// Seals a CA key (PEM) into `slot`.
pub fn store_ca_key(tx: &mut WriteTx<'_>, keys: &Keys, slot: CaSlot, key_pem: &str) -> Result<(), vault::Error> {
    let sealed = keys.encrypt(slot.place(), key_pem.as_bytes())?;
    tx.put(CA_KEY, slot.key_id(), &sealed)?;
    Ok(())
}

/// Moves the key in `Next` into `Current` (sealed again for its new place).
pub(super) fn promote_next_key(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<(), vault::Error> {
    let sealed = tx.get(CA_KEY, CaSlot::Next.key_id())?.ok_or(vault::Error::Corrupt("the new CA's key is missing"))?;
    let pem = zeroize::Zeroizing::new(keys.decrypt(CaSlot::Next.place(), &sealed)?);
    tx.put(CA_KEY, CaSlot::Current.key_id(), &keys.encrypt(CaSlot::Current.place(), &pem)?)?;
    tx.delete(CA_KEY, CaSlot::Next.key_id())?;
    Ok(())
}

/// Drops the key in `Next` (a rotation rolled back).
pub(super) fn drop_next_key(tx: &mut WriteTx<'_>) -> Result<(), store::Error> {
    tx.delete(CA_KEY, CaSlot::Next.key_id()).map(|_| ())
}

/// Seals the CA keys again under the current data key if an older one
/// sealed them; says how many moved.
pub fn refresh_ca_key(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<usize, vault::Error> {
    let mut moved = 0;
    for slot in CaSlot::ALL {
        let Some(sealed) = tx.get(CA_KEY, slot.key_id())? else { continue };
        if let Some(fresh) = keys.refresh(slot.place(), &sealed)? {
            tx.put(CA_KEY, slot.key_id(), &fresh)?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// Whether the store holds the sealed CA key (a data directory from before
/// the vault keeps it in a file until the upgrade moves it in).
pub fn has_ca_key(tx: &ReadTx) -> Result<bool, store::Error> {
    Ok(tx.get(CA_KEY, CaSlot::Current.key_id())?.is_some())
}

/// The CA in `slot`, whose certificate is `cert_pem`, ready to sign: needs
/// the vault unsealed.
pub fn load_ca(store: &Store, vault: &Vault, slot: CaSlot, cert_pem: &str) -> Result<Ca, CertError> {
    let sealed = store
        .read(|tx| tx.get(CA_KEY, slot.key_id()))
        .map_err(vault::Error::from)?
        .ok_or(CertError::BadCa("the CA key is not in the store".into()))?;
    let pem = zeroize::Zeroizing::new(vault.decrypt(slot.place(), &sealed)?);
    let pem = std::str::from_utf8(&pem).map_err(|_| CertError::BadCa("the CA key is not PEM".into()))?;
    Ca::load(cert_pem, pem)
}
