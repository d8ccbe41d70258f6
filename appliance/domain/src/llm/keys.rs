//! Virtual keys: what a person's tools present to the LLM gateway instead
//! of an upstream's credentials. Shown once, stored as SHA-256 (256 random
//! bits: nothing to brute-force), bound to an owner, a set of models, limits
//! and an enforcement level. A key's level never changes: a new level is a
//! new key, so a leaked key cannot be downgraded in place.

use serde::{Deserialize, Serialize};

use crate::audit::{self, Event, Origin, Resource};
use crate::auth::{self, AuthError, Permission};
use tether_base::clock::Timestamp;
use tether_base::secret;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Every virtual key starts with this, so a leaked one is easy to spot.
const PREFIX: &str = "tvk_";

/// Keyed by SHA-256 of the whole secret.
const KEYS: Collection<VirtualKey> = Collection::new("llm_keys");
/// Public id → the key in [`KEYS`].
const KEY_IDS: Collection<[u8; 32]> = Collection::new("llm_key_ids");
/// Public id → what else the key is bound to (only for keys with any).
const POLICIES: Collection<KeyPolicy> = Collection::new("llm_key_policies");

/// What a key is bound to beyond its own limits, fixed for its life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPolicy {
    /// Limits for single models, beside the key's own.
    pub model_limits: Vec<(String, Limits)>,
    /// Keep each call's prompt and answer, sealed in the vault (`prompt_log`).
    pub log_prompts: bool,
}

/// How much a key may use. `None`: no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt and completion) per minute.
    pub tpm: Option<u32>,
    /// Requests in flight at once.
    pub max_parallel: Option<u32>,
}

/// What the gateway adds to every request made with a key, whatever the
/// client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Nothing added.
    Unrestricted,
    /// A short reasoning checklist first.
    Standard,
    /// A design-before-code workflow; code withheld in a first answer.
    DesignFirst,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Unrestricted => "unrestricted",
            Enforcement::Standard => "standard",
            Enforcement::DesignFirst => "design-first",
        }
    }
}

impl std::str::FromStr for Enforcement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Enforcement::Unrestricted, Enforcement::Standard, Enforcement::DesignFirst]
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown enforcement level {s:?}; one of unrestricted, standard, design-first"))
    }
}

/// What the store keeps about a key. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualKey {
    /// Public id: the first 8 bytes of the hash, in hex. Safe to log.
    pub id: String,
    /// The person whose use this is (usage and audit name them).
    pub owner: String,
    /// The models the key may call; empty: any model an upstream serves.
    pub models: Vec<String>,
    pub limits: Limits,
    /// Kept in its own collection ([`POLICIES`]) and filled in when the key is read.
    #[serde(skip)]
    pub policy: KeyPolicy,
    pub enforcement: Enforcement,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub created_by: String,
}

