//! The gateway: a virtual key's request goes to a healthy upstream that
//! serves the model (the least busy first; the next one if it cannot be
//! reached), shaped by the key's enforcement level on the way, and comes
//! back as it arrives — a stream is relayed event by event, never gathered.
//! One audit record per request, with the tokens the upstream counted.

mod catalog;
mod embed;
mod manage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::call::{Books, Busy, InFlight, Record, RecordError};
use super::design_first;
use super::keys::{self, Enforcement, VirtualKey};
use super::limits::{self, Limiter, Refusal, Standing};
use super::prompts;
use super::relay::{QUIET_TIMEOUT, RelayPlan, read_capped, relay};
use super::upstreams::{self, Upstream, UpstreamKind};
use super::wire::{self, Protocol, Shape, Usage};
use crate::audit::Origin;
use crate::auth::AuthError;
use crate::vault::Vault;
use tether_base::clock::SharedClock;
use tether_store::{self as store, Store};

/// An upstream that could not be reached is tried last for this long.
const DOWN_FOR: Duration = Duration::from_secs(10);
/// A health probe that takes longer than this fails.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events a slow client may fall behind before the relay waits for it.
const RELAY_DEPTH: usize = 32;
/// A key refused for its limits raises one alert in this long, however
/// many calls it keeps making: the alert says "look at this key", the
/// audit log has every refusal.
const RATE_ALERT_EVERY: Duration = Duration::from_secs(15 * 60);

/// Why the gateway did not answer with the model's output. Messages are
/// for the client: they never name an upstream's address or repeat its
/// errors.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidMaxTokens(String),
    /// The request says what the model's server cannot be told.
    #[error("{0}")]
    Untranslatable(String),
    #[error("the model server for {model:?} cannot give vectors of {dimensions} dimensions ({given})")]
    DimensionsUnsupported { model: String, dimensions: u64, given: String },
    #[error("this key may not use the model {0:?}")]
    ModelNotAllowed(String),
    #[error("no upstream serves the model {0:?}")]
    ModelNotFound(String),
    #[error("no upstream serving this model can be reached now; retry shortly")]
    Unavailable,
    #[error("the model server refused the request (status {0})")]
    UpstreamRefused(u16),
    #[error("this key is over its limit; retry after {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration, standing: Standing },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Vault(#[from] crate::vault::Error),
}

impl GatewayError {
    /// The HTTP status the client gets (the audit record names it too).
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::InvalidMaxTokens(_)
            | GatewayError::Untranslatable(_)
            | GatewayError::DimensionsUnsupported { .. } => 400,
            GatewayError::ModelNotAllowed(_) => 403,
            GatewayError::ModelNotFound(_) => 404,
            GatewayError::UpstreamRefused(_) => 502,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::Unavailable | GatewayError::Vault(_) => 503,
            GatewayError::Store(_) => 500,
        }
    }
}

impl From<RecordError> for GatewayError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => GatewayError::Store(e),
            RecordError::Vault(e) => GatewayError::Vault(e),
        }
    }
}

/// What a request asks of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    /// A raw prompt continued: OpenAI's completions, Ollama's generate.
    Complete,
    Embed,
    /// Ollama's older embeddings route: one prompt, one vector.
    EmbedOne,
}

/// Every gateway route: the operation, in the protocol its path speaks.
pub const GATEWAY_ROUTES: [(Operation, Protocol); 7] = [
    (Operation::Chat, Protocol::OpenAi),
    (Operation::Chat, Protocol::Ollama),
    (Operation::Complete, Protocol::OpenAi),
    (Operation::Complete, Protocol::Ollama),
    (Operation::Embed, Protocol::OpenAi),
    (Operation::Embed, Protocol::Ollama),
    (Operation::EmbedOne, Protocol::Ollama),
];

impl Operation {
    /// The route a client of `protocol` calls for it.
    pub fn route(self, protocol: Protocol) -> &'static str {
        match (self, protocol) {
            (Operation::Chat, Protocol::OpenAi) => "/v1/chat/completions",
            (Operation::Chat, Protocol::Ollama) => "/api/chat",
            (Operation::Complete, Protocol::OpenAi) => "/v1/completions",
            (Operation::Complete, Protocol::Ollama) => "/api/generate",
            (Operation::Embed, Protocol::OpenAi) => "/v1/embeddings",
            (Operation::Embed, Protocol::Ollama) => "/api/embed",
            (Operation::EmbedOne, Protocol::Ollama) => "/api/embeddings",
            // OpenAI has one embeddings route, which takes one input too.
            (Operation::EmbedOne, Protocol::OpenAi) => "/v1/embeddings",
        }
    }
}

