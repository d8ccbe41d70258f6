//! API tokens: issued once, stored hashed, looked up by hash; listed,
//! rotated and revoked by their public id.
//!
//! Every token has a **holder**: the person whose *current* role bounds it.
//! A personal token's holder is its owner; a service token (owned by a name
//! that is no person's account) is held by the person who made it. A token
//! authenticates only while its holder's account is enabled and the
//! holder's role still covers the token's ([`super::may_delegate`]), so a
//! demotion or a disabled account takes effect on the next request, and a
//! demotion also revokes the tokens it outgrew, in its own transaction.
//! The one token no person stands behind is a broker-core directory's
//! bootstrap token, made before there were people ([`Holder::Appliance`]):
//! its expiry bounds it.

use serde::{Deserialize, Serialize};

use super::{AuthError, Principal, Role, Via};
use crate::audit::{self, Event, Origin, Resource};
use tether_base::clock::Timestamp;
use tether_base::secret;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Every token starts with this, so a leaked one is easy to spot in a scan.
const PREFIX: &str = "tether_";

/// Keyed by SHA-256 of the whole secret.
const TOKENS: Collection<ApiToken> = Collection::new("api_tokens");
/// Public id → the key in [`TOKENS`] (to revoke or rotate by id).
const TOKEN_IDS: Collection<[u8; 32]> = Collection::new("api_token_ids");
/// Public id → the token's holder. Tokens made before holders were kept
/// have none; theirs is found by [`holder_of`].
const HOLDERS: Collection<Holder> = Collection::new("api_token_holders");

/// Who stands behind a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holder {
    /// A person: the token works while their account is enabled and their
    /// role covers the token's.
    Person(String),
    /// The appliance itself: a broker-core directory's bootstrap token,
    /// made before there were people. Bound by its expiry alone.
    Appliance,
}

impl Holder {
    /// The name the separation-of-duties rules see for a request made with
    /// a token of `owner` held by this.
    pub fn person_or<'a>(&'a self, owner: &'a str) -> &'a str {
        match self {
            Holder::Person(name) => name,
            Holder::Appliance => owner,
        }
    }
}

/// Hash of a revoked (or rotated) token's secret → when it would have
/// expired, so that presenting it is answered "revoked" rather than
/// "unknown". Kept until then (pruned as tokens are revoked), so the
/// collection holds no more than the tokens that could still be presented.
const REVOKED: Collection<Timestamp> = Collection::new("api_tokens_revoked");

/// How far [`holder_of`] follows "made by a token" back to a person.
const MAX_MAKER_HOPS: usize = 4;
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
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    pub expires_at: Timestamp,
    pub created_by: String,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339_opt")]
    pub last_used: Option<Timestamp>,
}

/// Why a token operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no such token")]
    NotFound,
    /// Rotating would hand out a role the holder no longer has.
    #[error("the token's holder no longer holds its role: make a new token instead")]
    HolderLacksRole,
    #[error("name must be 1-64 characters of a-z, 0-9, '.', '_', '-', '@'")]
    BadName,
    #[error("a token acts for its creator, or (made by an admin) for a service name that is no person's account")]
    NotYoursToName,
    #[error("a {creator} cannot make a {role} token: a token never carries more rights than its creator")]
    MoreThanYourRole { creator: Role, role: Role },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Who asks for a new token.
#[derive(Debug, Clone)]
pub struct Asker {
    /// Whom they act for.
    pub name: String,
    pub role: Role,
    /// Their grant covers everyone's tokens (an admin's), not only their own.
    pub everyone: bool,
    /// The person behind the request, who will hold the token: it never
    /// outlives that person's rights.
    pub holder: Holder,
}

/// Issues the token `asker` asked for: acting for themselves, or (asked by
/// an admin) for a service name that is no person's account; never with a
/// role above the asker's. A refusal writes nothing.
pub fn issue_requested(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    asker: &Asker,
    name: Option<String>,
    role: Role,
    expires_at: Timestamp,
) -> Result<(ApiToken, String), TokenError> {
    let owner = name.unwrap_or_else(|| asker.name.clone());
    super::users::check_name(&owner).map_err(|_| TokenError::BadName)?;
    if owner != asker.name && (!asker.everyone || super::users::get(&mut *tx, &owner)?.is_some()) {
        return Err(TokenError::NotYoursToName);
    }
    if !super::may_delegate(asker.role, role) {
        return Err(TokenError::MoreThanYourRole { creator: asker.role, role });
    }
    let new = NewToken { owner, role, holder: asker.holder.clone(), expires_at };
    Ok(issue_token(tx, now, origin, new)?)
}

