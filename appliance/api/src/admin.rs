//! Health, status, the crypto mode and the audit log.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use tether_base::crypto::{CryptoStatus, Mode};

use tether_base::clock::Timestamp;
use tether_domain::audit::Outcome;
use tether_domain::audit::search;
use tether_domain::audit::sinks::{SinkKind, SinkStatus};
use tether_domain::evidence::Verdict;
use tether_domain::pki;

/// The appliance's condition, worst first: what `/healthz` says in
/// `status`, and systemd's status line is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Condition {
    #[serde(rename = "draining")]
    Draining,
    #[serde(rename = "audit degraded")]
    AuditDegraded,
    /// A background task stopped on its own.
    #[serde(rename = "degraded")]
    Degraded,
    #[serde(rename = "sealed")]
    Sealed,
    #[serde(rename = "disk low")]
    DiskLow,
    #[serde(rename = "ok")]
    Ok,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: Condition,
    sealed: bool,
    /// "ok", or "degraded" while audit records (and so every action) cannot
    /// be written.
    audit: &'static str,
    /// "ok", or "low" while the disk reserve is given up.
    disk: &'static str,
    /// The background tasks that stopped on their own (the status is then
    /// "degraded" until a restart); absent when none did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks_stopped: Vec<&'static str>,
}

pub async fn healthz(State(state): State<AppState>) -> axum::Json<Health> {
    axum::Json(health(&state))
}

