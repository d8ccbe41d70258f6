//! `GET /metrics`: the counters events added to ([`tether_domain::metrics`])
//! and what is read off the state at this scrape, in the OpenMetrics text
//! format Prometheus scrapes. A token of a role with `metrics_read` (a
//! viewer token is the scrape token) is required: the figures say how busy
//! the site is and which keys it uses.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::AppState;
use super::error::ApiError;
use super::extract::Caller;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn scrape(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let mut registry = Registry::default();
    let tether = registry.sub_registry_with_prefix("tether");
    state.metrics.register(tether);
    current_state(&state, tether)?;
    process(&mut registry, &state);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| ApiError::internal(format!("the metrics could not be written out: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// What the broker, workers, vault and audit log stand at now.
fn current_state(state: &AppState, registry: &mut Registry) -> Result<(), ApiError> {
    let depth = state.broker.depth()?;
    let tasks = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    for (name, n) in [("ready", depth.ready), ("leased", depth.leased), ("delayed", depth.delayed)] {
        tasks.get_or_create(&[("state", name)]).set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    registry.register("tasks", "Live tasks by schedule state: ready, leased, waiting out a retry delay", tasks);
    let parked = state.broker.parked_polls() as u64;
    registry.register("polls_parked", "Worker long-polls parked now", gauge(parked));
    let now = state.clock.now();
    let enrolled = state.authority.workers()?.into_iter().filter(|w| !w.revoked).count() as u64;
    registry.register("workers_enrolled", "Enrolled workers, not revoked", gauge(enrolled));
    let online = state.monitor.online(now)? as u64;
    registry.register("workers_online", "Enrolled workers heard from within the silence threshold", gauge(online));
    registry.register("vault_sealed", "1 while the vault is sealed", gauge(u64::from(state.vault.is_sealed())));
    let head = state.store.read(tether_domain::audit::head)?.map_or(0, |h| h.seq);
    registry.register("audit_records", "Records appended to the audit log (its newest sequence number)", gauge(head));
    let backlog = Family::<[(&'static str, String); 1], Gauge>::default();
    let status = state.sinks.status();
    for config in state.sinks.configs()? {
        let through = status.get(&config.name).and_then(|s| s.delivered_through).unwrap_or(0);
        backlog
            .get_or_create(&[("sink", config.name)])
            .set(i64::try_from(head.saturating_sub(through)).unwrap_or(i64::MAX));
    }
    registry.register("audit_sink_backlog", "Audit records a SIEM sink has not confirmed yet", backlog);
    Ok(())
}

/// The process: resident memory, open descriptors, start time (from
/// /proc, where the appliance runs).
fn process(registry: &mut Registry, state: &AppState) {
    let process = registry.sub_registry_with_prefix("process");
    if let Some(rss) = resident_bytes() {
        process.register("resident_memory_bytes", "Resident memory", gauge(rss));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        process.register("open_fds", "Open file descriptors", gauge(fds.count() as u64));
    }
    let started = state.started_at.as_millis() / 1000;
    process.register("start_time_seconds", "When the appliance started, in seconds since the epoch", gauge(started));
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim();
    kib.parse::<u64>().ok().map(|k| k * 1024)
}
