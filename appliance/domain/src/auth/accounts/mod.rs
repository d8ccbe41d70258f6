//! The accounts service: logging in and out, finishing an account's setup
//! (own password, TOTP), re-authenticating, and the admin's operations on
//! people. It does the slow and secret parts (password hashing off the
//! runtime, sealing TOTP secrets, keyed digests) before each store write.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::audit::tally::FailureLog;
use crate::audit::{self, Actor, ActorKind, Event, Origin, Outcome, Resource};
use crate::auth::password::PasswordError;
use crate::auth::roles::{self, RoleChange};
use crate::auth::sessions::{self, Lifetimes, Session};
use crate::auth::throttle::{LoginThrottle, Refusal};
use crate::auth::users::{self, User, UserError, UserInfo};
use crate::auth::{AuthError, Principal, Role};
use crate::vault::{self, Vault};
use credentials::{SecondFactor, consume_second_factor};
use tether_base::clock::SharedClock;
use tether_base::crypto::CryptoPolicy;
use tether_store::{self as store, Store};

/// Password hashes computed at once at most (each takes 64 MiB and ~0.2 s).
mod api_tokens;
mod credentials;
mod second_factor;

const CONCURRENT_HASHES: usize = 2;

/// What a person presents to log in or re-authenticate.
#[derive(Debug)]
pub struct Credentials {
    pub password: Zeroizing<String>,
    pub totp: Option<Zeroizing<String>>,
    pub recovery_code: Option<Zeroizing<String>>,
}

/// Why a login (or re-authentication) did not go through.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the name, password or code is wrong")]
    Invalid,
    #[error("this account needs its second factor: send a TOTP code or a recovery code")]
    SecondFactorRequired,
    /// A second factor was sent for a session that is not waiting for one.
    #[error("this session is not waiting for a second factor")]
    NoSecondFactorPending,
    /// The session waits for a second factor the person has not enrolled.
    #[error("no TOTP is enrolled for this account: enroll one (POST /api/v1/auth/totp, then /totp/confirm)")]
    NotEnrolled,
    #[error("too many failed attempts; try again later")]
    Throttled(Refusal),
    #[error(transparent)]
    Password(PasswordError),
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the code is wrong; check the authenticator app's clock")]
    WrongCode,
    #[error("start TOTP setup first")]
    NoTotpPending,
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A new session.
#[derive(Debug)]
pub struct LoggedIn {
    pub session: Session,
    /// The cookie's value: the only copy.
    pub cookie: String,
    pub csrf: String,
    pub user: UserInfo,
    /// Whether the account still has setup steps before it may do anything.
    pub set_up: bool,
}

/// The service. Share one `Arc<Accounts>`.
#[derive(Debug)]
pub struct Accounts {
    store: Store,
    vault: Arc<Vault>,
    clock: SharedClock,
    policy: CryptoPolicy,
    lifetimes: Lifetimes,
    /// Roles that must have a second factor (`mfa_required_roles`).
    second_factor_roles: Vec<Role>,
    /// Shared with the writes that store its changes.
    throttle: Arc<LoginThrottle>,
    /// Failed logins are tallied per source, not written one by one.
    failures: Arc<FailureLog>,
    hashing: Semaphore,
}