/// What the gateway answers: the model's output and where the key stands
/// against its limits.
#[derive(Debug)]
pub struct Reply {
    pub answer: Answer,
    pub standing: Standing,
}

/// The answer to relay, in the client's protocol.
#[derive(Debug)]
pub enum Answer {
    /// A whole JSON document.
    Whole(Bytes),
    /// Server-sent events (OpenAI) or JSON lines (Ollama), as they come.
    Stream(mpsc::Receiver<Bytes>),
}

fn protocol_of(kind: UpstreamKind) -> Protocol {
    match kind {
        UpstreamKind::Openai => Protocol::OpenAi,
        UpstreamKind::Ollama => Protocol::Ollama,
    }
}

/// The service. Share one `Arc<Gateway>`.
#[derive(Debug)]
pub struct Gateway {
    store: Store,
    vault: Arc<Vault>,
    clock: SharedClock,
    /// Requests in flight per upstream (least busy first).
    busy: Busy,
    /// Upstreams that failed to answer a request, until when they are tried last.
    down: Mutex<HashMap<String, Instant>>,
    /// What the last health probe of each upstream found.
    health: Mutex<HashMap<String, Health>>,
    /// One HTTP client per upstream, rebuilt when its settings change.
    clients: Mutex<HashMap<String, (tether_base::clock::Timestamp, reqwest::Client)>>,
    limiter: Arc<Limiter>,
    metrics: Arc<crate::metrics::Metrics>,
    /// When each key last raised a rate-limit alert.
    rate_alerts: Mutex<HashMap<String, tether_base::clock::Timestamp>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What an upstream's last health probe found (for admins: never shown to
/// gateway clients).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub healthy: bool,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    pub checked_at: tether_base::clock::Timestamp,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Gateway {
    pub fn new(store: Store, vault: Arc<Vault>, clock: SharedClock, metrics: Arc<crate::metrics::Metrics>) -> Gateway {
        Gateway {
            store,
            vault,
            clock,
            busy: Busy::default(),
            down: Mutex::default(),
            health: Mutex::default(),
            clients: Mutex::default(),
            limiter: Arc::default(),
            metrics,
            rate_alerts: Mutex::default(),
        }
    }

    /// The key behind a presented secret.
    pub fn authenticate(&self, presented: &str) -> Result<Result<VirtualKey, AuthError>, store::Error> {
        let now = self.clock.now();
        self.store.read(|tx| keys::authenticate(tx, presented, now))
    }

    /// The models this key may call that some upstream serves, sorted.
    pub fn models(&self, key: &VirtualKey) -> Result<Vec<String>, store::Error> {
        let mut models: Vec<String> = self
            .store
            .read(upstreams::list)?
            .into_iter()
            .flat_map(|u| u.models)
            .filter(|m| key.allows_model(m))
            .collect();
        models.sort();
        models.dedup();
        Ok(models)
    }

