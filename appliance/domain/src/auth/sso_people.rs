//! The people single sign-on has let in, as the store keeps them: their
//! account name here (`sso:` and the provider's name), the provider's
//! subject it is bound to, and their role as of the last sign-in.

use serde::{Deserialize, Serialize};

use super::Role;
use super::users::UserInfo;
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, ReadTx, WriteTx};

/// Keyed by their name here.
const SSO_PEOPLE: Collection<SsoPerson> = Collection::new("sso_people");
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
