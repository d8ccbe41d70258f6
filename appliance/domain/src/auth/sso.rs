//! Single sign-on through the site's OpenID provider: a person proves who
//! they are there, and their groups there decide their role here.
//!
//! A sign-in is begun ([`Sso::begin`]) with fresh state, nonce and PKCE
//! verifier kept in memory, bound to the browser by a cookie, and used once
//! ([`Sso::finish`]). The person's account here is named `sso:` plus the
//! provider's `preferred_username` (local names cannot hold a colon, so the
//! two never collide) and is bound to the provider's subject on first
//! sign-in: another subject later claiming the same name is refused. The
//! role is worked out again at every sign-in from the groups the provider
//! sends, first match in the configured order; no match, no session. Local
//! accounts keep working when the provider is away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::oidc::{OidcError, Provider, SsoSettings};
use super::sso_people::{self, NAME_PREFIX, SsoPerson};
use super::users::UserInfo;
use super::{Accounts, LoggedIn, sessions};
use crate::audit::{self, Actor, ActorKind, Event, Origin, Outcome, Resource};
use tether_base::clock::{SharedClock, Timestamp};
use tether_base::secret;
use tether_store::{self as store, Store};

/// The cookie binding a sign-in to the browser that began it. `Lax`, not
/// `Strict`: it must come back on the provider's redirect, a navigation
/// from another site.
pub const BINDING_COOKIE: &str = "__Host-tether_sso";
/// How long a begun sign-in may take.
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(600);
/// Sign-ins begun but not finished, at most (each is a few hundred bytes;
/// beginning one needs no credential).
const MAX_PENDING: usize = 4096;

/// Why a single sign-on did not give a session.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error(transparent)]
    Provider(#[from] OidcError),
    /// The sign-in's own evidence (state, browser binding, identity) fails.
    #[error("{0}")]
    Refused(String),
    /// Authenticated, but none of the person's groups maps to a role here.
    #[error("none of your groups at the identity provider gives a role on this appliance; ask an admin")]
    NoRole,
    /// Another subject at the provider signed in under this name before.
    #[error("another person at the identity provider already signed in under this name")]
    NameTaken,
    #[error("too many sign-ins are under way; try again in a minute")]
    Busy,
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Vault(#[from] crate::vault::Error),
}

impl From<secret::RandomFailed> for SsoError {
    fn from(e: secret::RandomFailed) -> Self {
        SsoError::Store(store::Error::from(e))
    }
}

/// A begun sign-in: where to send the browser, and the cookie binding it.
#[derive(Debug)]
pub struct Begun {
    pub redirect: String,
    pub binding: String,
}

/// What the provider sent back to the callback.
#[derive(Debug, Deserialize)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<Zeroizing<String>>,
    /// RFC 9207: the issuer that answers, against mix-up attacks.
    pub iss: Option<String>,
    /// The provider refused (for example, the person cancelled).
    pub error: Option<String>,
}

#[derive(Debug)]
struct Pending {
    binding: [u8; 32],
    nonce: String,
    verifier: Zeroizing<String>,
    begun: Instant,
    begun_at: Timestamp,
    fresh: bool,
}

/// The single sign-on service.
#[derive(Debug)]
pub struct Sso {
    provider: Provider,
    settings: SsoSettings,
    store: Store,
    clock: SharedClock,
    accounts: Arc<Accounts>,
    /// Keyed by SHA-256 of the state.
    pending: Mutex<HashMap<[u8; 32], Pending>>,
}