    /// A chat or an embeddings request in the `client`'s protocol, answered
    /// in the same. Every request is audited, refusals included, with the
    /// status the client got.
    pub async fn call(
        self: &Arc<Self>,
        key: &VirtualKey,
        client: Protocol,
        operation: Operation,
        body: Value,
        origin: &Origin,
    ) -> Result<Reply, GatewayError> {
        if self.store.is_degraded() {
            return Err(GatewayError::Store(store::Error::Degraded));
        }
        let asked = body.get("model").and_then(Value::as_str).unwrap_or("-");
        let books = Books {
            store: self.store.clone(),
            vault: self.vault.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
        };
        let mut record = Record::new(books, key, asked, origin, operation.route(client));
        let forwarded = match operation {
            Operation::Chat => self.forward_text(key, client, Shape::Chat, body, &mut record).await,
            Operation::Complete => self.forward_text(key, client, Shape::Completion, body, &mut record).await,
            Operation::Embed => self.forward_embed(key, client, false, body, &mut record).await,
            Operation::EmbedOne => self.forward_embed(key, client, true, body, &mut record).await,
        };
        match forwarded {
            Ok((answer, usage)) => {
                let standing = record.admission.as_ref().map(|a| a.standing.clone()).unwrap_or_default();
                // A call is audited as its answer is handed over, not before
                // (the record's fsync is not added to every answer's time):
                // a whole answer's record here, a stream's by its relay when
                // it ends. Calls are refused while the log cannot be written.
                if let Some(usage) = usage {
                    // The limits learn the real count before the answer
                    // goes, so the key's next request is judged by it.
                    record.settle(usage);
                    // A whole answer's call ends as it is handed over: its
                    // place among the key's parallel calls is free for the
                    // next one now, not once its audit record is written.
                    record.admission = None;
                    let answer = match &answer {
                        Answer::Whole(bytes) if record.logged_request.is_some() => Some(bytes.clone()),
                        _ => None,
                    };
                    tokio::spawn(async move {
                        if let Err(e) = record.write(200, usage, answer.as_deref()).await {
                            tracing::error!(error = %e, "the audit record of a model call could not be written");
                        }
                    });
                }
                Ok(Reply { answer, standing })
            }
            Err(e) => {
                // The model was one an upstream serves (and the key may
                // use) only if the call got as far as an upstream.
                record.model_served = matches!(e, GatewayError::Unavailable | GatewayError::UpstreamRefused(_));
                record.write(e.status(), Usage::default(), None).await?;
                if let GatewayError::RateLimited { retry_after, .. } = &e {
                    self.alert_rate_limited(key, *retry_after).await?;
                }
                Err(e)
            }
        }
    }

    /// Raises `llm_rate_limited` for the key, unless it raised one in the
    /// last [`RATE_ALERT_EVERY`].
    async fn alert_rate_limited(&self, key: &VirtualKey, retry_after: Duration) -> Result<(), store::Error> {
        let now = self.clock.now();
        {
            let mut last = lock(&self.rate_alerts);
            // Keys quiet for the whole window are forgotten (the map holds
            // no more than the keys limited lately).
            last.retain(|_, at| now.since(*at) < RATE_ALERT_EVERY);
            if last.contains_key(&key.id) {
                return Ok(());
            }
            last.insert(key.id.clone(), now);
        }
        let (subject, owner) = (key.id.clone(), key.owner.clone());
        let details = [("owner", owner), ("retry_after_s", retry_after.as_secs().max(1).to_string())];
        self.store
            .write(move |tx| crate::audit::alerts::raise(tx, now, "llm_rate_limited", &subject, &details))
            .await?;
        Ok(())
    }

