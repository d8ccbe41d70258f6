//! API tokens: issued once, stored hashed, looked up by hash.

use serde::{Deserialize, Serialize};

use super::{AuthError, Role};
use crate::audit::{self, Event, Origin, Resource};
use crate::clock::Timestamp;
use crate::secret;
use crate::store::{self, Collection, ReadTx, WriteTx};

/// Every token starts with this, so a leaked one is easy to spot in a scan.
const PREFIX: &str = "tether_";

/// Keyed by SHA-256 of the whole secret.
const TOKENS: Collection<TokenRecord> = Collection::new("tokens");

/// What the store keeps about a token. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id: the first 8 bytes of the hash, in hex. Safe to log.
    pub id: String,
    /// Whom the token acts for; tasks it creates belong to this name.
    pub principal: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub created_by: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

/// Creates a token inside the caller's transaction, audits it, and returns
/// the record and the secret (which exists nowhere else from now on).
pub fn issue_token(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    principal: &str,
    role: Role,
    expires_at: Option<Timestamp>,
) -> Result<(TokenRecord, String), store::Error> {
    let secret = secret::random_token(PREFIX).map_err(|e| store::Error::Storage(e.to_string()))?;
    let key = secret::sha256(secret.as_bytes());
    let record = TokenRecord {
        id: hex::encode(&key[..8]),
        principal: principal.into(),
        role,
        created_at: now,
        expires_at,
        created_by: origin.actor.id.clone(),
    };
    tx.put(TOKENS, &key, &record)?;
    let event = Event::new("token.created", "create", Resource::new("token", &record.id))
        .detail("role", role)
        .detail("principal", principal);
    audit::append(tx, now, origin, event)?;
    Ok((record, secret))
}

/// Finds the token behind a presented secret.
pub fn authenticate(
    tx: &ReadTx,
    presented: &str,
    now: Timestamp,
) -> Result<Result<Principal, AuthError>, store::Error> {
    if !secret::is_token_shaped(presented, PREFIX) {
        return Ok(Err(AuthError::Malformed));
    }
    let Some(record) = tx.get(TOKENS, &secret::sha256(presented.as_bytes()))? else {
        return Ok(Err(AuthError::Unknown));
    };
    if record.expires_at.is_some_and(|t| t <= now) {
        return Ok(Err(AuthError::Expired));
    }
    Ok(Ok(Principal { token_id: record.id, name: record.principal, role: record.role }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_token_authenticates_until_it_expires_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let t0 = Timestamp::from_millis(1_000);
        let (record, secret) = store
            .write_blocking(move |tx| {
                issue_token(tx, t0, &Origin::system(), "alice", Role::Developer, Some(Timestamp::from_millis(5_000)))
            })
            .unwrap();
        let who = store.read(|tx| authenticate(tx, &secret, t0)).unwrap().unwrap();
        assert_eq!((who.name.as_str(), who.role, who.token_id), ("alice", Role::Developer, record.id));
        assert_eq!(
            store.read(|tx| authenticate(tx, &secret, Timestamp::from_millis(5_000))).unwrap(),
            Err(AuthError::Expired)
        );
        let mut other = secret.clone();
        other.replace_range(
            PREFIX.len()..PREFIX.len() + 1,
            if secret.as_bytes()[PREFIX.len()] == b'a' { "b" } else { "a" },
        );
        assert_eq!(store.read(|tx| authenticate(tx, &other, t0)).unwrap(), Err(AuthError::Unknown));
        assert_eq!(store.read(|tx| authenticate(tx, "Bearer nonsense", t0)).unwrap(), Err(AuthError::Malformed));
        drop(store);
        let raw = std::fs::read(dir.path().join(crate::store::DB_FILE)).unwrap();
        let needle = secret.as_bytes();
        assert!(!raw.windows(needle.len()).any(|w| w == needle), "the secret must not be stored");
    }
}
