//! A person's second factor: enrolling TOTP (the secret sealed where the
//! account keeps it, confirmed with a code, recovery codes handed out once),
//! and giving it to a session that waits for it (a single sign-on whose
//! provider vouched for none).

use zeroize::Zeroizing;

use super::credentials::{SecondFactor, consume_second_factor, factors_home, factors_of, put_factors, recovery_digest};
use super::{AccountError, Accounts, Credentials, LoginError};
use crate::audit::{self, Event, Origin, Resource};
use crate::auth::Principal;
use crate::auth::factors::{self, Factors};
use crate::auth::sessions;
use crate::auth::totp::{self, TotpSecret};
use crate::auth::users::UserError;
use crate::vault;
use tether_store as store;

impl Accounts {
    /// Hands out a new TOTP secret for the person to load into an app;
    /// it takes effect once confirmed with a code.
    pub async fn begin_totp(&self, name: &str) -> Result<(Zeroizing<String>, Zeroizing<String>), AccountError> {
        let keys = self.vault.keys()?;
        let secret = TotpSecret::random().map_err(vault::Error::from)?;
        let sealed = keys.encrypt(factors::place(factors_home(name), name, "totp_pending"), secret.as_bytes())?;
        let owned = name.to_owned();
        self.store
            .write(move |tx| {
                let mut held = factors_of(&mut *tx, &owned)?.ok_or(UserError::NotFound)?;
                held.totp_pending = Some(sealed);
                put_factors(tx, &owned, held)
            })
            .await?;
        Ok((secret.base32(), secret.uri("Tether", name)))
    }

    /// Confirms the pending TOTP secret with a code from the app; returns
    /// fresh recovery codes (shown once; the old ones stop working). The
    /// code is a second factor presented: a session waiting for one
    /// (`session`) has it.
    pub async fn confirm_totp(
        &self,
        name: &str,
        code: &str,
        session: Option<[u8; 32]>,
        origin: &Origin,
    ) -> Result<Vec<Zeroizing<String>>, AccountError> {
        let keys = self.vault.keys()?;
        let now = self.clock.now();
        let held = self.store.read(|tx| factors_of(tx, name))?.ok_or(UserError::NotFound)?;
        let pending = held.totp_pending.as_ref().ok_or(AccountError::NoTotpPending)?;
        let plain = Zeroizing::new(keys.decrypt(factors::place(factors_home(name), name, "totp_pending"), pending)?);
        let secret = TotpSecret::from_bytes(plain.to_vec());
        let Some(step) = secret.matching_step(code, now, None) else {
            self.record_failure(name, origin, "bad_totp_setup_code", false).await?;
            return Err(AccountError::WrongCode);
        };
        let sealed = keys.encrypt(factors::place(factors_home(name), name, "totp"), secret.as_bytes())?;
        let codes = totp::recovery_codes().map_err(vault::Error::from)?;
        let digests = codes.iter().map(|c| recovery_digest(&keys, name, c)).collect::<Vec<_>>();
        let (owned, origin) = (name.to_owned(), origin.clone());
        self.store
            .write(move |tx| {
                let enrolled =
                    Factors { totp: Some(sealed), totp_pending: None, totp_last_step: Some(step), recovery: digests };
                put_factors(tx, &owned, enrolled)?;
                if let Some(key) = session {
                    sessions::second_factor_given(tx, &key)?;
                }
                let event = Event::new("user.second_factor_enrolled", "enroll", Resource::new("user", &owned));
                audit::append(tx, now, &origin, event)?;
                Ok::<_, UserError>(())
            })
            .await?;
        Ok(codes)
    }

    /// The appliance's own second factor, for a session waiting for one (a
    /// single sign-on whose provider vouched for none): a TOTP code or a
    /// recovery code. Throttled and audited like a login.
    pub async fn give_second_factor(
        &self,
        principal: &Principal,
        credentials: Credentials,
        origin: &Origin,
    ) -> Result<(), LoginError> {
        let crate::auth::Via::Session { key, .. } = &principal.via else {
            return Err(LoginError::NoSecondFactorPending);
        };
        let keys = self.vault.keys()?;
        let now = self.clock.now();
        let name = principal.name.as_str();
        let pseudonym = self.pseudonym(name)?;
        if let Err(refusal) = self.throttle.check(&pseudonym, origin.source_ip, now) {
            return Err(LoginError::Throttled(refusal));
        }
        let (pending, held) = self
            .store
            .read(|tx| Ok::<_, store::Error>((sessions::awaits_second_factor(tx, key)?, factors_of(tx, name)?)))?;
        if !pending {
            return Err(LoginError::NoSecondFactorPending);
        }
        let held = held.ok_or(LoginError::Invalid)?;
        let used = match self.second_factor(name, &held, &credentials, now, &keys)? {
            SecondFactor::NotEnrolled => return Err(LoginError::NotEnrolled),
            SecondFactor::Missing => return Err(LoginError::SecondFactorRequired),
            SecondFactor::Wrong => {
                self.record_failure(name, origin, "bad_second_factor", true).await?;
                return Err(LoginError::Invalid);
            }
            used @ (SecondFactor::Totp(_) | SecondFactor::Recovery(_)) => used,
        };
        self.throttle.succeeded(&pseudonym);
        let step = used.spent();
        let (key, name, origin, throttle) = (*key, name.to_owned(), origin.clone(), self.throttle.clone());
        self.store
            .write(move |tx| {
                crate::auth::throttle::save(tx, throttle.take_changes())?;
                let mut held = factors_of(&mut *tx, &name)?.ok_or(UserError::NotFound)?;
                consume_second_factor(&mut held, step);
                put_factors(tx, &name, held)?;
                sessions::second_factor_given(tx, &key)?;
                let event = Event::new("auth.second_factor", "verify", Resource::new("user", &name))
                    .detail("second_factor", used.label());
                audit::append(tx, now, &origin, event)?;
                Ok::<_, UserError>(())
            })
            .await
            .map_err(|e| match e {
                UserError::Store(s) => LoginError::Store(s),
                _ => LoginError::Invalid,
            })
    }
}