    /// Probes every upstream at once (`GET /v1/models` or `/api/tags`): one
    /// that fails is tried last until a probe finds it healthy again, so
    /// requests stop going to a dead server before any has to fail over. A
    /// probe that passes does not undo a request's failure: that one is
    /// still tried last for [`DOWN_FOR`] (a server may list its models and
    /// still fail to generate).
    pub async fn check_upstreams(self: &Arc<Self>) {
        let upstreams = match self.store.read(upstreams::list) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the upstreams to check them");
                return;
            }
        };
        let mut probes = tokio::task::JoinSet::new();
        for upstream in upstreams {
            let gateway = self.clone();
            probes.spawn(async move {
                let problem = gateway.probe(&upstream).await.err();
                (upstream.name, problem)
            });
        }
        let known: Vec<String> = {
            let mut found = Vec::new();
            while let Some(Ok((name, problem))) = probes.join_next().await {
                let was_healthy = lock(&self.health).get(&name).is_none_or(|h| h.healthy);
                match &problem {
                    Some(why) if was_healthy => {
                        tracing::warn!(upstream = %name, problem = %why, "upstream failed its health check");
                    }
                    None if !was_healthy => tracing::info!(upstream = %name, "upstream is healthy again"),
                    _ => {}
                }
                let health = Health { healthy: problem.is_none(), checked_at: self.clock.now(), problem };
                lock(&self.health).insert(name.clone(), health);
                found.push(name);
            }
            found
        };
        lock(&self.health).retain(|name, _| known.contains(name));
    }

    async fn probe(&self, upstream: &Upstream) -> Result<(), String> {
        let path = match upstream.kind {
            UpstreamKind::Openai => "/v1/models",
            UpstreamKind::Ollama => "/api/tags",
        };
        let url = format!("{}{path}", upstream.url.trim_end_matches('/'));
        let client = self.client(upstream).map_err(|e| e.to_string())?;
        let request = upstreams::authorize(&self.vault, upstream, client.get(url)).map_err(|e| e.to_string())?;
        match tokio::time::timeout(PROBE_TIMEOUT, request.send()).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("{path} answered {}", response.status())),
            Ok(Err(e)) => Err(format!("unreachable: {}", tether_base::tls::error_chain(&e))),
            Err(_) => Err(format!("no answer in {} s", PROBE_TIMEOUT.as_secs())),
        }
    }

    /// What the last probes found, by upstream name.
    pub fn health(&self) -> HashMap<String, Health> {
        lock(&self.health).clone()
    }

    /// Probes the upstreams every `interval`, until the task is dropped.
    pub async fn run_health_checks(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check_upstreams().await;
        }
    }

    /// Takes the request's place in the key's limits, or says why not.
    fn admit(
        &self,
        key: &VirtualKey,
        model: &str,
        estimated_tokens: u64,
        record: &mut Record,
    ) -> Result<(), GatewayError> {
        match self.limiter.admit(key, model, estimated_tokens, Instant::now()) {
            Ok(admission) => {
                record.admission = Some(Arc::new(admission));
                Ok(())
            }
            Err(Refusal::Busy { retry_after, standing }) => Err(GatewayError::RateLimited { retry_after, standing }),
            Err(Refusal::TooLarge { needed, tpm }) => Err(GatewayError::BadRequest(format!(
                "this request needs about {needed} tokens (its prompt and the most it asks to be generated), \
                 more than this key may use in a minute ({tpm})"
            ))),
        }
    }

    /// Forwards a chat or a completion; returns the answer and, unless it
    /// streams, its usage.
    async fn forward_text(
        self: &Arc<Self>,
        key: &VirtualKey,
        client: Protocol,
        shape: Shape,
        mut body: Value,
        record: &mut Record,
    ) -> Result<(Answer, Option<Usage>), GatewayError> {
        let max_tokens = wire::requested_max_tokens(client, &body).map_err(GatewayError::InvalidMaxTokens)?;
        let prompt = self.store.read(|tx| prompts::get(tx, key.enforcement))?;
        prompts::place_system_prompt(&mut body, client, shape, prompt.as_deref());
        let chat = wire::read_chat(client, shape, &body).map_err(GatewayError::BadRequest)?;
        record.log_request(key, &body);
        record.prompt_estimate = limits::estimate_tokens(&body);
        // Refused or not, a call counts against the key's limits, with the
        // most it may generate reserved until the upstream's count replaces it.
        self.admit(key, &chat.model, record.prompt_estimate + max_tokens.unwrap_or(0), record)?;
        if !key.allows_model(&chat.model) {
            return Err(GatewayError::ModelNotAllowed(chat.model));
        }
        record.streaming = chat.stream;
        let client_wants_usage =
            body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        // What goes to an upstream of each protocol: the client's own body
        // when it speaks the same one (nothing it sent is lost), else the
        // translation; an OpenAI stream always asks for its usage event.
        let request_for = |upstream: Protocol| {
            let mut out = if upstream == client { body.clone() } else { wire::write_chat(upstream, &chat)? };
            if upstream == Protocol::OpenAi && chat.stream {
                out["stream_options"] = json!({ "include_usage": true });
            }
            let operation = match shape {
                Shape::Chat => Operation::Chat,
                Shape::Completion => Operation::Complete,
            };
            Ok((operation.route(upstream), out))
        };
        let (upstream, response, in_flight) = self.send(&chat.model, request_for).await?;
        record.upstream = upstream.name.clone();
        record.model_served = true;
        if !response.status().is_success() {
            return Err(GatewayError::UpstreamRefused(response.status().as_u16()));
        }
        let from = protocol_of(upstream.kind);
        let now_secs = i64::try_from(self.clock.now().as_millis() / 1000).unwrap_or(0);
        // A completion has no conversation, so no design agreed in one.
        let withhold_code = key.enforcement == Enforcement::DesignFirst
            && (shape == Shape::Completion || design_first::first_answer(&chat.messages));
        if !chat.stream {
            let bytes = read_capped(response).await.map_err(|_| GatewayError::Unavailable)?;
            let answer: Value = serde_json::from_slice(&bytes).map_err(|_| GatewayError::Unavailable)?;
            let usage = wire::usage_of(from, &answer).unwrap_or_default();
            if from == client && !withhold_code {
                return Ok((Answer::Whole(bytes), Some(usage)));
            }
            let mut output = wire::read_answer(from, shape, &answer);
            if withhold_code {
                output.text = design_first::withhold_code(&output.text);
            }
            let out = wire::write_answer(client, shape, &chat.model, now_secs, &output);
            return Ok((Answer::Whole(Bytes::from(out.to_string())), Some(usage)));
        }
        let plan = RelayPlan {
            from,
            to: client,
            shape,
            writer: wire::StreamWriter::new(client, shape, &chat.model, now_secs, client_wants_usage),
            client_wants_usage,
            code_filter: withhold_code.then(design_first::CodeFilter::default),
        };
        let (tx, rx) = mpsc::channel(RELAY_DEPTH);
        tokio::spawn(relay(response, tx, plan, record.clone(), in_flight));
        Ok((Answer::Stream(rx), None))
    }

    /// Sends to the least busy reachable upstream serving `model` the body
    /// `request_for` makes for its protocol; on a connection failure or a
    /// 5xx, marks it down and tries the next.
    async fn send(
        self: &Arc<Self>,
        model: &str,
        request_for: impl Fn(Protocol) -> Result<(&'static str, Value), String>,
    ) -> Result<(Upstream, reqwest::Response, InFlight), GatewayError> {
        let mut candidates: Vec<Upstream> =
            self.store.read(upstreams::list)?.into_iter().filter(|u| u.models.iter().any(|m| m == model)).collect();
        if candidates.is_empty() {
            return Err(GatewayError::ModelNotFound(model.to_owned()));
        }
        {
            let (busy, down, health) = (self.busy.counts(), lock(&self.down), lock(&self.health));
            let now = Instant::now();
            candidates.sort_by_key(|u| {
                let failed = down.get(&u.name).is_some_and(|until| *until > now);
                let unhealthy = health.get(&u.name).is_some_and(|h| !h.healthy);
                (failed || unhealthy, busy.get(&u.name).copied().unwrap_or(0))
            });
        }
        // What the request asks that a candidate's protocol cannot say;
        // the answer if no candidate could take it at all.
        let (mut untranslatable, mut tried) = (None, false);
        for upstream in candidates {
            let (path, body) = match request_for(protocol_of(upstream.kind)) {
                Ok(request) => request,
                Err(why) => {
                    untranslatable = Some(why);
                    continue;
                }
            };
            let in_flight = self.busy.enter(&upstream.name);
            let client = self.client(&upstream)?;
            let request = upstreams::authorize(
                &self.vault,
                &upstream,
                client.post(format!("{}{path}", upstream.url.trim_end_matches('/'))).json(&body),
            )?;
            match tokio::time::timeout(QUIET_TIMEOUT, request.send()).await {
                Ok(Ok(response)) if !response.status().is_server_error() => {
                    return Ok((upstream, response, in_flight));
                }
                Ok(Ok(response)) => {
                    tracing::warn!(upstream = %upstream.name, status = %response.status(), "upstream failed; trying the next");
                }
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %upstream.name, error = %tether_base::tls::error_chain(&e), "upstream unreachable; trying the next");
                }
                Err(_) => tracing::warn!(upstream = %upstream.name, "upstream did not answer in time; trying the next"),
            }
            lock(&self.down).insert(upstream.name.clone(), Instant::now() + DOWN_FOR);
            tried = true;
        }
        match untranslatable {
            Some(why) if !tried => Err(GatewayError::Untranslatable(why)),
            _ => Err(GatewayError::Unavailable),
        }
    }

    fn client(&self, upstream: &Upstream) -> Result<reqwest::Client, GatewayError> {
        let mut clients = lock(&self.clients);
        if let Some((version, client)) = clients.get(&upstream.name)
            && *version == upstream.updated_at
        {
            return Ok(client.clone());
        }
        let client = upstreams::http_client(upstream.ca_pem.as_deref())
            .map_err(|e| GatewayError::BadRequest(format!("upstream {}: {e}", upstream.name)))?;
        clients.insert(upstream.name.clone(), (upstream.updated_at, client.clone()));
        Ok(client)
    }
}