impl Accounts {
    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        clock: SharedClock,
        policy: CryptoPolicy,
        lifetimes: Lifetimes,
        second_factor_roles: Vec<Role>,
        failures: Arc<FailureLog>,
    ) -> Accounts {
        Accounts {
            store,
            vault,
            clock,
            policy,
            lifetimes,
            second_factor_roles,
            failures,
            throttle: Arc::default(),
            hashing: Semaphore::new(CONCURRENT_HASHES),
        }
    }

    /// Takes back the failed-login counts and lockouts the store kept, so
    /// a restart forgives no one; deletes those that have aged out.
    pub async fn restore_throttle(&self) -> Result<(), store::Error> {
        let stored = self.store.read(crate::auth::throttle::load)?;
        let spent = self.throttle.restore(stored, self.clock.now());
        self.store.write(move |tx| crate::auth::throttle::save(tx, spent)).await
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Whether people holding `role` must have a second factor (`mfa_required_roles`).
    pub fn needs_second_factor(&self, role: Role) -> bool {
        self.second_factor_roles.contains(&role)
    }

    /// The CSRF token of a session: a keyed digest of its storage key, so
    /// nothing more is stored and it can be shown again at any time.
    pub fn csrf_token(&self, session_key: &[u8; 32]) -> Result<String, vault::Error> {
        Ok(hex::encode(self.vault.keys()?.digest("console.csrf", &[session_key])))
    }

    /// How an account name appears in records where the name itself is not
    /// needed (failed logins): a keyed digest, stable for correlation.
    pub fn pseudonym(&self, name: &str) -> Result<String, vault::Error> {
        Ok(format!("hmac:{}", hex::encode(&self.vault.keys()?.digest("audit.pseudonym", &[name.as_bytes()])[..12])))
    }

    /// The principal behind a session cookie, if the session and its
    /// account are alive.
    pub fn session_principal(&self, cookie: &str) -> Result<Result<Principal, AuthError>, store::Error> {
        let Some(key) = sessions::key_of(cookie) else { return Ok(Err(AuthError::Malformed)) };
        let now = self.clock.now();
        self.store.read(|tx| {
            let session = match sessions::find(tx, &key, now, self.lifetimes)? {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            let account = match super::sso_people::person(tx, &session.user)? {
                // The provider vouched for the person; for a second factor
                // too, unless the session still waits for the appliance's.
                Some(person) => (person.name, person.role, !sessions::awaits_second_factor(tx, &key)?),
                None => match users::get(tx, &session.user)? {
                    Some(user) if !user.disabled => {
                        let set_up = user.is_set_up(&self.second_factor_roles);
                        (user.name, user.role, set_up)
                    }
                    _ => return Ok(Err(AuthError::Unknown)),
                },
            };
            Ok(Ok(sessions::principal(session, key, account, now, self.lifetimes)))
        })
    }

    /// Records a request on a session (idle expiry) or a token (last used).
    pub async fn note_use(&self, principal: &Principal) -> Result<(), store::Error> {
        let now = self.clock.now();
        match &principal.via {
            super::Via::Session { key, note_use: true, .. } => {
                let key = *key;
                self.store.write(move |tx| sessions::touch(tx, &key, now)).await
            }
            super::Via::Token { id, note_use: true, .. } => {
                let id = id.clone();
                self.store.write(move |tx| super::tokens::note_used(tx, &id, now)).await
            }
            _ => Ok(()),
        }
    }

    /// Logs a person in. Throttled per account and address; every failure
    /// audited under the account's pseudonym; more than five in five
    /// minutes raises an alert.
    pub async fn login(&self, name: &str, credentials: Credentials, origin: &Origin) -> Result<LoggedIn, LoginError> {
        let keys = self.vault.keys()?;
        let now = self.clock.now();
        let pseudonym = self.pseudonym(name)?;
        if let Err(refusal) = self.throttle.check(&pseudonym, origin.source_ip, now) {
            self.record_failure(name, origin, "throttled", false).await?;
            return Err(LoginError::Throttled(refusal));
        }
        let user = self.store.read(|tx| users::get(tx, name))?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            self.burn_a_hash().await;
            self.record_failure(name, origin, "unknown_or_disabled", true).await?;
            return Err(LoginError::Invalid);
        };
        match self.check_password(&user, &credentials.password).await {
            Ok(true) => {}
            Ok(false) => {
                self.record_failure(name, origin, "bad_password", true).await?;
                return Err(LoginError::Invalid);
            }
            Err(e) => return Err(LoginError::Password(e)),
        }
        let second = self.second_factor(&user.name, &user.factors, &credentials, now, &keys)?;
        let totp_step = match second {
            SecondFactor::NotEnrolled => None,
            SecondFactor::Missing => return Err(LoginError::SecondFactorRequired),
            SecondFactor::Wrong => {
                self.record_failure(name, origin, "bad_second_factor", true).await?;
                return Err(LoginError::Invalid);
            }
            accepted @ (SecondFactor::Totp(_) | SecondFactor::Recovery(_)) => accepted.spent(),
        };
        self.throttle.succeeded(&pseudonym);
        let (name_owned, origin) = (name.to_owned(), self.person(origin, &user));
        let (lifetimes, second_factor_roles) = (self.lifetimes, self.second_factor_roles.clone());
        let throttle = self.throttle.clone();
        let (session, cookie, key, user) = self
            .store
            .write(move |tx| {
                crate::auth::throttle::save(tx, throttle.take_changes())?;
                let mut user = users::get_for_update(tx, &name_owned)?;
                consume_second_factor(&mut user.factors, totp_step);
                users::put(tx, &user)?;
                sessions::sweep(tx, now, lifetimes)?;
                let (session, cookie, key) = sessions::start(tx, &name_owned, now, now)?;
                let event = Event::new("auth.login", "login", Resource::new("session", &session.id))
                    .detail("second_factor", second.label())
                    .detail("set_up", user.is_set_up(&second_factor_roles));
                audit::append(tx, now, &origin, event)?;
                Ok::<_, LoginError>((session, cookie, key, user))
            })
            .await?;
        Ok(LoggedIn {
            csrf: self.csrf_token(&key)?,
            set_up: user.is_set_up(&self.second_factor_roles),
            user: UserInfo::from(&user),
            session,
            cookie,
        })
    }

    /// Proves the person again (password and second factor): sensitive
    /// actions are open for the re-authentication window.
    pub async fn reauthenticate(
        &self,
        principal: &Principal,
        credentials: Credentials,
        origin: &Origin,
    ) -> Result<(), LoginError> {
        let super::Via::Session { key, .. } = &principal.via else { return Err(LoginError::Invalid) };
        let keys = self.vault.keys()?;
        let now = self.clock.now();
        let name = principal.name.as_str();
        if let Err(refusal) = self.throttle.check(&self.pseudonym(name)?, origin.source_ip, now) {
            return Err(LoginError::Throttled(refusal));
        }
        let user = self.store.read(|tx| users::get(tx, name))?.ok_or(LoginError::Invalid)?;
        let password_ok = self.check_password(&user, &credentials.password).await.map_err(LoginError::Password)?;
        let second = self.second_factor(&user.name, &user.factors, &credentials, now, &keys)?;
        let step = match second {
            _ if !password_ok => None,
            SecondFactor::NotEnrolled => Some(None),
            SecondFactor::Totp(step) => Some(Some(Ok(step))),
            SecondFactor::Recovery(d) => Some(Some(Err(d))),
            SecondFactor::Missing | SecondFactor::Wrong => None,
        };
        let Some(step) = step else {
            if matches!(second, SecondFactor::Missing) && password_ok {
                return Err(LoginError::SecondFactorRequired);
            }
            self.record_failure(name, origin, "reauthentication_failed", true).await?;
            return Err(LoginError::Invalid);
        };
        let (key, name, origin) = (*key, name.to_owned(), origin.clone());
        self.store
            .write(move |tx| {
                let mut user = users::get_for_update(tx, &name)?;
                consume_second_factor(&mut user.factors, step);
                users::put(tx, &user)?;
                if sessions::reauthenticated(tx, &key, now)? {
                    let event = Event::new("auth.reauthenticated", "reauthenticate", Resource::new("user", &name));
                    audit::append(tx, now, &origin, event)?;
                }
                Ok::<_, LoginError>(())
            })
            .await?;
        Ok(())
    }

    /// Ends the caller's session.
    pub async fn logout(&self, principal: &Principal, origin: &Origin) -> Result<(), store::Error> {
        let super::Via::Session { key, id, .. } = &principal.via else { return Ok(()) };
        let (key, id, origin, now) = (*key, id.clone(), origin.clone(), self.clock.now());
        self.store
            .write(move |tx| {
                if sessions::end(tx, &key)?.is_some() {
                    audit::append(
                        tx,
                        now,
                        &origin,
                        Event::new("auth.logout", "logout", Resource::new("session", &id)),
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Ends every session of `user` (an admin's revocation). Returns how many.
    pub async fn end_sessions(&self, user: &str, origin: &Origin) -> Result<usize, store::Error> {
        let (user, origin, now) = (user.to_owned(), origin.clone(), self.clock.now());
        self.store
            .write(move |tx| {
                let n = sessions::end_all_of(tx, &user)?;
                let event = Event::new("auth.sessions_revoked", "revoke", Resource::new("user", &user))
                    .detail("sessions_ended", n);
                audit::append(tx, now, &origin, event)?;
                Ok(n)
            })
            .await
    }

    /// The person changes their own password (knowing the current one).
    /// Their other sessions end.
    pub async fn change_own_password(
        &self,
        principal: &Principal,
        current: Zeroizing<String>,
        new: Zeroizing<String>,
        origin: &Origin,
    ) -> Result<(), AccountError> {
        let name = principal.name.clone();
        let user = self.store.read(|tx| users::get(tx, &name))?.ok_or(UserError::NotFound)?;
        if !self.check_password(&user, &current).await? {
            self.record_failure(&name, origin, "bad_current_password", true).await?;
            return Err(AccountError::WrongPassword);
        }
        if crate::auth::password::check_strength(&name, &new).is_ok() && self.check_password(&user, &new).await? {
            return Err(AccountError::Password(PasswordError::Reused));
        }
        let hash = self.hash(&name, new).await?;
        let keep = match &principal.via {
            super::Via::Session { key, .. } => Some(*key),
            super::Via::Token { .. } => None,
        };
        let (origin, now) = (origin.clone(), self.clock.now());
        self.store.write(move |tx| users::set_password(tx, now, &origin, &name, hash, false, keep.as_ref())).await?;
        Ok(())
    }

    /// Creates an account. Without a password, one is generated and
    /// returned (to hand over once); either way it must be changed at the
    /// first login.
    pub async fn add_user(
        &self,
        by: &str,
        name: &str,
        role: Role,
        password: Option<Zeroizing<String>>,
        origin: &Origin,
    ) -> Result<(UserInfo, Option<Zeroizing<String>>), AccountError> {
        users::check_name(name)?;
        let (password, generated) = given_or_generated(password)?;
        let hash = self.hash(name, password).await?;
        let (owned, by, origin, now) = (name.to_owned(), by.to_owned(), origin.clone(), self.clock.now());
        let user = self.store.write(move |tx| users::add(tx, now, &origin, &by, &owned, role, hash)).await?;
        Ok((UserInfo::from(&user), generated))
    }

    /// An admin sets someone's password (which they must change at their
    /// next login); without one, one is generated and returned. Their
    /// sessions end.
    pub async fn reset_password(
        &self,
        name: &str,
        password: Option<Zeroizing<String>>,
        origin: &Origin,
    ) -> Result<Option<Zeroizing<String>>, AccountError> {
        let (password, generated) = given_or_generated(password)?;
        let hash = self.hash(name, password).await?;
        let (owned, origin, now) = (name.to_owned(), origin.clone(), self.clock.now());
        self.store.write(move |tx| users::set_password(tx, now, &origin, &owned, hash, true, None)).await?;
        Ok(generated)
    }

    pub async fn request_role(
        &self,
        by: &str,
        target: &str,
        role: Role,
        origin: &Origin,
    ) -> Result<RoleChange, UserError> {
        let (by, target, origin, now) = (by.to_owned(), target.to_owned(), origin.clone(), self.clock.now());
        self.store.write(move |tx| roles::request_role(tx, now, &origin, &by, &target, role)).await
    }

    pub async fn approve_role(&self, by: &str, target: &str, origin: &Origin) -> Result<Role, UserError> {
        let (by, target, origin, now) = (by.to_owned(), target.to_owned(), origin.clone(), self.clock.now());
        self.store.write(move |tx| roles::approve_role(tx, now, &origin, &by, &target)).await
    }

    pub async fn disable(&self, by: &str, target: &str, origin: &Origin) -> Result<(), UserError> {
        let (by, target, origin, now) = (by.to_owned(), target.to_owned(), origin.clone(), self.clock.now());
        self.store.write(move |tx| roles::disable(tx, now, &origin, &by, &target)).await
    }

    /// Every account: local ones, then people who signed in through the
    /// identity provider (`created_by: "sso"`, role as of their last sign-in).
    pub fn list(&self) -> Result<Vec<UserInfo>, store::Error> {
        self.store.read(|tx| {
            let local = users::list(tx)?.iter().map(UserInfo::from).collect::<Vec<_>>();
            let federated = super::sso_people::people(tx)?
                .iter()
                .map(|p| {
                    let second_factor = super::sso_people::has_second_factor(tx, &p.name)?;
                    Ok(UserInfo { second_factor, ..UserInfo::from(p) })
                })
                .collect::<Result<Vec<_>, store::Error>>()?;
            Ok([local, federated].concat())
        })
    }

    /// Live sessions (everyone's, or `user`'s), oldest first.
    pub fn sessions(&self, user: Option<&str>) -> Result<Vec<Session>, store::Error> {
        self.store.read(|tx| sessions::list(tx, user, self.clock.now(), self.lifetimes))
    }

    /// The session stored under `key`, if it is alive. Reading it does not
    /// keep it alive (a stream checks with this and ends with its session).
    pub fn live_session(&self, key: &[u8; 32]) -> Result<Option<Session>, store::Error> {
        let now = self.clock.now();
        Ok(self.store.read(|tx| sessions::find(tx, key, now, self.lifetimes))?.ok())
    }

    /// The origin of a person's request, naming them.
    fn person(&self, origin: &Origin, user: &User) -> Origin {
        Origin {
            actor: Actor { kind: ActorKind::User, id: user.name.clone(), roles: vec![user.role.to_string()] },
            ..origin.clone()
        }
    }

    /// Audits a failure under the account's pseudonym; `counts` feeds the
    /// throttle (and may raise the failed-logins alert in the same write).
    async fn record_failure(
        &self,
        name: &str,
        origin: &Origin,
        reason: &'static str,
        counts: bool,
    ) -> Result<(), store::Error> {
        let now = self.clock.now();
        let pseudonym = self.pseudonym(name).unwrap_or_else(|_| "hmac:unavailable".into());
        let after = if counts { self.throttle.failed(&pseudonym, origin.source_ip, now) } else { Default::default() };
        let address = origin.source_ip.map_or_else(|| "-".to_owned(), |ip: IpAddr| ip.to_string());
        let event = Event::new("auth.login_failed", "login", Resource::new("user", &pseudonym))
            .outcome(Outcome::Failure)
            .detail("reason", reason);
        self.failures.note(origin.clone(), event).await;
        if !counts {
            return Ok(());
        }
        let (origin, throttle) = (origin.clone(), self.throttle.clone());
        self.store
            .write(move |tx| {
                // The count is stored with what it caused, so a restart
                // forgives no one.
                crate::auth::throttle::save(tx, throttle.take_changes())?;
                if after.locked {
                    let event = Event::new("auth.locked_out", "lock", Resource::new("user", &pseudonym))
                        .outcome(Outcome::Denied)
                        .detail("source_ip", &address);
                    audit::append(tx, now, &origin, event)?;
                }
                if after.alert {
                    let details = [
                        ("account", pseudonym.clone()),
                        ("source_ip", address.clone()),
                        ("failures_in_5m", after.recent.to_string()),
                    ];
                    audit::alerts::raise(tx, now, "failed_logins", &address, &details)?;
                }
                if let Some(site) = after.site_alert {
                    let details = [
                        ("failures_in_5m", site.failures.to_string()),
                        ("accounts", site.accounts.to_string()),
                        ("addresses", site.addresses.to_string()),
                    ];
                    audit::alerts::raise(tx, now, "failed_logins", crate::auth::throttle::APPLIANCE_WIDE, &details)?;
                }
                Ok(())
            })
            .await
    }
}

/// The password an admin gave, or a generated one (returned too, to be
/// handed over once).
fn given_or_generated(
    given: Option<Zeroizing<String>>,
) -> Result<(Zeroizing<String>, Option<Zeroizing<String>>), vault::Error> {
    match given {
        Some(p) => Ok((p, None)),
        None => {
            let p = crate::auth::password::generate()?;
            Ok((p.clone(), Some(p)))
        }
    }
}

impl From<UserError> for LoginError {
    /// Signing in reads one account: it is there, or was removed meanwhile
    /// (then the credentials are as wrong as for no account at all).
    fn from(e: UserError) -> Self {
        match e {
            UserError::Store(e) => LoginError::Store(e),
            UserError::NotFound
            | UserError::BadName
            | UserError::Exists
            | UserError::WorkerRole
            | UserError::OwnAccount
            | UserError::LastSecurityOfficer
            | UserError::NotASecondOfficer
            | UserError::NothingPending => LoginError::Invalid,
        }
    }
}
