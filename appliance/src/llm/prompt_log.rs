//! The prompt log: for keys that opt in (`log_prompts`, fixed for the
//! key's life), each call's request and answer, sealed in the vault under
//! the data key (AES-256-GCM, bound to the entry), never in the clear on
//! disk, in the audit record or in a log line. The call's audit record
//! names the entry. Reading it is a security officer's re-authenticated
//! act (an admin may make auditors, so not theirs), audited with what was read.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::store::{self, Collection, Order, ReadTx, WriteTx};
use crate::vault::{self, Keys, Place, Sealed, Vault};

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
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
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

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}