impl VirtualKey {
    fn with_policy(mut self, tx: &ReadTx) -> Result<VirtualKey, store::Error> {
        self.policy = tx.get(POLICIES, self.id.as_bytes())?.unwrap_or_default();
        Ok(self)
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// A key about to be made.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub owner: String,
    pub models: Vec<String>,
    pub limits: Limits,
    pub policy: KeyPolicy,
    pub enforcement: Enforcement,
    pub expires_at: Timestamp,
}

impl NewKey {
    /// The rules a key's models and limits follow.
    fn check(&self) -> Result<(), KeyError> {
        let limited = || self.policy.model_limits.iter().map(|(m, _)| m);
        if self.models.iter().chain(limited()).any(|m| m.is_empty() || m.len() > 200) {
            return Err(KeyError::Invalid("model names are 1-200 characters".into()));
        }
        if let Some(model) = limited().find(|m| !self.models.is_empty() && !self.models.contains(m)) {
            return Err(KeyError::Invalid(format!("{model:?} has limits but is not among the key's models")));
        }
        if self.policy.model_limits.iter().any(|(_, l)| *l == Limits::default()) {
            return Err(KeyError::Invalid("a model's limits name at least one of rpm, tpm, max_parallel".into()));
        }
        Ok(())
    }
}

/// Why a key operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no such key")]
    NotFound,
    /// The owner is no enabled account, or its role may not hold keys.
    #[error("a key's owner must be an enabled account whose role may hold keys (admin or developer)")]
    OwnerCannotHold,
    /// What was asked for does not make a key (the message says why).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Makes a key, audits it, and returns the record and the secret (which
/// exists nowhere else from now on).
pub fn issue(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    new: NewKey,
) -> Result<(VirtualKey, String), KeyError> {
    new.check()?;
    if owner_standing(&mut *tx, &new.owner)?.is_err() {
        return Err(KeyError::OwnerCannotHold);
    }
    let secret::Minted { secret, key: hash, id } = secret::mint(PREFIX).map_err(store::Error::from)?;
    let key = VirtualKey {
        id,
        owner: new.owner,
        models: new.models,
        limits: new.limits,
        policy: new.policy,
        enforcement: new.enforcement,
        created_at: now,
        expires_at: new.expires_at,
        created_by: origin.actor.id.clone(),
    };
    tx.put(KEYS, &hash, &key)?;
    tx.put(KEY_IDS, key.id.as_bytes(), &hash)?;
    if key.policy != KeyPolicy::default() {
        tx.put(POLICIES, key.id.as_bytes(), &key.policy)?;
    }
    let event = Event::new("llm.key_created", "create", Resource::new("llm_key", &key.id))
        .detail("owner", &key.owner)
        .detail("models", key.models.join(","))
        .detail("enforcement", key.enforcement.as_str())
        .detail("limited_models", key.policy.model_limits.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(","))
        .detail("log_prompts", key.policy.log_prompts)
        .detail("expires_at", key.expires_at);
    audit::append(tx, now, origin, event)?;
    Ok((key, secret))
}

/// Whether `owner` may hold keys *now*: an enabled account whose current
/// role holds [`Permission::LlmKeyManage`]. Checked when a key is made and
/// at every use, so a key works only while its owner could make it.
pub fn owner_standing(tx: impl store::Reads, owner: &str) -> Result<Result<(), AuthError>, store::Error> {
    Ok(match auth::current_role(tx, owner)? {
        None => Err(AuthError::HolderGone),
        Some(role) if auth::grant(role, Permission::LlmKeyManage).is_none() => Err(AuthError::HolderLacksRole),
        Some(_) => Ok(()),
    })
}

/// The key behind a presented secret, if it is alive and its owner still
/// may hold it.
pub fn authenticate(
    tx: &ReadTx,
    presented: &str,
    now: Timestamp,
) -> Result<Result<VirtualKey, AuthError>, store::Error> {
    let Some(hash) = secret::storage_key(presented, PREFIX) else {
        return Ok(Err(AuthError::Malformed));
    };
    let Some(key) = tx.get(KEYS, &hash)? else {
        return Ok(Err(AuthError::Unknown));
    };
    if key.expires_at <= now {
        return Ok(Err(AuthError::Expired));
    }
    if let Err(why) = owner_standing(tx, &key.owner)? {
        return Ok(Err(why));
    }
    Ok(Ok(key.with_policy(tx)?))
}

/// Keys, newest first; only `owner`'s when given.
pub fn list(tx: &ReadTx, owner: Option<&str>) -> Result<Vec<VirtualKey>, store::Error> {
    let mut keys = Vec::new();
    tx.scan(KEYS, None, Order::Ascending, |_, key: VirtualKey| {
        if owner.is_none_or(|o| o == key.owner) {
            keys.push(key);
        }
        Ok(true)
    })?;
    keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
    keys.into_iter().map(|k| k.with_policy(tx)).collect()
}

/// Revokes a key at once; `owner`, when given, must own it.
pub fn revoke(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    id: &str,
    owner: Option<&str>,
) -> Result<VirtualKey, KeyError> {
    let hash = tx.get(KEY_IDS, id.as_bytes())?.ok_or(KeyError::NotFound)?;
    let key = tx.get(KEYS, &hash)?.ok_or(KeyError::NotFound)?;
    if owner.is_some_and(|o| o != key.owner) {
        return Err(KeyError::NotFound);
    }
    tx.delete(KEYS, &hash)?;
    tx.delete(KEY_IDS, id.as_bytes())?;
    tx.delete(POLICIES, id.as_bytes())?;
    let event = Event::new("llm.key_revoked", "revoke", Resource::new("llm_key", &key.id)).detail("owner", &key.owner);
    audit::append(tx, now, origin, event)?;
    Ok(key)
}