impl Sso {
    pub fn new(
        settings: SsoSettings,
        store: Store,
        clock: SharedClock,
        accounts: Arc<Accounts>,
    ) -> anyhow::Result<Sso> {
        Ok(Sso {
            provider: Provider::new(&settings)?,
            settings,
            store,
            clock,
            accounts,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Begins a sign-in. `fresh`: the provider must ask for credentials
    /// again (to re-authenticate for a sensitive action).
    pub async fn begin(&self, fresh: bool) -> Result<Begun, SsoError> {
        let (state, nonce) = (secret::random_token("")?, secret::random_token("")?);
        let verifier = Zeroizing::new(secret::random_token("")?);
        let binding = secret::random_token("")?;
        let redirect = self
            .provider
            .authorization_url(&state, &nonce, &verifier, fresh, self.accounts.lifetimes().absolute)
            .await?;
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.retain(|_, p| p.begun.elapsed() < SIGN_IN_WINDOW);
        if pending.len() >= MAX_PENDING {
            return Err(SsoError::Busy);
        }
        let entry = Pending {
            binding: secret::sha256(binding.as_bytes()),
            nonce,
            verifier,
            begun: Instant::now(),
            begun_at: self.clock.now(),
            fresh,
        };
        pending.insert(secret::sha256(state.as_bytes()), entry);
        Ok(Begun { redirect, binding })
    }

    /// Finishes a sign-in: checks it against what [`Sso::begin`] kept,
    /// redeems the code, maps the groups to a role and starts a session.
    /// `replacing`: the browser's current session, ended if it is the same
    /// person's (a re-authentication replaces it). Every refusal of a
    /// sign-in begun here is audited.
    pub async fn finish(
        &self,
        callback: Callback,
        binding: Option<&str>,
        replacing: Option<[u8; 32]>,
        origin: &Origin,
    ) -> Result<LoggedIn, SsoError> {
        // Only sign-ins begun here are audited when they fail: anyone can
        // call the callback, and that must not fill the audit log.
        let pending = callback
            .state
            .as_deref()
            .and_then(|state| {
                self.pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&secret::sha256(state.as_bytes()))
            })
            .filter(|p| p.begun.elapsed() < SIGN_IN_WINDOW)
            .ok_or_else(|| SsoError::Refused("this sign-in is unknown, used or expired; start again".into()))?;
        let result = self.complete(pending, callback, binding, replacing, origin).await;
        if let Err(e) = &result
            && !matches!(e, SsoError::NoRole | SsoError::NameTaken | SsoError::Store(_) | SsoError::Vault(_))
        {
            self.record_refusal(None, origin, "refused", &e.to_string()).await?;
        }
        result
    }

    async fn complete(
        &self,
        pending: Pending,
        callback: Callback,
        binding: Option<&str>,
        replacing: Option<[u8; 32]>,
        origin: &Origin,
    ) -> Result<LoggedIn, SsoError> {
        let refused = |m: &str| SsoError::Refused(m.to_owned());
        if binding.map(|b| secret::sha256(b.as_bytes())) != Some(pending.binding) {
            return Err(refused("this sign-in was begun in another browser; start again"));
        }
        if let Some(error) = &callback.error {
            let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect();
            return Err(SsoError::Refused(format!("the identity provider did not sign you in ({error})")));
        }
        if callback.iss.as_deref().is_some_and(|iss| iss != self.provider.issuer()) {
            return Err(refused("the answer comes from another identity provider"));
        }
        let code = callback.code.ok_or_else(|| refused("the provider sent no code"))?;
        let now = self.clock.now();
        let now_secs = i64::try_from(now.as_millis() / 1000).unwrap_or(i64::MAX);
        let (identity, access_token) = self.provider.redeem(&code, &pending.verifier, &pending.nonce, now_secs).await?;
        let auth_time = identity.auth_time.ok_or_else(|| refused("the provider's ID token has no auth_time"))?;
        let authenticated_at =
            Timestamp::from_millis(u64::try_from(auth_time).unwrap_or(0).saturating_mul(1000)).min(now);
        // The provider's clock may run a little behind the appliance's.
        if pending.fresh && authenticated_at.plus(super::oidc::CLOCK_SKEW) < pending.begun_at {
            return Err(refused("the provider did not ask you to sign in again; start again"));
        }
        // Providers put profile and group claims in the ID token or only
        // behind the userinfo endpoint (oidc-provider, by default); the ID
        // token's win where both have them.
        let groups_claim = &self.settings.groups_claim;
        let userinfo = match &access_token {
            Some(token)
                if identity.claims.get("preferred_username").is_none()
                    || identity.claims.get(groups_claim).is_none() =>
            {
                self.provider.userinfo(token, &identity.subject).await?
            }
            _ => None,
        };
        let claim = |name: &str| identity.claims.get(name).or_else(|| userinfo.as_ref()?.get(name));
        let name = claim("preferred_username")
            .and_then(Value::as_str)
            .filter(|n| super::users::check_name(n).is_ok())
            .map(|n| format!("{NAME_PREFIX}{n}"))
            .ok_or_else(|| {
                refused(
                    "the provider sent no usable preferred_username (1-64 characters of a-z, 0-9, '.', '_', '-', '@')",
                )
            })?;
        let groups = claim(groups_claim).map(group_list).unwrap_or_default();
        let Some((group, role)) = self.settings.roles.iter().find(|(g, _)| groups.contains(g)).cloned() else {
            self.record_refusal(Some(&name), origin, "no_role", "no group maps to a role").await?;
            return Err(SsoError::NoRole);
        };
        // A role that needs a second factor gets one: the provider's, if it
        // vouches for one, else the appliance's own TOTP before anything else.
        let assured = mfa_assured(&identity.claims, &self.settings.mfa_acr_values);
        let step_up = !assured && self.accounts.needs_second_factor(role);
        let issuer = self.provider.issuer().to_owned();
        let as_person = Origin {
            actor: Actor { kind: ActorKind::User, id: name.clone(), roles: vec![role.to_string()] },
            ..origin.clone()
        };
        let claimed = name.clone();
        let (subject, fresh) = (identity.subject, pending.fresh);
        let started = self
            .store
            .write(move |tx| {
                let known = sso_people::person(&mut *tx, &name)?;
                if known.as_ref().is_some_and(|p| p.subject != subject || p.issuer != issuer) {
                    return Ok(None);
                }
                let person = SsoPerson {
                    first_login: known.map_or(now, |p| p.first_login),
                    name: name.clone(),
                    issuer,
                    subject,
                    role,
                    last_login: now,
                };
                sso_people::put(tx, &person)?;
                sso_people::set_provider_assurance(tx, &name, assured.then_some(now))?;
                if let Some(old) = replacing {
                    sessions::end_if_owned_by(tx, &old, &name)?;
                }
                let (session, cookie, key) = sessions::start(tx, &name, now, authenticated_at)?;
                if step_up {
                    sessions::await_second_factor(tx, &key)?;
                }
                let second_factor = match (assured, step_up) {
                    (true, _) => "provider",
                    (false, true) => "pending",
                    (false, false) => "none",
                };
                let event = Event::new("auth.login", "login", Resource::new("session", &session.id))
                    .detail("via", "sso")
                    .detail("group", &group)
                    .detail("fresh", fresh)
                    .detail("second_factor", second_factor);
                audit::append(tx, now, &as_person, event)?;
                Ok::<_, store::Error>(Some((session, cookie, key, person)))
            })
            .await?;
        let Some((session, cookie, key, person)) = started else {
            self.record_refusal(Some(&claimed), origin, "name_taken", "another subject holds this name").await?;
            return Err(SsoError::NameTaken);
        };
        let second_factor = self.store.read(|tx| sso_people::has_second_factor(tx, &person.name))?;
        Ok(LoggedIn {
            csrf: self.accounts.csrf_token(&key)?,
            user: UserInfo { second_factor, ..UserInfo::from(&person) },
            set_up: !step_up,
            session,
            cookie,
        })
    }

    /// Where the browser goes to end the provider's session too.
    pub async fn logout_url(&self) -> Option<String> {
        self.provider.logout_url(&format!("{}/", self.settings.console_url)).await
    }

    /// Audits a refused sign-in; the person, if the provider named one,
    /// under their pseudonym.
    async fn record_refusal(
        &self,
        name: Option<&str>,
        origin: &Origin,
        reason: &'static str,
        why: &str,
    ) -> Result<(), SsoError> {
        let who = match name {
            Some(name) => self.accounts.pseudonym(name)?,
            None => "unknown".into(),
        };
        let (origin, now, why) = (origin.clone(), self.clock.now(), why.to_owned());
        self.store
            .write(move |tx| {
                let event = Event::new("auth.login_failed", "login", Resource::new("user", &who))
                    .outcome(Outcome::Denied)
                    .detail("via", "sso")
                    .detail("reason", reason)
                    .detail("why", why);
                audit::append(tx, now, &origin, event)
            })
            .await?;
        Ok(())
    }
}

/// A groups claim: a list of strings, or one string.
fn group_list(claim: &Value) -> Vec<String> {
    match claim {
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// `amr` values (RFC 8176) that name a factor beyond a password: one-time
/// codes, hardware or software keys, smart cards, biometrics, or "mfa".
const SECOND_FACTOR_AMR: [&str; 10] = ["mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm"];

/// Whether the ID token's claims vouch for a second factor: an `amr`
/// naming one, or an `acr` the site configured as meaning one.
pub fn mfa_assured(claims: &Value, mfa_acr_values: &[String]) -> bool {
    let amr = claims.get("amr").and_then(Value::as_array).into_iter().flatten();
    let named = amr.filter_map(Value::as_str).any(|m| SECOND_FACTOR_AMR.contains(&m));
    let acr = claims.get("acr").and_then(Value::as_str);
    named || acr.is_some_and(|acr| mfa_acr_values.iter().any(|v| v == acr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_factor_is_vouched_for_by_amr_or_a_configured_acr() {
        let site_acr = vec!["urn:site:mfa".to_owned()];
        let vouches = |claims: Value| mfa_assured(&claims, &site_acr);
        assert!(vouches(serde_json::json!({"amr": ["pwd", "otp"]})));
        assert!(vouches(serde_json::json!({"amr": ["hwk"]})));
        assert!(vouches(serde_json::json!({"amr": ["mfa"]})));
        assert!(vouches(serde_json::json!({"acr": "urn:site:mfa"})));
        assert!(!vouches(serde_json::json!({"amr": ["pwd"]})), "a password alone");
        assert!(!vouches(serde_json::json!({"amr": "otp"})), "amr is an array");
        assert!(!vouches(serde_json::json!({"acr": "urn:site:pwd"})), "an acr the site did not name");
        assert!(!mfa_assured(&serde_json::json!({"acr": "urn:site:mfa"}), &[]), "no acr counts unless configured");
        assert!(!vouches(serde_json::json!({})));
    }
}
