//! How an account's credentials are checked: password hashing (bounded,
//! off the async threads, and as slow for an unknown name) and the second
//! factor (a TOTP step or a one-time recovery code).

use std::sync::OnceLock;

use zeroize::Zeroizing;

use super::{AccountError, Accounts, Credentials};
use crate::auth::factors::{self, Factors};
use crate::auth::password::{PasswordError, PasswordHash};
use crate::auth::sso_people::{self, NAME_PREFIX};
use crate::auth::totp::{self, TotpSecret};
use crate::auth::users::User;
use crate::auth::users::{self, UserError};
use crate::vault;

impl Accounts {
    pub(super) async fn hash(&self, name: &str, password: Zeroizing<String>) -> Result<PasswordHash, AccountError> {
        crate::auth::password::check_strength(name, &password)?;
        let _permit = self.hashing.acquire().await.map_err(|_| PasswordError::Failed)?;
        let (policy, name) = (self.policy, name.to_owned());
        let hash = tokio::task::spawn_blocking(move || PasswordHash::new(policy, &name, &password))
            .await
            .map_err(|_| PasswordError::Failed)??;
        Ok(hash)
    }

    pub(super) async fn check_password(
        &self,
        user: &User,
        password: &Zeroizing<String>,
    ) -> Result<bool, PasswordError> {
        let _permit = self.hashing.acquire().await.map_err(|_| PasswordError::Failed)?;
        let (policy, hash, password) = (self.policy, user.password.clone(), password.clone());
        tokio::task::spawn_blocking(move || hash.verify(policy, &password)).await.map_err(|_| PasswordError::Failed)?
    }

    /// Spends the time a password check would, so an unknown name cannot be
    /// told from a wrong password by the clock.
    pub(super) async fn burn_a_hash(&self) {
        static DUMMY: OnceLock<Option<PasswordHash>> = OnceLock::new();
        let policy = self.policy;
        let Ok(_permit) = self.hashing.acquire().await else { return };
        let _ = tokio::task::spawn_blocking(move || {
            let dummy = DUMMY.get_or_init(|| PasswordHash::new(policy, "-", "not a real password at all").ok());
            dummy.as_ref().map(|d| d.verify(policy, "another wrong password"))
        })
        .await;
    }

    /// Checks the second factor `credentials` carry against `name`'s `factors`.
    pub(super) fn second_factor(
        &self,
        name: &str,
        factors: &Factors,
        credentials: &Credentials,
        now: tether_base::clock::Timestamp,
        keys: &vault::Keys,
    ) -> Result<SecondFactor, vault::Error> {
        let Some(sealed) = &factors.totp else { return Ok(SecondFactor::NotEnrolled) };
        if let Some(code) = &credentials.totp {
            let plain = Zeroizing::new(keys.decrypt(factors::place(factors_home(name), name, "totp"), sealed)?);
            let secret = TotpSecret::from_bytes(plain.to_vec());
            return Ok(match secret.matching_step(code, now, factors.totp_last_step) {
                Some(step) => SecondFactor::Totp(step),
                None => SecondFactor::Wrong,
            });
        }
        if let Some(code) = &credentials.recovery_code {
            let digest = recovery_digest(keys, name, code);
            let known = factors.recovery.iter().any(|d| tether_base::secret::digests_equal(d, &digest));
            return Ok(if known { SecondFactor::Recovery(digest) } else { SecondFactor::Wrong });
        }
        Ok(SecondFactor::Missing)
    }
}

/// Which second factor a request carried, and whether it was right.
#[derive(Debug, Clone, Copy)]
pub(super) enum SecondFactor {
    NotEnrolled,
    Missing,
    Wrong,
    Totp(u64),
    Recovery([u8; 32]),
}

impl SecondFactor {
    pub(super) fn label(&self) -> &'static str {
        match self {
            SecondFactor::NotEnrolled => "none",
            SecondFactor::Missing | SecondFactor::Wrong => "failed",
            SecondFactor::Totp(_) => "totp",
            SecondFactor::Recovery(_) => "recovery_code",
        }
    }

    /// What an accepted factor uses up (see [`consume_second_factor`]).
    pub(super) fn spent(self) -> Option<Result<u64, [u8; 32]>> {
        match self {
            SecondFactor::Totp(step) => Some(Ok(step)),
            SecondFactor::Recovery(digest) => Some(Err(digest)),
            SecondFactor::NotEnrolled | SecondFactor::Missing | SecondFactor::Wrong => None,
        }
    }
}

/// Marks the accepted TOTP step, or uses up the recovery code.
pub(super) fn consume_second_factor(factors: &mut Factors, used: Option<Result<u64, [u8; 32]>>) {
    match used {
        Some(Ok(step)) => factors.totp_last_step = Some(step),
        Some(Err(digest)) => factors.recovery.retain(|d| !tether_base::secret::digests_equal(d, &digest)),
        None => {}
    }
}

pub(super) fn recovery_digest(keys: &vault::Keys, name: &str, code: &str) -> [u8; 32] {
    keys.digest("auth.recovery_code", &[name.as_bytes(), totp::normalise_recovery_code(code).as_bytes()])
}

/// The collection that keeps `name`'s second factor.
pub(super) fn factors_home(name: &str) -> &'static str {
    if name.starts_with(NAME_PREFIX) { sso_people::FACTORS_HOME } else { users::FACTORS_HOME }
}

/// `name`'s second factor, wherever the account keeps it; `None` if there
/// is no such person (or the account is disabled).
pub(super) fn factors_of(mut tx: impl tether_store::Reads, name: &str) -> Result<Option<Factors>, tether_store::Error> {
    if name.starts_with(NAME_PREFIX) {
        return sso_people::factors(tx, name);
    }
    Ok(users::get(&mut tx, name)?.filter(|u| !u.disabled).map(|u| u.factors))
}

/// Stores `name`'s second factor where the account keeps it.
pub(super) fn put_factors(tx: &mut tether_store::WriteTx<'_>, name: &str, factors: Factors) -> Result<(), UserError> {
    if name.starts_with(NAME_PREFIX) {
        return Ok(sso_people::put_factors(tx, name, &factors)?);
    }
    let mut user = users::get_for_update(tx, name)?;
    user.factors = factors;
    Ok(users::put(tx, &user)?)
}
