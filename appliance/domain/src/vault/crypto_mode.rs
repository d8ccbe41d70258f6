//! The crypto mode this data directory runs in, kept in the store. It is
//! chosen at `init` and changed only through [`super::Vault::change_crypto_mode`]
//! (a re-authenticated officer), and takes effect at the next start.

use zeroize::Zeroizing;

use super::keyring;
use super::unseal::{self, Choice, Method};
use super::{Credential, Error, Vault, refusal_for, unseal_key_from};
use crate::audit::{self, Event, Origin, Outcome, Resource};
use tether_base::crypto::{CryptoPolicy, Mode};
use tether_store::{self as store, Collection, ReadTx, WriteTx};

/// The mode the appliance runs in (absent: standard).
const POLICY: Collection<Mode> = Collection::new("crypto_policy");
const MODE_KEY: &[u8] = b"mode";

/// The policy stored in this data directory.
pub fn stored(tx: &ReadTx) -> Result<CryptoPolicy, tether_store::Error> {
    Ok(CryptoPolicy { mode: tx.get(POLICY, MODE_KEY)?.unwrap_or_default() })
}

/// Records the mode; it takes effect at the next start.
pub fn store_mode(tx: &mut WriteTx<'_>, mode: Mode) -> Result<(), tether_store::Error> {
    tx.put(POLICY, MODE_KEY, &mode)
}

impl Vault {
    /// The mode stored in this data directory (the running one, or the one
    /// an officer switched to, taking effect at the next start).
    pub fn stored_crypto_mode(&self) -> Result<Mode, store::Error> {
        Ok(self.store.read(stored)?.mode)
    }

    /// Checks the unseal credentials again (`current`): the
    /// re-authentication a drastic change needs from someone already
    /// signed in.
    async fn reauthenticate(&self, current: Vec<Credential>) -> Result<Reauthenticated, Error> {
        let _one_at_a_time = self.attempts.lock().await;
        let meta = self.store.read(keyring::meta)?.ok_or(Error::NotInitialised)?;
        let passphrase = current.iter().find_map(|c| match c {
            Credential::Passphrase(p) => Some(p.clone()),
            _ => None,
        });
        let unseal_key = unseal_key_from(&meta.method, current).await?;
        if !keyring::opens_root(&meta, &unseal_key) {
            return Err(refusal_for(&meta.method));
        }
        Ok(Reauthenticated { passphrase })
    }

    /// Switches the crypto mode (from the next start) for a caller who
    /// gives the unseal credentials again (`current`), unless `blocker`
    /// finds something the new mode's policy does not allow (it answers
    /// why). Returns the mode it replaced. Audited, refusals included: a
    /// refusal whose record cannot be written fails with the store's error.
    pub async fn change_crypto_mode(
        &self,
        origin: &Origin,
        current: Vec<Credential>,
        to: tether_base::crypto::Mode,
        blocker: impl FnOnce(&ReadTx, tether_base::crypto::CryptoPolicy) -> Result<Option<String>, store::Error>,
    ) -> Result<tether_base::crypto::Mode, Error> {
        let attempt = async {
            let proof = self.reauthenticate(current).await?;
            let policy = tether_base::crypto::CryptoPolicy { mode: to };
            if let Some(why) = self.store.read(|tx| blocker(tx, policy))? {
                return Err(Error::NotAllowedInMode(why));
            }
            self.switch_crypto_mode(origin, proof, to).await
        };
        let refused = match attempt.await {
            Ok(from) => return Ok(from),
            Err(e) => e,
        };
        let event = Event::new("crypto.mode_change_refused", "change", Resource::new("crypto_policy", "mode"))
            .outcome(Outcome::Denied)
            .detail("to", to.as_str())
            .detail("reason", refused.reason());
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| audit::append(tx, now, &origin, event)).await?;
        Err(refused)
    }

    /// Switches the crypto mode for a re-authenticated caller. A passphrase
    /// wrapped with a KDF the new mode does not allow (Argon2id, going to
    /// FIPS) is re-wrapped with the one it does, from the same passphrase,
    /// in the same transaction.
    async fn switch_crypto_mode(
        &self,
        origin: &Origin,
        proof: Reauthenticated,
        to: tether_base::crypto::Mode,
    ) -> Result<tether_base::crypto::Mode, Error> {
        let _one_at_a_time = self.attempts.lock().await;
        let ring = self.keys()?.0;
        let meta = self.store.read(keyring::meta)?.ok_or(Error::NotInitialised)?;
        let policy = tether_base::crypto::CryptoPolicy { mode: to };
        let rewrapped = match (&meta.method, proof.passphrase) {
            (method @ Method::Passphrase { .. }, Some(p)) if method.check(policy).is_err() => {
                let (method, key, _) =
                    tokio::task::spawn_blocking(move || unseal::prepare(policy, Choice::Passphrase(p)))
                        .await
                        .map_err(|_| Error::Corrupt("the key derivation stopped"))??;
                Some(keyring::VaultMeta { method, root: ring.seal_root(&key)?, created_at: meta.created_at })
            }
            _ => None,
        };
        let from = self.store.read(stored)?.mode;
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store
            .write(move |tx| {
                let mut event = Event::new("crypto.mode_changed", "change", Resource::new("crypto_policy", "mode"))
                    .detail("from", from.as_str())
                    .detail("to", to.as_str());
                if let Some(new_meta) = &rewrapped {
                    tx.put(keyring::META, keyring::META_KEY, new_meta)?;
                    event = event.detail("passphrase_kdf", "rewrapped");
                }
                store_mode(tx, to)?;
                audit::append(tx, now, &origin, event)?;
                Ok::<_, Error>(())
            })
            .await?;
        tracing::info!(from = from.as_str(), to = to.as_str(), "crypto mode changed; takes effect at the next start");
        Ok(from)
    }
}

/// Proof that a caller gave the unseal credentials again just now (and the
/// passphrase, if that is how the vault unseals, for a re-wrap).
pub struct Reauthenticated {
    passphrase: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Reauthenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reauthenticated(****)")
    }
}

impl Error {
    /// A refusal's reason, as its audit record names it.
    fn reason(&self) -> &'static str {
        match self {
            Error::WrongPassphrase
            | Error::WrongKeyFile
            | Error::NotAKeyFile
            | Error::Share(_)
            | Error::ShareFromAnotherSet { .. }
            | Error::DuplicateShare { .. }
            | Error::SharesDoNotOpen
            | Error::QuorumNeeded
            | Error::WrongMethod { .. } => "unseal_refused",
            Error::NotAllowedInMode(_) => "key_not_approved",
            Error::Sealed => "sealed",
            Error::NotInitialised
            | Error::AlreadyInitialised
            | Error::WeakPassphrase
            | Error::BadShareSetup
            | Error::Integrity { .. }
            | Error::UnknownKeyVersion(_)
            | Error::KeyExhausted
            | Error::Corrupt(_)
            | Error::Random
            | Error::Store(_) => "failed",
        }
    }
}
