//! One gateway call while it runs and after: its place in its upstream's
//! count of requests in flight, and its record — the audit record, the
//! usage row and, for keys that log prompts, the sealed call — written once
//! when it ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::Value;

use super::keys::VirtualKey;
use super::limits::Admission;
use super::wire::Usage;
use super::{prompt_log, usage};
use crate::audit::{self, Actor, ActorKind, Event, Origin, Outcome, Resource};
use crate::vault::Vault;
use tether_base::clock::SharedClock;
use tether_store::{self as store, Store};

/// Requests in flight per upstream (the gateway sends to the least busy).
#[derive(Debug, Default, Clone)]
pub(super) struct Busy(Arc<Mutex<HashMap<String, usize>>>);

impl Busy {
    pub(super) fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request to `upstream` until the guard is dropped.
    pub(super) fn enter(&self, upstream: &str) -> InFlight {
        *self.counts().entry(upstream.to_owned()).or_default() += 1;
        InFlight { busy: self.clone(), upstream: upstream.to_owned() }
    }
}

/// Counts a request against an upstream while it lives.
pub(super) struct InFlight {
    busy: Busy,
    upstream: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.busy.counts().get_mut(&self.upstream) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Why a call's record could not be written.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecordError {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Sealing the call for the prompt log.
    #[error(transparent)]
    Vault(#[from] crate::vault::Error),
}

/// What writing a record takes.
#[derive(Clone)]
pub(super) struct Books {
    pub(super) store: Store,
    pub(super) vault: Arc<Vault>,
    pub(super) clock: SharedClock,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

/// Everything one request's audit record needs, and its place in the
/// key's limits (released when the last copy goes, when the request ends).
#[derive(Clone)]
pub(super) struct Record {
    pub(super) admission: Option<Arc<Admission>>,
    books: Books,
    key: VirtualKey,
    /// The model asked for (clipped).
    model: String,
    /// Whether an upstream serves that model for this key: usage is kept
    /// under the names of such models only, refusals under `-`, so a
    /// client cannot add a row per name it makes up.
    pub(super) model_served: bool,
    /// The prompt's tokens, estimated: charged when the upstream gives no count.
    pub(super) prompt_estimate: u64,
    /// The upstream that answered (`-`: none did).
    pub(super) upstream: String,
    origin: Origin,
    started: Instant,
    pub(super) streaming: bool,
    /// The route the client called.
    route: &'static str,
    /// For keys that log prompts: the request as forwarded.
    pub(super) logged_request: Option<Arc<Vec<u8>>>,
}

impl Record {
    /// The record of a call by `key` for the model it `asked` for (as the
    /// client wrote it) on `route`.
    pub(super) fn new(books: Books, key: &VirtualKey, asked: &str, origin: &Origin, route: &'static str) -> Record {
        Record {
            admission: None,
            books,
            key: key.clone(),
            // The client chose it: kept no longer than a record keeps it.
            model: tether_base::bounded::clip(asked, tether_base::bounded::STORED).into_owned(),
            model_served: false,
            // Set once the request is read (with the level's prompt in it).
            prompt_estimate: 0,
            upstream: "-".into(),
            origin: origin.clone(),
            started: Instant::now(),
            streaming: false,
            route,
            logged_request: None,
        }
    }

    /// Keeps the request for the prompt log, if the key logs prompts.
    pub(super) fn log_request(&mut self, key: &VirtualKey, body: &Value) {
        if key.policy.log_prompts {
            self.logged_request = Some(Arc::new(body.to_string().into_bytes()));
        }
    }

    /// Writes the call's audit record and counts its usage; with `answer`
    /// (the key logs prompts and the call was served), the sealed call too.
    /// Replaces the request's token estimate in the key's limits with the count.
    pub(super) fn settle(&self, usage: Usage) {
        if let Some(admission) = &self.admission {
            admission.settle(usage.prompt_tokens + usage.completion_tokens);
        }
    }

    pub(super) async fn write(&self, status: u16, usage: Usage, answer: Option<&[u8]>) -> Result<(), RecordError> {
        self.settle(usage);
        let now = self.books.clock.now();
        let logged = match (&self.logged_request, answer) {
            (Some(request), Some(answer)) if status == 200 => Some(prompt_log::seal(
                &self.books.vault,
                now,
                prompt_log::Call {
                    key_id: &self.key.id,
                    owner: &self.key.owner,
                    model: &self.model,
                    route: self.route,
                    status,
                    request,
                    answer,
                },
            )?),
            _ => None,
        };
        let origin = Origin {
            actor: Actor { kind: ActorKind::User, id: self.key.owner.clone(), roles: vec!["llm_key".into()] },
            ..self.origin.clone()
        };
        let event = Event::new("llm.request", "call", Resource::new("llm_key", &self.key.id))
            .outcome(if (200..300).contains(&status) { Outcome::Success } else { Outcome::Failure })
            .detail("owner", &self.key.owner)
            .detail("model", &self.model)
            .detail("upstream", &self.upstream)
            .detail("status", status)
            .detail("prompt_tokens", usage.prompt_tokens)
            .detail("completion_tokens", usage.completion_tokens)
            .detail("latency_ms", self.started.elapsed().as_millis())
            .detail("stream", self.streaming)
            .detail("enforcement", self.key.enforcement.as_str());
        let usage_model = if self.model_served { self.model.clone() } else { "-".to_owned() };
        let tokens = (usage.prompt_tokens, usage.completion_tokens);
        self.books.metrics.llm_call(&usage_model, &self.key.id, status, tokens, self.started.elapsed());
        let (owner, key_id, model) = (self.key.owner.clone(), self.key.id.clone(), usage_model);
        self.books
            .store
            .write(move |tx| {
                let event = match logged {
                    Some(sealed) => event.detail("prompt_log", prompt_log::put(tx, sealed)?),
                    None => event,
                };
                audit::append(tx, now, &origin, event)?;
                let request =
                    usage::Request { owner: &owner, key_id: &key_id, model: &model, answered: status == 200, usage };
                usage::count(tx, now, request)
            })
            .await?;
        Ok(())
    }
}
