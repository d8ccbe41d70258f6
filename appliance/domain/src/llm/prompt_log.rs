//! The prompt log: for keys that opt in (`log_prompts`, fixed for the
//! key's life), each call's request and answer, sealed in the vault under
//! the data key (AES-256-GCM, bound to the entry), never in the clear on
//! disk, in the audit record or in a log line. The call's audit record
//! names the entry. Reading it is a security officer's re-authenticated
//! act (an admin may make auditors, so not theirs), audited with what was read.
//! Entries older than `llm_prompt_log_retention` (30 days) are deleted.

use serde::{Deserialize, Serialize};

use crate::vault::{self, Keys, Place, Sealed, Vault};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by entry id (a UUIDv7: in time order).
const LOG: Collection<LoggedCall> = Collection::new("llm_prompt_log");
/// What of a request or an answer is kept; past this it is cut.
pub const MAX_LOGGED_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoggedCall {
    at: Timestamp,
    key_id: String,
    owner: String,
    model: String,
    route: String,
    status: u16,
    request: Sealed,
    answer: Sealed,
}

fn place<'a>(id: &'a str, part: &'static str) -> Place<'a> {
    Place::new("llm_prompt_log", id.as_bytes(), part)
}

/// One call as it is logged.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub key_id: &'a str,
    pub owner: &'a str,
    pub model: &'a str,
    pub route: &'a str,
    pub status: u16,
    /// The request as the model server was sent it (the level's prompt in).
    pub request: &'a [u8],
    /// The answer as the client received it (whole, or the stream's events).
    pub answer: &'a [u8],
}

/// A call sealed and ready to store: sealing is done before the store's
/// write, so the writer thread spends no time on it.
#[derive(Debug)]
pub struct SealedCall {
    id: String,
    entry: LoggedCall,
}

/// Seals a call under the vault's current data key.
pub fn seal(vault: &Vault, now: Timestamp, call: Call<'_>) -> Result<SealedCall, vault::Error> {
    let id = uuid::Uuid::now_v7().to_string();
    let cut = |b: &[u8]| b[..b.len().min(MAX_LOGGED_BYTES)].to_vec();
    let entry = LoggedCall {
        at: now,
        key_id: call.key_id.to_owned(),
        owner: call.owner.to_owned(),
        model: call.model.to_owned(),
        route: call.route.to_owned(),
        status: call.status,
        request: vault.encrypt(place(&id, "request"), &cut(call.request))?,
        answer: vault.encrypt(place(&id, "answer"), &cut(call.answer))?,
    };
    Ok(SealedCall { id, entry })
}

/// Stores a sealed call; returns its entry id (for the audit record).
pub fn put(tx: &mut WriteTx<'_>, sealed: SealedCall) -> Result<String, store::Error> {
    tx.put(LOG, sealed.id.as_bytes(), &sealed.entry)?;
    Ok(sealed.id)
}

/// A logged call, opened.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: String,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    pub at: Timestamp,
    pub key_id: String,
    pub owner: String,
    pub model: String,
    pub route: String,
    pub status: u16,
    /// As sent: JSON text.
    pub request: String,
    /// As received: JSON, or the stream's events.
    pub answer: String,
}

/// The newest `limit` entries (of one key, when given), newest first, opened.
pub fn read(tx: &ReadTx, keys: &Keys, key_id: Option<&str>, limit: usize) -> Result<Vec<Entry>, LogError> {
    let mut found = Vec::new();
    tx.scan(LOG, None, Order::Descending, |id, call: LoggedCall| {
        if key_id.is_none_or(|k| k == call.key_id) {
            found.push((String::from_utf8_lossy(id).into_owned(), call));
        }
        Ok(found.len() < limit)
    })?;
    found
        .into_iter()
        .map(|(id, call)| {
            let open = |part, sealed: &Sealed| -> Result<String, LogError> {
                Ok(String::from_utf8_lossy(&keys.decrypt(place(&id, part), sealed)?).into_owned())
            };
            Ok(Entry {
                request: open("request", &call.request)?,
                answer: open("answer", &call.answer)?,
                id,
                at: call.at,
                key_id: call.key_id,
                owner: call.owner,
                model: call.model,
                route: call.route,
                status: call.status,
            })
        })
        .collect()
}