/// What a token is made for: whom it acts for, with which role, held by
/// which person (see the module's rules), until when.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub owner: String,
    pub role: Role,
    pub holder: Holder,
    pub expires_at: Timestamp,
}

/// Creates a token inside the caller's transaction, audits it, and returns
/// the record and the secret (which exists nowhere else from now on).
pub fn issue_token(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    new: NewToken,
) -> Result<(ApiToken, String), store::Error> {
    let (record, secret) = store_new(tx, now, origin, &new)?;
    let event = Event::new("token.created", "create", Resource::new("token", &record.id))
        .detail("role", new.role)
        .detail("owner", &new.owner)
        .detail("holder", new.holder.person_or("appliance"))
        .detail("expires_at", new.expires_at);
    audit::append(tx, now, origin, event)?;
    Ok((record, secret))
}

fn store_new(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    new: &NewToken,
) -> Result<(ApiToken, String), store::Error> {
    let secret::Minted { secret, key, id } = secret::mint(PREFIX)?;
    let record = ApiToken {
        id,
        owner: new.owner.clone(),
        role: new.role,
        created_at: now,
        expires_at: new.expires_at,
        created_by: origin.actor.id.clone(),
    };
    tx.put(TOKENS, &key, &record)?;
    tx.put(TOKEN_IDS, record.id.as_bytes(), &key)?;
    tx.put(HOLDERS, record.id.as_bytes(), &new.holder)?;
    Ok((record, secret))
}

