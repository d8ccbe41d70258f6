//! Local accounts: who they are, their role, their credentials, and the
//! separation-of-duties rule for the security officer role.
//!
//! Everything here runs inside a store transaction; the slow password hash
//! and the vault's sealing happen before (see [`super::Accounts`]).

use serde::{Deserialize, Serialize};

use super::Role;
use super::factors::Factors;
use super::password::PasswordHash;
use crate::audit::{self, Event, Origin, Resource};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by the account name.
const USERS: Collection<User> = Collection::new(FACTORS_HOME);
/// The collection local accounts' second factors are sealed in (their own).
pub const FACTORS_HOME: &str = "users";

/// A person's account. Never holds a secret in the clear: the password is a
/// slow hash, the TOTP secret is sealed, recovery codes are keyed digests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub password: PasswordHash,
    /// Set when someone else chose the password (creation, reset): the
    /// person must choose their own before doing anything else.
    pub must_change_password: bool,
    /// The second factor. Nested, it encodes as the four fields it
    /// replaced did, so stored accounts read as before.
    pub factors: Factors,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub created_by: String,
    /// A role change waiting for a security officer's approval.
    pub pending_role: Option<RoleRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRequest {
    pub role: Role,
    pub requested_by: String,
    pub requested_at: Timestamp,
}

impl User {
    /// Whether the account is fully set up (or only allowed to finish it):
    /// its own password, and a second factor if its role is one of
    /// `second_factor_roles` (`mfa_required_roles`).
    pub fn is_set_up(&self, second_factor_roles: &[Role]) -> bool {
        !self.must_change_password && (self.factors.totp.is_some() || !second_factor_roles.contains(&self.role))
    }
}

/// What a person sees of an account (never a credential).
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub second_factor: bool,
    pub must_change_password: bool,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    pub created_at: Timestamp,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_role: Option<Role>,
}

impl From<&User> for UserInfo {
    fn from(u: &User) -> UserInfo {
        UserInfo {
            name: u.name.clone(),
            role: u.role,
            disabled: u.disabled,
            second_factor: u.factors.totp.is_some(),
            must_change_password: u.must_change_password,
            created_at: u.created_at,
            created_by: u.created_by.clone(),
            pending_role: u.pending_role.as_ref().map(|r| r.role),
        }
    }
}

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user name is 1-64 characters of a-z, 0-9, '.', '_', '-', '@'")]
    BadName,
    #[error("a user with that name exists")]
    Exists,
    #[error("no such user")]
    NotFound,
    #[error("workers are machines: they enroll with a certificate and have no account")]
    WorkerRole,
    #[error("you cannot change your own role or disable your own account")]
    OwnAccount,
    #[error("that would leave no security officer")]
    LastSecurityOfficer,
    #[error("a second security officer must approve this: not the one who asked, nor the person it concerns")]
    NotASecondOfficer,
    #[error("no role change is waiting for approval")]
    NothingPending,
    #[error(transparent)]
    Store(#[from] store::Error),
}

pub fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok { Ok(()) } else { Err(UserError::BadName) }
}

pub fn get(mut tx: impl store::Reads, name: &str) -> Result<Option<User>, store::Error> {
    tx.get(USERS, name.as_bytes())
}

pub fn get_for_update(tx: &mut WriteTx<'_>, name: &str) -> Result<User, UserError> {
    tx.get(USERS, name.as_bytes())?.ok_or(UserError::NotFound)
}

pub fn put(tx: &mut WriteTx<'_>, user: &User) -> Result<(), store::Error> {
    tx.put(USERS, user.name.as_bytes(), user)
}

pub fn list(tx: &ReadTx) -> Result<Vec<User>, store::Error> {
    tx.values(USERS)
}

/// Seals people's TOTP secrets again under the current data key where an
/// older one sealed them; says how many moved.
pub fn refresh_seals(tx: &mut WriteTx<'_>, keys: &crate::vault::Keys) -> Result<usize, crate::vault::Error> {
    let mut moved = 0;
    for mut user in tx.values(USERS)? {
        let n = user.factors.refresh_seals(FACTORS_HOME, &user.name, keys)?;
        if n > 0 {
            moved += n;
            put(tx, &user)?;
        }
    }
    Ok(moved)
}

/// Whether any account exists (the first admin is made by `init`).
pub fn any(tx: &ReadTx) -> Result<bool, store::Error> {
    let mut found = false;
    tx.scan(USERS, None, Order::Ascending, |_, _: User| {
        found = true;
        Ok(false)
    })?;
    Ok(found)
}

