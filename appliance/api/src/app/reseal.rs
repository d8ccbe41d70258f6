//! The background re-encryption: once per start and after every rotation,
//! every sealed value an older data key sealed is sealed again under the
//! newest, a batch per transaction, so old keys end up sealing nothing.

use std::sync::Arc;
use std::time::Duration;

use tether_domain::broker::Broker;
use tether_domain::vault::{self, Vault, secrets};
use tether_domain::{auth, evidence, llm, pki};
use tether_store::Store;

/// Looks every `every` whether the newest data key changed, and if so
/// re-encrypts under it (retrying a pass that failed).
pub async fn run_forever(broker: Broker, store: Store, vault: Arc<Vault>, every: Duration) {
    let mut done_for = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(current) = vault.keys().and_then(|k| k.current_version()) else {
            continue;
        };
        if done_for == Some(current) {
            continue;
        }
        match pass(&broker, &store, &vault).await {
            Ok(moved) => {
                if moved > 0 {
                    tracing::info!(moved, version = current, "re-encrypted values under the newest data key");
                }
                done_for = Some(current);
            }
            Err(e) => tracing::warn!(error = %e, "re-encryption paused; will retry"),
        }
    }
}

/// One pass: tasks and their event logs, secret values, the CA key, the
/// audit signing key, people's TOTP secrets, model servers' credentials,
/// the prompt log.
async fn pass(broker: &Broker, store: &Store, vault: &Vault) -> anyhow::Result<usize> {
    let mut moved = every_batch(|after| broker.refresh_seals(after)).await?;
    moved += every_batch(|after| broker.refresh_event_seals(after)).await?;
    let keys = vault.keys()?;
    moved += store
        .write(move |tx| {
            let values = secrets::refresh_seals(tx, &keys)?;
            let ca = pki::refresh_ca_key(tx, &keys)?;
            let audit_key = usize::from(evidence::signing::refresh_key(tx, &keys)?);
            let totp = auth::users::refresh_seals(tx, &keys)? + auth::sso_people::refresh_factor_seals(tx, &keys)?;
            let upstreams = llm::upstreams::refresh_seals(tx, &keys)?;
            let prompts = llm::prompt_log::refresh_seals(tx, &keys)?;
            Ok::<_, vault::Error>(values + ca + audit_key + totp + upstreams + prompts)
        })
        .await?;
    Ok(moved)
}

/// Runs `batch` from the start (`None`) on from where each one stopped
/// until one says it was the last; the sum of what they moved.
async fn every_batch<K, F, E>(mut batch: impl FnMut(Option<K>) -> F) -> Result<usize, E>
where
    F: std::future::Future<Output = Result<(usize, Option<K>), E>>,
{
    let (mut moved, mut after) = (0, None);
    loop {
        let (n, next) = batch(after).await?;
        moved += n;
        match next {
            Some(key) => after = Some(key),
            None => return Ok(moved),
        }
    }
}