/// Who a token answers to. Tokens from before holders were kept name
/// none: theirs is the owner if the owner is a person, else the person who
/// made it (following a maker that was a token to that token's holder); a
/// token the appliance made for nobody is a broker-core bootstrap token.
/// `None`: no one stands behind it any more, and it does not authenticate.
pub fn holder_of(mut tx: impl store::Reads, token: &ApiToken) -> Result<Option<Holder>, store::Error> {
    let mut token = token.clone();
    for _ in 0..MAX_MAKER_HOPS {
        if let Some(holder) = tx.get(HOLDERS, token.id.as_bytes())? {
            return Ok(Some(holder));
        }
        for candidate in [&token.owner, &token.created_by] {
            if super::users::get(&mut tx, candidate)?.is_some()
                || super::sso_people::person(&mut tx, candidate)?.is_some()
            {
                return Ok(Some(Holder::Person(candidate.clone())));
            }
        }
        if token.created_by == crate::audit::Actor::system().id {
            return Ok(Some(Holder::Appliance));
        }
        let maker = match tx.get(TOKEN_IDS, token.created_by.as_bytes())? {
            Some(key) => tx.get(TOKENS, &key)?,
            None => None,
        };
        match maker {
            Some(maker) => token = maker,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Whether `holder` may still stand behind a token of `role`.
fn holder_standing(tx: impl store::Reads, holder: &Holder, role: Role) -> Result<Result<(), AuthError>, store::Error> {
    let person = match holder {
        Holder::Appliance => return Ok(Ok(())),
        Holder::Person(name) => name,
    };
    Ok(match super::current_role(tx, person)? {
        None => Err(AuthError::HolderGone),
        Some(now_holds) if !super::may_delegate(now_holds, role) => Err(AuthError::HolderLacksRole),
        Some(_) => Ok(()),
    })
}

/// Finds the token behind a presented secret, and checks that its holder
/// still stands behind it.
pub fn authenticate(
    tx: &ReadTx,
    presented: &str,
    now: Timestamp,
) -> Result<Result<Principal, AuthError>, store::Error> {
    let Some(key) = secret::storage_key(presented, PREFIX) else {
        return Ok(Err(AuthError::Malformed));
    };
    let Some(record) = tx.get(TOKENS, &key)? else {
        return Ok(Err(match tx.get(REVOKED, &key)? {
            Some(expires_at) if expires_at > now => AuthError::Revoked,
            Some(_) => AuthError::Expired,
            None => AuthError::Unknown,
        }));
    };
    if record.expires_at <= now {
        return Ok(Err(AuthError::Expired));
    }
    let Some(holder) = holder_of(tx, &record)? else {
        return Ok(Err(AuthError::HolderGone));
    };
    if let Err(why) = holder_standing(tx, &holder, record.role)? {
        return Ok(Err(why));
    }
    let last_used = tx.get(LAST_USED, record.id.as_bytes())?;
    let stale = last_used.is_none_or(|t| now.since(t) >= LAST_USED_RESOLUTION);
    let via = Via::Token { id: record.id, holder, note_use: stale };
    Ok(Ok(Principal { name: record.owner, role: record.role, via }))
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
    prune_tombstones(tx, now)?;
    forget(tx, &token, &key)?;
    let event = Event::new("token.revoked", "revoke", Resource::new("token", &token.id)).detail("owner", &token.owner);
    audit::append(tx, now, origin, event)?;
    Ok(token)
}

/// Replaces a token's secret: the old one stops working at once; owner,
/// role, holder and expiry carry over to the new one. Refused when the
/// holder no longer stands behind the role.
pub fn rotate(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    id: &str,
    owner: Option<&str>,
) -> Result<(ApiToken, String), TokenError> {
    let (old, key) = find(tx, id, owner)?;
    let Some(holder) = holder_of(&mut *tx, &old)? else { return Err(TokenError::HolderLacksRole) };
    if holder_standing(&mut *tx, &holder, old.role)?.is_err() {
        return Err(TokenError::HolderLacksRole);
    }
    prune_tombstones(tx, now)?;
    forget(tx, &old, &key)?;
    let renewed = NewToken { owner: old.owner.clone(), role: old.role, holder, expires_at: old.expires_at };
    let (new, secret) = store_new(tx, now, origin, &renewed)?;
    let event = Event::new("token.rotated", "rotate", Resource::new("token", &old.id))
        .detail("replaced_by", &new.id)
        .detail("owner", &old.owner);
    audit::append(tx, now, origin, event)?;
    Ok((new, secret))
}

/// Revokes every token `person` owns or holds (the account was disabled).
/// Returns how many.
pub fn revoke_all_of(tx: &mut WriteTx<'_>, now: Timestamp, person: &str) -> Result<usize, store::Error> {
    revoke_where(tx, now, person, |_| true)
}

/// Revokes the tokens `person` owns or holds that carry more than `role`
/// (the person was just given `role`). Returns how many.
pub fn revoke_beyond(tx: &mut WriteTx<'_>, now: Timestamp, person: &str, role: Role) -> Result<usize, store::Error> {
    revoke_where(tx, now, person, |token| !super::may_delegate(role, token.role))
}

fn revoke_where(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    person: &str,
    doomed_if: impl Fn(&ApiToken) -> bool,
) -> Result<usize, store::Error> {
    let mut all = Vec::new();
    tx.scan(TOKENS, None, Order::Ascending, |key, token| {
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        all.push((token, k));
        Ok(true)
    })?;
    prune_tombstones(tx, now)?;
    let mut revoked = 0;
    for (token, key) in &all {
        let answers_to_person =
            token.owner == person || holder_of(&mut *tx, token)? == Some(Holder::Person(person.to_owned()));
        if answers_to_person && doomed_if(token) {
            forget(tx, token, key)?;
            revoked += 1;
        }
    }
    Ok(revoked)
}

/// Takes a token away, leaving its tombstone in [`REVOKED`].
fn forget(tx: &mut WriteTx<'_>, token: &ApiToken, key: &[u8; 32]) -> Result<(), store::Error> {
    tx.put(REVOKED, key, &token.expires_at)?;
    tx.delete(TOKENS, key)?;
    tx.delete(TOKEN_IDS, token.id.as_bytes())?;
    tx.delete(HOLDERS, token.id.as_bytes())?;
    tx.delete(LAST_USED, token.id.as_bytes())?;
    Ok(())
}

/// Takes away the tombstones of tokens that have expired by `now` (once
/// per revocation, however many tokens it takes away).
fn prune_tombstones(tx: &mut WriteTx<'_>, now: Timestamp) -> Result<(), store::Error> {
    let mut expired = Vec::new();
    tx.scan(REVOKED, None, Order::Ascending, |tomb, expires_at| {
        if expires_at <= now {
            expired.push(tomb.to_vec());
        }
        Ok(true)
    })?;
    for tomb in expired {
        tx.delete(REVOKED, &tomb)?;
    }
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
mod tests;
