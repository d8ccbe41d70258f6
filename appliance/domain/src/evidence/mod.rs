//! The audit log as evidence outside the appliance: the audit signing key
//! (sealed in the vault), signed checkpoints of the chain's head, sealed
//! exports and their offline verification, and retention, which moves old
//! records into signed segments with the chain anchored across the cut.
//!
//! Above the vault, which itself writes to the audit log; the log (`audit`)
//! knows nothing of keys.

pub mod checkpoints;
pub mod offline;
pub mod retention;
pub mod signing;

use std::sync::Arc;

use crate::audit::{self, Verified, VerifyError};
use crate::vault::{self, Vault};
use signing::SigningError;
use tether_base::clock::SharedClock;
use tether_store::{self as store, Store};

/// The audit log's evidence as the API hands it out: the chain verified,
/// the sealed export, the public key to check both with. The walks over the
/// whole log run on a blocking thread.
#[derive(Debug)]
pub struct Evidence {
    store: Store,
    vault: Arc<Vault>,
    clock: SharedClock,
    /// The head the last walk in this process verified. Only this process
    /// writes the store while it runs, and only at the end of the chain, so
    /// a later walk may start there ([`Evidence::verify_new`]).
    verified: std::sync::Mutex<Option<audit::Head>>,
}

/// What a walk of the chain found.
#[derive(Debug)]
pub enum Verdict {
    Intact(Verified),
    /// The first break (an edit, a deletion, a swap or a cut tail).
    Broken(VerifyError),
}

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("the walk over the audit log stopped: {0}")]
    Stopped(#[source] tokio::task::JoinError),
}

impl Evidence {
    pub fn new(store: Store, vault: Arc<Vault>, clock: SharedClock) -> Evidence {
        Evidence { store, vault, clock, verified: std::sync::Mutex::new(None) }
    }

    /// Walks the whole chain from its first record to the stored head.
    pub async fn verify(&self) -> Result<Verdict, EvidenceError> {
        self.walk(None).await
    }

    /// Walks what was appended since the last walk in this process (the
    /// whole chain the first time): the security check's, which runs often
    /// and must stay fast on a long chain. `records` counts those walked.
    pub async fn verify_new(&self) -> Result<Verdict, EvidenceError> {
        let from = *self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.walk(from).await
    }

    async fn walk(&self, from: Option<audit::Head>) -> Result<Verdict, EvidenceError> {
        let store = self.store.clone();
        let walked = tokio::task::spawn_blocking(move || store.read(|tx| audit::verify_from(tx, from)))
            .await
            .map_err(EvidenceError::Stopped)?;
        match walked {
            Ok(verified) => {
                *self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = verified.head;
                Ok(Verdict::Intact(verified))
            }
            Err(VerifyError::Store(e)) => Err(e.into()),
            Err(broken) => Ok(Verdict::Broken(broken)),
        }
    }

    /// The log from record `from` as JSON lines, ending with a seal signed
    /// by the audit key (made first if this appliance has none yet).
    pub async fn export(&self, from: u64) -> Result<Vec<u8>, EvidenceError> {
        let keys = self.vault.keys()?;
        signing::ensure(&self.store, &keys).await?;
        let (store, now) = (self.store.clone(), self.clock.now());
        let export = move || {
            let mut out = Vec::new();
            store.read(|tx| offline::export_sealed(tx, &keys, from, now, &mut out)).map(|_| out)
        };
        Ok(tokio::task::spawn_blocking(export).await.map_err(EvidenceError::Stopped)??)
    }

    /// The newest signed checkpoint of the chain, if one is written.
    pub fn newest_checkpoint(&self) -> Result<Option<checkpoints::Signed>, EvidenceError> {
        Ok(self.store.read(checkpoints::newest)?)
    }

    /// The audit public key (PEM; made first if there is none yet).
    pub async fn public_key_pem(&self) -> Result<String, EvidenceError> {
        signing::ensure(&self.store, &self.vault.keys()?).await?;
        Ok(self.store.read(signing::public_key_pem)?)
    }
}
