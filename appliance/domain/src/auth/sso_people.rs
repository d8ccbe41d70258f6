//! The people single sign-on has let in, as the store keeps them: their
//! account name here (`sso:` and the provider's name), the provider's
//! subject it is bound to, their role as of the last sign-in, whether the
//! provider vouched for a second factor then, and the appliance's own TOTP
//! if they enrolled one (asked for when the provider vouches for none).

use serde::{Deserialize, Serialize};

use super::Role;
use super::factors::Factors;
use super::users::UserInfo;
use crate::vault::{self, Keys};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by their name here.
const SSO_PEOPLE: Collection<SsoPerson> = Collection::new("sso_people");
/// Their TOTP here, by name (apart from `SsoPerson`, whose stored shape is fixed).
const FACTORS: Collection<Factors> = Collection::new(FACTORS_HOME);
/// The collection single sign-on people's second factors are sealed in.
pub const FACTORS_HOME: &str = "sso_second_factors";
/// When the provider last vouched for a person's second factor (`amr` or
/// `acr`), by name; absent when their last sign-in carried none.
const ASSURED: Collection<Timestamp> = Collection::new("sso_mfa_assured");
/// What names the accounts of people who sign in through the provider.
pub const NAME_PREFIX: &str = "sso:";

/// A person who signs in through the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SsoPerson {
    pub name: String,
    pub issuer: String,
    pub subject: String,
    /// As of the last sign-in.
    pub role: Role,
    pub first_login: Timestamp,
    pub last_login: Timestamp,
}

impl From<&SsoPerson> for UserInfo {
    fn from(p: &SsoPerson) -> UserInfo {
        UserInfo {
            name: p.name.clone(),
            role: p.role,
            disabled: false,
            second_factor: false,
            must_change_password: false,
            created_at: p.first_login,
            created_by: "sso".into(),
            pending_role: None,
        }
    }
}

/// The person behind a session's account name, if it is a single sign-on one.
pub fn person(mut tx: impl store::Reads, name: &str) -> Result<Option<SsoPerson>, store::Error> {
    if !name.starts_with(NAME_PREFIX) {
        return Ok(None);
    }
    tx.get(SSO_PEOPLE, name.as_bytes())
}

/// Everyone who has signed in through the provider.
pub fn people(tx: &ReadTx) -> Result<Vec<SsoPerson>, store::Error> {
    tx.values(SSO_PEOPLE)
}

/// Records a person at sign-in.
pub fn put(tx: &mut WriteTx<'_>, person: &SsoPerson) -> Result<(), store::Error> {
    tx.put(SSO_PEOPLE, person.name.as_bytes(), person)
}

/// `name`'s second factor here; `None` if no such person signed in.
pub fn factors(mut tx: impl store::Reads, name: &str) -> Result<Option<Factors>, store::Error> {
    if person(&mut tx, name)?.is_none() {
        return Ok(None);
    }
    Ok(Some(tx.get(FACTORS, name.as_bytes())?.unwrap_or_default()))
}

pub fn put_factors(tx: &mut WriteTx<'_>, name: &str, factors: &Factors) -> Result<(), store::Error> {
    tx.put(FACTORS, name.as_bytes(), factors)
}

/// Records whether the provider vouched for `name`'s second factor at this sign-in.
pub fn set_provider_assurance(tx: &mut WriteTx<'_>, name: &str, at: Option<Timestamp>) -> Result<(), store::Error> {
    match at {
        Some(at) => tx.put(ASSURED, name.as_bytes(), &at),
        None => tx.delete(ASSURED, name.as_bytes()).map(|_| ()),
    }
}

/// Whether `name`'s last sign-in had a second factor: the provider vouched
/// for one, or they hold the appliance's own TOTP (which it then asked for).
pub fn has_second_factor(mut tx: impl store::Reads, name: &str) -> Result<bool, store::Error> {
    Ok(tx.get(ASSURED, name.as_bytes())?.is_some()
        || tx.get(FACTORS, name.as_bytes())?.is_some_and(|f| f.totp.is_some()))
}

/// Seals people's TOTP secrets here again under the current data key where
/// an older one sealed them; says how many moved.
pub fn refresh_factor_seals(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<usize, vault::Error> {
    let mut all = Vec::new();
    tx.scan(FACTORS, None, Order::Ascending, |key, factors: Factors| {
        all.push((String::from_utf8_lossy(key).into_owned(), factors));
        Ok(true)
    })?;
    let mut moved = 0;
    for (name, mut factors) in all {
        let n = factors.refresh_seals(FACTORS_HOME, &name, keys)?;
        if n > 0 {
            moved += n;
            put_factors(tx, &name, &factors)?;
        }
    }
    Ok(moved)
}
