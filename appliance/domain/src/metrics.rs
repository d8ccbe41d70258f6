//! What the appliance counts as it goes, for `GET /metrics` (Prometheus's
//! text format, through `prometheus-client`). These are the counters and
//! histograms events add to; what is read off the current state (queue
//! depth, workers online, vault state, process figures) is gathered at
//! each scrape, by the API.
//!
//! Labels never carry a secret or a client's free text: LLM calls are
//! labelled by the key's public id and by the model only if an upstream
//! serves it (any other name counts as "-"), so made-up names cannot grow
//! the series.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Seconds, from a millisecond to about two minutes, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 18)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(latency_buckets())
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as Prometheus shows them
pub enum FinalState {
    succeeded,
    failed,
    cancelled,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: FinalState,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Listener {
    console,
    worker,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Handshake {
    ok,
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub listener: Listener,
    pub result: Handshake,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmCall {
    /// A model an upstream serves, or "-".
    pub model: String,
    /// The virtual key's public id.
    pub key: String,
    /// The HTTP status the client got.
    pub status: u16,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TokenKind {
    prompt,
    completion,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmTokens {
    pub model: String,
    pub key: String,
    pub kind: TokenKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

/// The counters. Share one (`Arc<Metrics>`); every field is itself a
/// shared handle.
#[derive(Debug)]
pub struct Metrics {
    pub tasks_created: Counter,
    pub tasks_finished: Family<StateLabel, Counter>,
    pub lease_expiries: Counter,
    /// From a task's creation to its first lease.
    pub dispatch_seconds: Histogram,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    pub llm_requests: Family<LlmCall, Counter>,
    pub llm_tokens: Family<LlmTokens, Counter>,
    /// From a call's arrival to its answer's end (a stream's last event).
    pub llm_seconds: Family<ModelLabel, Histogram, LatencyHistogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            tasks_created: Counter::default(),
            tasks_finished: Family::default(),
            lease_expiries: Counter::default(),
            dispatch_seconds: Histogram::new(latency_buckets()),
            tls_handshakes: Family::default(),
            llm_requests: Family::default(),
            llm_tokens: Family::default(),
            llm_seconds: Family::new_with_constructor(LatencyHistogram),
        }
    }
}

impl Metrics {
    pub fn task_finished(&self, state: FinalState) {
        self.tasks_finished.get_or_create(&StateLabel { state }).inc();
    }

    pub fn dispatched(&self, waited: Duration) {
        self.dispatch_seconds.observe(waited.as_secs_f64());
    }

    pub fn handshake(&self, listener: Listener, result: Handshake) {
        self.tls_handshakes.get_or_create(&HandshakeLabels { listener, result }).inc();
    }

    /// One gateway call: its status, tokens and time.
    pub fn llm_call(&self, model: &str, key: &str, status: u16, tokens: (u64, u64), took: Duration) {
        let (model, key) = (model.to_owned(), key.to_owned());
        self.llm_requests.get_or_create(&LlmCall { model: model.clone(), key: key.clone(), status }).inc();
        let (prompt, completion) = tokens;
        for (kind, n) in [(TokenKind::prompt, prompt), (TokenKind::completion, completion)] {
            if n > 0 {
                self.llm_tokens.get_or_create(&LlmTokens { model: model.clone(), key: key.clone(), kind }).inc_by(n);
            }
        }
        self.llm_seconds.get_or_create(&ModelLabel { model }).observe(took.as_secs_f64());
    }

    /// Puts every counter in `registry` (one made per scrape, with the
    /// figures read off the state beside them).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("tasks_created", "Tasks created", self.tasks_created.clone());
        registry.register("tasks_finished", "Tasks that reached a final state, by state", self.tasks_finished.clone());
        registry.register(
            "lease_expiries",
            "Leases that ran out without a heartbeat (the task went back in line or failed)",
            self.lease_expiries.clone(),
        );
        registry.register(
            "task_dispatch_seconds",
            "Time from a task's creation to its first lease",
            self.dispatch_seconds.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the listeners, by listener and result",
            self.tls_handshakes.clone(),
        );
        registry.register(
            "llm_requests",
            "Gateway calls by model (\"-\" for one no upstream serves), key id and status",
            self.llm_requests.clone(),
        );
        registry.register(
            "llm_tokens",
            "Tokens the upstreams counted, by model, key id and kind",
            self.llm_tokens.clone(),
        );
        registry.register(
            "llm_request_seconds",
            "Gateway call time, arrival to the answer's end, by model",
            self.llm_seconds.clone(),
        );
    }
}