/// The enabled security officers' names.
pub(super) fn active_officers(tx: &mut WriteTx<'_>) -> Result<Vec<String>, store::Error> {
    let users: Vec<User> = tx.values(USERS)?;
    Ok(users.into_iter().filter(|u| u.role == Role::SecurityOfficer && !u.disabled).map(|u| u.name).collect())
}

/// Creates an account whose password the person must change at first login.
/// Asking for `security_officer` while officers exist creates the account
/// as `viewer` with the role pending a second officer's approval.
pub fn add(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    by: &str,
    name: &str,
    role: Role,
    password: PasswordHash,
) -> Result<User, UserError> {
    check_name(name)?;
    if role == Role::Worker {
        return Err(UserError::WorkerRole);
    }
    if tx.get(USERS, name.as_bytes())?.is_some() {
        return Err(UserError::Exists);
    }
    let requester = by.to_owned();
    let needs_approval = role == Role::SecurityOfficer && !active_officers(tx)?.is_empty();
    let user = User {
        name: name.into(),
        role: if needs_approval { Role::Viewer } else { role },
        password,
        must_change_password: true,
        factors: Factors::default(),
        disabled: false,
        created_at: now,
        created_by: requester.clone(),
        pending_role: needs_approval.then_some(RoleRequest { role, requested_by: requester, requested_at: now }),
    };
    put(tx, &user)?;
    let mut event = Event::new("user.created", "create", Resource::new("user", name)).detail("role", user.role);
    if needs_approval {
        event = event.detail("pending_role", role);
    }
    audit::append(tx, now, origin, event)?;
    Ok(user)
}

/// Sets a password chosen by someone else (`must_change`) or by the
/// person themselves. Other sessions of the person end.
pub fn set_password(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    target: &str,
    password: PasswordHash,
    must_change: bool,
    keep_session: Option<&[u8; 32]>,
) -> Result<(), UserError> {
    let mut user = get_for_update(tx, target)?;
    user.password = password;
    user.must_change_password = must_change;
    put(tx, &user)?;
    let ended = super::sessions::end_all_of_except(tx, target, keep_session)?;
    let action = if must_change { "reset" } else { "change" };
    let event =
        Event::new("user.password_changed", action, Resource::new("user", target)).detail("sessions_ended", ended);
    audit::append(tx, now, origin, event)?;
    Ok(())
}

/// Test support: an account `name` with `role`, made by the system.
#[cfg(test)]
pub fn add_for_test(tx: &mut WriteTx<'_>, name: &str, role: Role) -> Result<User, UserError> {
    let password = PasswordHash::new(tether_base::crypto::CryptoPolicy::STANDARD, name, "a test password of length")
        .map_err(|_| UserError::BadName)?;
    let origin = Origin::system();
    let user = add(tx, Timestamp::from_millis(0), &origin, "tether", name, role, password)?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Sealed;

    /// An account as stores made before `Factors` hold it.
    #[derive(Serialize)]
    struct Before {
        name: String,
        role: Role,
        password: PasswordHash,
        must_change_password: bool,
        totp: Option<Sealed>,
        totp_last_step: Option<u64>,
        totp_pending: Option<Sealed>,
        recovery: Vec<[u8; 32]>,
        disabled: bool,
        created_at: Timestamp,
        created_by: String,
        pending_role: Option<RoleRequest>,
    }

    #[test]
    fn accounts_stored_before_factors_were_nested_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = tether_store::Store::create(dir.path()).unwrap();
        let password =
            PasswordHash::new(tether_base::crypto::CryptoPolicy::STANDARD, "ada", "a test password of length").unwrap();
        let before = Before {
            name: "ada".into(),
            role: Role::Admin,
            password,
            must_change_password: false,
            totp: Some(Sealed::from_bytes(vec![7; 40])),
            totp_last_step: Some(42),
            totp_pending: None,
            recovery: vec![[9; 32]],
            disabled: false,
            created_at: Timestamp::from_millis(5),
            created_by: "tether".into(),
            pending_role: None,
        };
        const OLD: Collection<Before> = Collection::new("users");
        store.write_blocking(move |tx| tx.put(OLD, b"ada", &before)).unwrap();
        let user = store.read(|tx| get(tx, "ada")).unwrap().unwrap();
        assert_eq!((user.factors.totp_last_step, user.factors.recovery.len()), (Some(42), 1));
        assert_eq!(user.factors.totp.unwrap().as_bytes(), &[7; 40][..]);
        assert_eq!((user.created_by.as_str(), user.created_at), ("tether", Timestamp::from_millis(5)));
    }
}
