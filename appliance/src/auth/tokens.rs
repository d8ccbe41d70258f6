//! API tokens: issued once, stored hashed, looked up by hash; listed,
//! rotated and revoked by their public id.

use serde::{Deserialize, Serialize};

use super::{AuthError, Principal, Role, Via};
use crate::audit::{self, Event, Origin, Resource};
use crate::clock::Timestamp;
use crate::secret;
use crate::store::{self, Collection, Order, ReadTx, WriteTx};

/// Every token starts with this, so a leaked one is easy to spot in a scan.
const PREFIX: &str = "tether_";

/// Keyed by SHA-256 of the whole secret.
const TOKENS: Collection<ApiToken> = Collection::new("api_tokens");
/// Public id → the key in [`TOKENS`] (to revoke or rotate by id).
const TOKEN_IDS: Collection<[u8; 32]> = Collection::new("api_token_ids");
/// Public id → when the token last authenticated (to the minute).
const LAST_USED: Collection<Timestamp> = Collection::new("api_token_last_used");
/// Tokens as the broker core stored them (no owner or mandatory expiry);
/// moved into [`TOKENS`] by [`migrate_legacy`].
const LEGACY: Collection<LegacyToken> = Collection::new("tokens");

/// How often "last used" is written: a token in steady use costs one write
/// a minute, not one per request.
pub const LAST_USED_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

/// What the store keeps about a token. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id: the first 8 bytes of the hash, in hex. Safe to log.
    pub id: String,
    /// Whom the token acts for; tasks it creates belong to this name.
    pub owner: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The person or token that made it.
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LegacyToken {
    id: String,
    principal: String,
    role: Role,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    created_by: String,
}

/// A token as listed: its record and when it was last used.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub owner: String,
    pub role: Role,
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
    pub expires_at: Timestamp,
    pub created_by: String,
    #[serde(serialize_with = "crate::clock::as_rfc3339_opt")]
    pub last_used: Option<Timestamp>,
}

/// Why a token operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no such token")]
    NotFound,
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Creates a token inside the caller's transaction, audits it, and returns
/// the record and the secret (which exists nowhere else from now on).
pub fn issue_token(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    owner: &str,
    role: Role,
    expires_at: Timestamp,
) -> Result<(ApiToken, String), store::Error> {
    let (record, secret) = store_new(tx, now, origin, owner, role, expires_at)?;
    let event = Event::new("token.created", "create", Resource::new("token", &record.id))
        .detail("role", role)
        .detail("owner", owner)
        .detail("expires_at", expires_at);
    audit::append(tx, now, origin, event)?;
    Ok((record, secret))
}

fn store_new(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    owner: &str,
    role: Role,
    expires_at: Timestamp,
) -> Result<(ApiToken, String), store::Error> {
    let secret::Minted { secret, key, id } = secret::mint(PREFIX)?;
    let record =
        ApiToken { id, owner: owner.into(), role, created_at: now, expires_at, created_by: origin.actor.id.clone() };
    tx.put(TOKENS, &key, &record)?;
    tx.put(TOKEN_IDS, record.id.as_bytes(), &key)?;
    Ok((record, secret))
}

/// Finds the token behind a presented secret.
pub fn authenticate(
    tx: &ReadTx,
    presented: &str,
    now: Timestamp,
) -> Result<Result<Principal, AuthError>, store::Error> {
    let Some(key) = secret::storage_key(presented, PREFIX) else {
        return Ok(Err(AuthError::Malformed));
    };
    let Some(record) = tx.get(TOKENS, &key)? else {
        return Ok(Err(AuthError::Unknown));
    };
    if record.expires_at <= now {
        return Ok(Err(AuthError::Expired));
    }
    let last_used = tx.get(LAST_USED, record.id.as_bytes())?;
    let stale = last_used.is_none_or(|t| now.since(t) >= LAST_USED_RESOLUTION);
    Ok(Ok(Principal { name: record.owner, role: record.role, via: Via::Token { id: record.id, note_use: stale } }))
}