/// How the appliance is: what `/healthz` answers and systemd's status says.
pub fn health(state: &AppState) -> Health {
    let sealed = state.vault.is_sealed();
    let audit_degraded = state.store.is_degraded();
    let disk_low = state.space.is_low();
    let tasks_stopped = state.tasks.stopped_early();
    let status = if state.broker.is_draining() {
        Condition::Draining
    } else if audit_degraded {
        Condition::AuditDegraded
    } else if !tasks_stopped.is_empty() {
        Condition::Degraded
    } else if sealed {
        Condition::Sealed
    } else if disk_low {
        Condition::DiskLow
    } else {
        Condition::Ok
    };
    Health {
        status,
        sealed,
        audit: if audit_degraded { "degraded" } else { "ok" },
        disk: if disk_low { "low" } else { "ok" },
        tasks_stopped,
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    status: &'static str,
    draining: bool,
    /// Worker polls parked right now, waiting for work.
    parked_polls: usize,
    workers: usize,
    store: tether_store::StoreStats,
    vault: tether_domain::vault::Status,
    /// Whether key memory is protected from dumps and swap.
    hardening: tether_domain::vault::memory::Hardening,
    /// The crypto mode, module and start-up self-tests.
    crypto: CryptoStatus,
    /// Warnings an operator should act on (e.g. unattended unseal).
    warnings: Vec<&'static str>,
    /// How many certificates are expiring or overdue for renewal
    /// (`GET /api/v1/pki/certificates` lists them).
    certificate_alerts: usize,
    /// Content Security Policy violations browsers reported since start.
    csp_violations: u64,
    /// The machine: uptime, load, memory, the data disk.
    host: Host,
    /// The security check's last run (`GET /api/v1/security/checks` runs it).
    #[serde(skip_serializing_if = "Option::is_none")]
    security: Option<SecurityRun>,
}

/// The last security check, in brief.
#[derive(Debug, Serialize)]
pub struct SecurityRun {
    score: u32,
    grade: String,
    failing: u32,
    checked_at: String,
}

/// What the machine says of itself; a figure it cannot give is left out.
#[derive(Debug, Serialize)]
pub struct Host {
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_1m: Option<f64>,
    cpus: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_used: Option<u64>,
    /// Free and total bytes of the file system holding the data directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_free: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_total: Option<u64>,
}

impl Host {
    fn now(data_dir: &std::path::Path) -> Host {
        let memory = sysinfo::System::new().ok().map(|mut system| {
            system.refresh_memory();
            (system.total_memory(), system.used_memory())
        });
        Host {
            uptime_s: sysinfo::System::uptime().ok(),
            load_1m: sysinfo::System::load_average().ok().map(|l| l.one),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_total: memory.map(|m| m.0),
            memory_used: memory.map(|m| m.1),
            disk_free: tether_store::reserve::available(data_dir).ok(),
            disk_total: tether_store::reserve::size(data_dir).ok(),
        }
    }
}

pub async fn status(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<Status>, ApiError> {
    let workers = state.authority.workers()?.into_iter().filter(|w| !w.revoked).count();
    let draining = state.broker.is_draining();
    Ok(axum::Json(Status {
        status: if draining { "draining" } else { "ok" },
        draining,
        parked_polls: state.broker.parked_polls(),
        workers,
        store: state.store.stats(),
        vault: state.vault.status()?,
        hardening: tether_domain::vault::memory::hardening(),
        crypto: CryptoStatus::clone(&state.crypto),
        warnings: warnings(&state),
        certificate_alerts: super::certificates::expiry_alerts(&state)?.len(),
        csp_violations: state.csp_reports.count(),
        host: Host::now(&state.config.data_dir),
        security: state.store.read(tether_domain::posture::last_run)?.map(|run| SecurityRun {
            score: run.score,
            grade: run.grade,
            failing: run.failing,
            checked_at: run.at.to_rfc3339(),
        }),
    }))
}

#[derive(Debug, Serialize)]
pub struct CryptoReport {
    #[serde(flatten)]
    running: CryptoStatus,
    /// The mode the next start will run in, when a security officer has
    /// switched it since this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_mode: Option<Mode>,
}

/// The crypto mode, the module and what the start-up self-tests found.
pub async fn crypto(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<CryptoReport>, ApiError> {
    let stored = state.vault.stored_crypto_mode()?;
    let pending_mode = (stored != state.crypto.mode).then_some(stored);
    Ok(axum::Json(CryptoReport { running: CryptoStatus::clone(&state.crypto), pending_mode }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    mode: Mode,
    /// Re-authentication: the unseal credentials (the passphrase, a quorum
    /// of shares, or the key file).
    current: Vec<super::vault::UnsealBody>,
}

impl std::fmt::Debug for ModeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModeBody").field("mode", &self.mode).finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
pub struct ModeChanged {
    mode: Mode,
    previous: Mode,
    running_mode: Mode,
    /// The listeners and checks take the new mode at the next start.
    restart_required: bool,
}

/// Switches the crypto mode (security officers only), re-authenticated by
/// the unseal credentials; refused while an active worker holds a key the
/// new mode does not allow. Takes effect at the next start. Audited,
/// refusals included.
pub async fn change_crypto_mode(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ModeBody>,
) -> Result<axum::Json<ModeChanged>, ApiError> {
    let to = body.mode;
    let current = body.current.into_iter().map(|b| b.credential()).collect::<Result<Vec<_>, _>>()?;
    let (now, grace) = (state.clock.now(), state.config.worker_cert_grace);
    let blocker = |tx: &_, policy| pki::unapproved_worker_keys_refusal(tx, policy, now, grace);
    let previous = state.vault.change_crypto_mode(&caller.origin, current, to, blocker).await?;
    let (running_mode, restart_required) = (state.crypto.mode, to != state.crypto.mode);
    Ok(axum::Json(ModeChanged { mode: to, previous, running_mode, restart_required }))
}

fn warnings(state: &AppState) -> Vec<&'static str> {
    let mut w = Vec::new();
    if state.config.unseal_key_file.is_some() {
        w.push(
            "unseal_key_file: the appliance unseals itself from a key file; anyone holding that file can read its data",
        );
    }
    let h = tether_domain::vault::memory::hardening();
    if !(h.core_dumps_off && h.not_dumpable) {
        w.push("core_dumps: key memory could be written to a core dump");
    }
    if !h.keys_locked_in_ram {
        w.push("memory_lock: keys could not be locked into RAM and may reach swap (raise RLIMIT_MEMLOCK)");
    }
    w
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    ok: bool,
    records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

pub async fn audit_verify(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<axum::Json<VerifyReport>, ApiError> {
    Ok(axum::Json(match state.evidence.verify().await? {
        Verdict::Intact(v) => VerifyReport {
            ok: true,
            records: v.records,
            head_seq: v.head.map(|h| h.seq),
            head_hash: v.head.map(|h| hex::encode(h.hash)),
            problem: None,
        },
        Verdict::Broken(broken) => {
            VerifyReport { ok: false, records: 0, head_seq: None, head_hash: None, problem: Some(broken.to_string()) }
        }
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    from: Option<u64>,
}

/// The log as JSON lines, ending with a seal signed by the audit key
/// (`tether audit verify --file` checks it offline).
pub async fn audit_export(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let body = state.evidence.export(query.from.unwrap_or(0)).await?;
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    actor: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    outcome: Option<Outcome>,
    since: Option<String>,
    until: Option<String>,
    before: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit/records`: records matching every filter given, newest
/// first (`audit::search` says how each filter matches and how far one
/// search reads).
pub async fn audit_records(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<RecordsQuery>,
) -> Result<axum::Json<search::Found>, ApiError> {
    let time = |name: &str, text: Option<String>| {
        let text = text.filter(|t| !t.is_empty());
        text.map(|t| {
            Timestamp::parse_rfc3339(&t).ok_or_else(|| {
                ApiError::InvalidRequest(format!("{name} must be an RFC 3339 time, like 2026-12-03T09:30:00Z"))
            })
        })
        .transpose()
    };
    let text = |t: Option<String>| t.filter(|t| !t.is_empty());
    let query = search::Query {
        since: time("since", query.since)?,
        until: time("until", query.until)?,
        actor: text(query.actor),
        action: text(query.action),
        resource: text(query.resource),
        outcome: query.outcome,
        before: query.before,
        limit: query.limit.unwrap_or(100),
    };
    Ok(axum::Json(state.store.read(|tx| search::search(tx, &query))?))
}

/// The audit public key (PEM), to verify exports and checkpoints with.
pub async fn audit_public_key(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let pem = state.evidence.public_key_pem().await?;
    let mut response = pem.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
    Ok(response)
}

/// `GET /api/v1/audit/checkpoint`: the newest signed checkpoint, as a file
/// an auditor keeps and later checks an export against, offline
/// (`tether audit verify --checkpoint FILE --public-key KEY --file EXPORT`).
pub async fn audit_checkpoint(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let signed = state.evidence.newest_checkpoint()?.ok_or(ApiError::NoCheckpoint)?;
    let disposition = format!("attachment; filename=\"tether-audit-checkpoint-{}.json\"", signed.covers_seq);
    let mut response = axum::Json(signed).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::try_from(disposition).map_err(ApiError::internal)?);
    Ok(response)
}

#[derive(Debug, Serialize)]
pub struct SinkView {
    name: String,
    kind: SinkKind,
    created_by: String,
    created_at: String,
    status: SinkStatus,
}

pub async fn list_sinks(State(state): State<AppState>, _caller: Caller) -> Result<axum::Json<Vec<SinkView>>, ApiError> {
    let configs = state.sinks.configs()?;
    let status = state.sinks.status();
    Ok(axum::Json(
        configs
            .into_iter()
            .map(|c| SinkView {
                status: status.get(&c.name).cloned().unwrap_or_default(),
                name: c.name,
                kind: c.kind,
                created_by: c.created_by,
                created_at: c.created_at.to_rfc3339(),
            })
            .collect(),
    ))
}

/// Adds or replaces a sink (a security officer, re-authenticated); it
/// starts at once, from the beginning of the log for a new one.
pub async fn put_sink(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(kind): ApiJson<SinkKind>,
) -> Result<axum::Json<SinkView>, ApiError> {
    let config = state.sinks.put(&caller.origin, name, kind).await?;
    Ok(axum::Json(SinkView {
        name: config.name,
        kind: config.kind,
        created_by: config.created_by,
        created_at: config.created_at.to_rfc3339(),
        status: SinkStatus::default(),
    }))
}

pub async fn remove_sink(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    state.sinks.remove(&caller.origin, name).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
