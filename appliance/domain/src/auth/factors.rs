//! A person's second factor as stored — the TOTP secret (sealed), the last
//! step a code was accepted for, a secret handed out but not yet confirmed,
//! the recovery codes' digests — and where it lives: inside a local
//! account's record, or, for a person who signs in through the identity
//! provider, apart in `sso_second_factors` (the appliance's own TOTP, asked
//! for when the provider does not vouch for a second factor).

use serde::{Deserialize, Serialize};

use super::sso_people::{self, NAME_PREFIX};
use super::users::{self, UserError};
use crate::vault::{self, Keys, Place, Sealed};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, WriteTx};

/// Keyed by the single sign-on person's name here.
const SSO_FACTORS: Collection<Factors> = Collection::new(SSO_FACTORS_TABLE);
const SSO_FACTORS_TABLE: &str = "sso_second_factors";
/// When the provider last vouched for a single sign-on person's second
/// factor (`amr`/`acr`); absent when their last sign-in carried none.
const SSO_ASSURED: Collection<Timestamp> = Collection::new("sso_mfa_assured");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Factors {
    /// The confirmed TOTP secret, sealed where it lives.
    pub totp: Option<Sealed>,
    /// The last time step a TOTP code was accepted for (codes work once).
    pub totp_last_step: Option<u64>,
    /// A TOTP secret handed out but not yet confirmed with a code.
    pub totp_pending: Option<Sealed>,
    /// Keyed digests of the recovery codes not yet used.
    pub recovery: Vec<[u8; 32]>,
}

fn is_sso(name: &str) -> bool {
    name.starts_with(NAME_PREFIX)
}

/// Where `name`'s `field` is sealed (the AEAD binds the value to it).
pub fn place<'a>(name: &'a str, field: &'static str) -> Place<'a> {
    let collection = if is_sso(name) { SSO_FACTORS_TABLE } else { "users" };
    Place::new(collection, name.as_bytes(), field)
}

/// `name`'s factors; `None` if there is no such person (or the account is disabled).
pub fn get(mut tx: impl store::Reads, name: &str) -> Result<Option<Factors>, store::Error> {
    if is_sso(name) {
        if sso_people::person(&mut tx, name)?.is_none() {
            return Ok(None);
        }
        return Ok(Some(tx.get(SSO_FACTORS, name.as_bytes())?.unwrap_or_default()));
    }
    Ok(users::get(tx, name)?.filter(|u| !u.disabled).map(|u| u.factors))
}

/// Stores `name`'s factors.
pub fn put(tx: &mut WriteTx<'_>, name: &str, factors: Factors) -> Result<(), UserError> {
    if is_sso(name) {
        return Ok(tx.put(SSO_FACTORS, name.as_bytes(), &factors)?);
    }
    let mut user = users::get_for_update(tx, name)?;
    user.factors = factors;
    Ok(users::put(tx, &user)?)
}

/// Records whether the provider vouched for `name`'s second factor at this sign-in.
pub fn set_provider_assurance(tx: &mut WriteTx<'_>, name: &str, at: Option<Timestamp>) -> Result<(), store::Error> {
    match at {
        Some(at) => tx.put(SSO_ASSURED, name.as_bytes(), &at),
        None => tx.delete(SSO_ASSURED, name.as_bytes()).map(|_| ()),
    }
}

/// Whether a single sign-on person's last sign-in had a second factor:
/// the provider vouched for one, or they hold the appliance's own TOTP
/// (which the appliance then asked for).
pub fn sso_has_second_factor(mut tx: impl store::Reads, name: &str) -> Result<bool, store::Error> {
    Ok(tx.get(SSO_ASSURED, name.as_bytes())?.is_some()
        || tx.get(SSO_FACTORS, name.as_bytes())?.is_some_and(|f| f.totp.is_some()))
}

/// Seals single sign-on people's TOTP secrets again under the current data
/// key where an older one sealed them; says how many moved. (Local
/// accounts' are [`users::refresh_seals`]'.)
pub fn refresh_seals(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<usize, vault::Error> {
    let mut all = Vec::new();
    tx.scan(SSO_FACTORS, None, Order::Ascending, |key, factors: Factors| {
        all.push((String::from_utf8_lossy(key).into_owned(), factors));
        Ok(true)
    })?;
    let mut moved = 0;
    for (name, mut factors) in all {
        let n = factors.refresh_seals(&name, keys)?;
        if n > 0 {
            moved += n;
            tx.put(SSO_FACTORS, name.as_bytes(), &factors)?;
        }
    }
    Ok(moved)
}

impl Factors {
    /// Seals the secrets again under the current data key where an older
    /// one sealed them; says how many moved.
    pub fn refresh_seals(&mut self, name: &str, keys: &Keys) -> Result<usize, vault::Error> {
        let mut moved = 0;
        for (field, slot) in [("totp", &mut self.totp), ("totp_pending", &mut self.totp_pending)] {
            let Some(sealed) = slot.as_ref() else { continue };
            if let Some(fresh) = keys.refresh(place(name, field), sealed)? {
                *slot = Some(fresh);
                moved += 1;
            }
        }
        Ok(moved)
    }
}