/// Seals entries again under the newest data key.
pub fn refresh_seals(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<usize, vault::Error> {
    let mut moved = 0;
    let mut stale = Vec::new();
    tx.scan(LOG, None, Order::Ascending, |id, call: LoggedCall| {
        stale.push((String::from_utf8_lossy(id).into_owned(), call));
        Ok(true)
    })?;
    for (id, mut call) in stale {
        let request = keys.refresh(place(&id, "request"), &call.request)?;
        let answer = keys.refresh(place(&id, "answer"), &call.answer)?;
        if request.is_none() && answer.is_none() {
            continue;
        }
        if let Some(fresh) = request {
            call.request = fresh;
        }
        if let Some(fresh) = answer {
            call.answer = fresh;
        }
        tx.put(LOG, id.as_bytes(), &call)?;
        moved += 1;
    }
    Ok(moved)
}

/// At most this many entries go in one pruning write.
const PRUNE_BATCH: usize = 1000;

/// Deletes entries logged before `before` (oldest first, at most a batch),
/// with one audit record saying how many; returns how many went.
pub fn prune(tx: &mut WriteTx<'_>, now: Timestamp, before: Timestamp) -> Result<usize, store::Error> {
    let mut old = Vec::new();
    tx.scan(LOG, None, Order::Ascending, |id, call: LoggedCall| {
        // Ids are UUIDv7, so the scan runs in logging order.
        if call.at >= before {
            return Ok(false);
        }
        old.push(id.to_vec());
        Ok(old.len() < PRUNE_BATCH)
    })?;
    for id in &old {
        tx.delete(LOG, id)?;
    }
    if !old.is_empty() {
        let event = crate::audit::Event::new(
            "llm.prompt_log_pruned",
            "delete",
            crate::audit::Resource::new("llm_prompt_log", "*"),
        )
        .detail("entries", old.len())
        .detail("before", before);
        crate::audit::append(tx, now, &crate::audit::Origin::system(), event)?;
    }
    Ok(old.len())
}

/// Prunes what ages past `retention`, for as long as the appliance runs.
pub async fn run_retention(
    store: tether_store::Store,
    clock: tether_base::clock::SharedClock,
    retention: std::time::Duration,
) {
    let every = (retention / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = clock.now();
        let before = now.minus(retention);
        loop {
            match store.write(move |tx| prune(tx, now, before)).await {
                Ok(n) if n == PRUNE_BATCH => continue,
                Ok(_) | Err(store::Error::Degraded) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the prompt log could not be pruned; retrying");
                    break;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tether_base::clock::ManualClock;

    #[tokio::test(flavor = "multi_thread")]
    async fn entries_are_read_per_key_and_go_when_they_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = tether_store::Store::create(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_000_000)));
        let vault = crate::vault::unsealed_for_tests(&store, clock.clone());
        let call = |text: &'static str| Call {
            key_id: "k1",
            owner: "dora",
            model: "m",
            route: "/v1/chat/completions",
            status: 200,
            request: text.as_bytes(),
            answer: b"an answer",
        };
        let old = seal(&vault, Timestamp::from_millis(1_000_000), call("the old prompt")).unwrap();
        let new = seal(&vault, Timestamp::from_millis(5_000_000), call("the new prompt")).unwrap();
        store.write(move |tx| Ok::<_, store::Error>((put(tx, old)?, put(tx, new)?))).await.unwrap();

        let keys = vault.keys().unwrap();
        let entries = store.read(|tx| read(tx, &keys, Some("k1"), 10)).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.request.as_str()).collect::<Vec<_>>(),
            ["the new prompt", "the old prompt"]
        );
        assert!(store.read(|tx| read(tx, &keys, Some("k2"), 10)).unwrap().is_empty());

        let pruned = store
            .write(|tx| prune(tx, Timestamp::from_millis(6_000_000), Timestamp::from_millis(2_000_000)))
            .await
            .unwrap();
        assert_eq!(pruned, 1);
        let left = store.read(|tx| read(tx, &keys, None, 10)).unwrap();
        assert_eq!(left.iter().map(|e| e.request.as_str()).collect::<Vec<_>>(), ["the new prompt"]);
    }
}