/// Records that a token was used at `now`.
pub fn note_used(tx: &mut WriteTx<'_>, id: &str, now: Timestamp) -> Result<(), store::Error> {
    tx.put(LAST_USED, id.as_bytes(), &now)
}

/// Tokens, newest first; only `owner`'s when given.
pub fn list(tx: &ReadTx, owner: Option<&str>) -> Result<Vec<TokenInfo>, store::Error> {
    let mut tokens = Vec::new();
    tx.scan(TOKENS, None, Order::Ascending, |_, token| {
        if owner.is_none_or(|o| o == token.owner) {
            tokens.push(token);
        }
        Ok(true)
    })?;
    tokens.sort_by_key(|t| std::cmp::Reverse(t.created_at));
    tokens
        .into_iter()
        .map(|t| {
            Ok(TokenInfo {
                last_used: tx.get(LAST_USED, t.id.as_bytes())?,
                id: t.id,
                owner: t.owner,
                role: t.role,
                created_at: t.created_at,
                expires_at: t.expires_at,
                created_by: t.created_by,
            })
        })
        .collect()
}

/// The token with public id `id`, if `owner` (when given) owns it.
pub fn find(tx: &mut WriteTx<'_>, id: &str, owner: Option<&str>) -> Result<(ApiToken, [u8; 32]), TokenError> {
    let key = tx.get(TOKEN_IDS, id.as_bytes())?.ok_or(TokenError::NotFound)?;
    let token = tx.get(TOKENS, &key)?.ok_or(TokenError::NotFound)?;
    if owner.is_some_and(|o| o != token.owner) {
        return Err(TokenError::NotFound);
    }
    Ok((token, key))
}

/// Revokes a token at once (the next request with it is refused).
pub fn revoke(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    id: &str,
    owner: Option<&str>,
) -> Result<ApiToken, TokenError> {
    let (token, key) = find(tx, id, owner)?;
    forget(tx, &token, &key)?;
    let event = Event::new("token.revoked", "revoke", Resource::new("token", &token.id)).detail("owner", &token.owner);
    audit::append(tx, now, origin, event)?;
    Ok(token)
}

/// Replaces a token's secret: the old one stops working at once; owner,
/// role and expiry carry over to the new one.
pub fn rotate(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    id: &str,
    owner: Option<&str>,
) -> Result<(ApiToken, String), TokenError> {
    let (old, key) = find(tx, id, owner)?;
    forget(tx, &old, &key)?;
    let (new, secret) = store_new(tx, now, origin, &old.owner, old.role, old.expires_at)?;
    let event = Event::new("token.rotated", "rotate", Resource::new("token", &old.id))
        .detail("replaced_by", &new.id)
        .detail("owner", &old.owner);
    audit::append(tx, now, origin, event)?;
    Ok((new, secret))
}

/// Revokes every token `owner` holds (the owner was disabled). Returns how many.
pub fn revoke_all_of(tx: &mut WriteTx<'_>, owner: &str) -> Result<usize, store::Error> {
    let mut doomed = Vec::new();
    tx.scan(TOKENS, None, Order::Ascending, |key, token| {
        if token.owner == owner {
            let mut k = [0u8; 32];
            k.copy_from_slice(key);
            doomed.push((token, k));
        }
        Ok(true)
    })?;
    for (token, key) in &doomed {
        forget(tx, token, key)?;
    }
    Ok(doomed.len())
}

fn forget(tx: &mut WriteTx<'_>, token: &ApiToken, key: &[u8; 32]) -> Result<(), store::Error> {
    tx.delete(TOKENS, key)?;
    tx.delete(TOKEN_IDS, token.id.as_bytes())?;
    tx.delete(LAST_USED, token.id.as_bytes())?;
    Ok(())
}

/// Moves tokens stored by the broker core into the current collection: a
/// token that never expired gets `default_ttl` from `now`. Returns how many.
pub fn migrate_legacy(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    default_ttl: std::time::Duration,
) -> Result<usize, store::Error> {
    let mut legacy = Vec::new();
    tx.scan(LEGACY, None, Order::Ascending, |key, record| {
        legacy.push((key.to_vec(), record));
        Ok(true)
    })?;
    for (key, old) in &legacy {
        let token = ApiToken {
            id: old.id.clone(),
            owner: old.principal.clone(),
            role: old.role,
            created_at: old.created_at,
            expires_at: old.expires_at.unwrap_or(now.plus(default_ttl)),
            created_by: old.created_by.clone(),
        };
        tx.put(TOKENS, key, &token)?;
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        tx.put(TOKEN_IDS, token.id.as_bytes(), &k)?;
        tx.delete(LEGACY, key)?;
    }
    Ok(legacy.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_token_authenticates_until_it_expires_or_is_revoked_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let t0 = Timestamp::from_millis(1_000);
        let expiry = Timestamp::from_millis(5_000);
        let (record, secret) = store
            .write_blocking(move |tx| issue_token(tx, t0, &Origin::system(), "alice", Role::Developer, expiry))
            .unwrap();
        let who = store.read(|tx| authenticate(tx, &secret, t0)).unwrap().unwrap();
        assert_eq!((who.name.as_str(), who.role), ("alice", Role::Developer));
        assert_eq!(who.via, Via::Token { id: record.id.clone(), note_use: true });
        assert_eq!(store.read(|tx| authenticate(tx, &secret, expiry)).unwrap(), Err(AuthError::Expired));
        let mut other = secret.clone();
        other.replace_range(
            PREFIX.len()..PREFIX.len() + 1,
            if secret.as_bytes()[PREFIX.len()] == b'a' { "b" } else { "a" },
        );
        assert_eq!(store.read(|tx| authenticate(tx, &other, t0)).unwrap(), Err(AuthError::Unknown));
        assert_eq!(store.read(|tx| authenticate(tx, "Bearer nonsense", t0)).unwrap(), Err(AuthError::Malformed));

        let id = record.id.clone();
        let refused = store.write_blocking(move |tx| {
            Ok::<_, store::Error>(revoke(tx, t0, &Origin::system(), &id, Some("bob")).is_err())
        });
        assert!(refused.unwrap(), "only the owner (or an admin) revokes");
        let id = record.id.clone();
        store.write_blocking(move |tx| revoke(tx, t0, &Origin::system(), &id, Some("alice"))).unwrap();
        assert_eq!(store.read(|tx| authenticate(tx, &secret, t0)).unwrap(), Err(AuthError::Unknown));

        drop(store);
        let raw = std::fs::read(dir.path().join(crate::store::DB_FILE)).unwrap();
        let needle = secret.as_bytes();
        assert!(!raw.windows(needle.len()).any(|w| w == needle), "the secret must not be stored");
    }

    #[test]
    fn rotation_keeps_owner_role_and_expiry_and_retires_the_old_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let t0 = Timestamp::from_millis(1_000);
        let expiry = Timestamp::from_millis(9_000);
        let (old, old_secret) =
            store.write_blocking(move |tx| issue_token(tx, t0, &Origin::system(), "ci", Role::Viewer, expiry)).unwrap();
        let id = old.id.clone();
        let (new, new_secret) = store.write_blocking(move |tx| rotate(tx, t0, &Origin::system(), &id, None)).unwrap();
        assert_ne!(new.id, old.id);
        assert_eq!((new.owner.as_str(), new.role, new.expires_at), ("ci", Role::Viewer, expiry));
        assert_eq!(store.read(|tx| authenticate(tx, &old_secret, t0)).unwrap(), Err(AuthError::Unknown));
        assert!(store.read(|tx| authenticate(tx, &new_secret, t0)).unwrap().is_ok());
        let listed = store.read(|tx| list(tx, Some("ci"))).unwrap();
        assert_eq!(listed.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), vec![new.id]);
    }
}
