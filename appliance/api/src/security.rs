//! `GET /api/v1/security/checks`: the appliance grades its own deployment
//! (`tether_domain::posture`). This module gathers the facts the checks
//! look at from the services, the configuration and the host — reads only,
//! never a secret value — and the handler audits the run.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use axum::extract::State;

use super::extract::Caller;
use super::listener_certs::Served;
use super::{ApiError, AppState};
use tether_base::crypto::Mode;
use tether_domain::audit::sinks;
use tether_domain::evidence::Verdict;
use tether_domain::evidence::checkpoints;
use tether_domain::llm::keys::Enforcement;
use tether_domain::pki::CaSet;
use tether_domain::posture::{self, CertFact, Facts, KeyFile, Person, Report, SinkFact, TokenFact, WorkerFact};
use tether_domain::{audit, auth, backup, pki};

/// Every check's result, the score and the grade; the run is audited.
pub async fn checks(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Report>, ApiError> {
    let report = posture::assess(&facts(&state).await?);
    posture::record(&state.store, &caller.origin, state.clock.now(), &report).await?;
    Ok(axum::Json(report))
}

/// Files `serve --dev` leaves in the data directory.
pub const DEV_FILES: [&str; 2] = [super::app::init::DEV_UNSEAL_KEY_FILE, super::app::init::DEV_TOKEN_FILE];

/// What the checks look at, now.
pub async fn facts(state: &AppState) -> Result<Facts, ApiError> {
    let now = state.clock.now();
    let config = &state.config;
    let mut f = Facts::at(now);
    f.dev_files = DEV_FILES.iter().filter(|n| config.data_dir.join(n).exists()).map(|n| (*n).to_owned()).collect();
    f.key_file = config
        .unseal_key_file
        .as_deref()
        .map(|key| KeyFile { path: key.display().to_string(), beside_data: same_filesystem(key, &config.data_dir) });
    f.fips_mode = state.crypto.mode == Mode::Fips;
    f.fips_required = config.fips_required;
    // A standard-mode start runs no self-tests; a FIPS start that failed one does not start.
    f.self_tests_passed = state.crypto.mode != Mode::Fips || !state.crypto.self_tests_passed.is_empty();
    f.people = state.accounts.list()?.into_iter().map(person).collect();
    f.second_factor_roles = config.mfa_required_roles.clone();
    let (tokens, enrollment, newest_backup, newest_record, head, cursors, oldest_unchecked, workers, restore_test) =
        state.store.read(|tx| {
            let cursors = state
                .sinks
                .configs()?
                .into_iter()
                .map(|s| Ok((s.name.clone(), sinks::cursor(tx, &s.name)?)))
                .collect::<Result<Vec<_>, tether_store::Error>>()?;
            Ok::<_, tether_store::Error>((
                auth::tokens::list(tx, None)?,
                pki::outstanding_tokens(tx, now)?,
                backup::newest(tx)?,
                audit::newest_time(tx)?,
                audit::head(tx)?,
                cursors,
                checkpoints::oldest_unchecked(tx)?,
                pki::list_workers(tx)?,
                backup::newest_restore_test(tx)?,
            ))
        })?;
    f.tokens = tokens
        .into_iter()
        .map(|t| TokenFact { id: t.id, created_at: t.created_at, expires_at: t.expires_at, last_used: t.last_used })
        .collect();
    f.enrollment_tokens = enrollment;
    f.newest_backup = newest_backup;
    f.newest_restore_test = restore_test;
    f.newest_record = newest_record;
    f.audit_broken = match state.evidence.verify_new().await? {
        Verdict::Intact(_) => None,
        Verdict::Broken(why) => Some(why.to_string()),
    };
    let running = state.sinks.status();
    let head_seq = head.map(|h| h.seq);
    f.sinks = cursors
        .into_iter()
        .map(|(name, delivered)| {
            let backlog = match (head_seq, delivered) {
                (Some(h), Some(d)) => h.saturating_sub(d),
                (Some(h), None) => h + 1,
                (None, _) => 0,
            };
            let down_since = running.get(&name).and_then(|s| s.down_since);
            SinkFact { name, down_since, backlog }
        })
        .collect();
    f.audit_retention = config.audit_retention;
    let hardening = tether_domain::vault::memory::hardening();
    f.host = posture::host::HostFacts::of_this_process(&config.data_dir, hardening.core_dumps_off);
    f.disk_low = state.space.is_low();
    f.upstreams = state.llm.upstreams()?.into_iter().map(|u| (u.name, u.url)).collect();
    let keys = state.llm.keys(None)?;
    f.llm_keys = keys.len();
    f.unlimited_keys =
        keys.iter().filter(|k| k.limits.rpm.is_none() && k.limits.tpm.is_none()).map(|k| k.id.clone()).collect();
    f.unrestricted_keys =
        keys.iter().filter(|k| k.enforcement == Enforcement::Unrestricted).map(|k| k.id.clone()).collect();
    f.prompt_logging_keys = keys.iter().filter(|k| k.policy.log_prompts).count();
    f.prompt_log_retention = config.llm_prompt_log_retention;
    f.unsealed_since = state.vault.unsealed_since();
    f.max_unsealed = config.max_unsealed;
    f.tls_versions = state.crypto.policy.tls_versions.clone();
    f.tls_suites = state.crypto.policy.tls_suites.clone();
    let set = state.certs.ca_set(&state.store)?;
    f.certs = certificates(&state.certs.served(), &set)?;
    f.rotation = set.rotation.map(|r| (format!("{:?}", r.phase).to_lowercase(), r.started_at));
    // Every worker renews (onto the new CA) within its lifetime.
    f.rotation_limit = (config.worker_cert_lifetime * 2).max(Duration::from_secs(7 * 86400));
    f.sso_issuer = config.sso.as_ref().map(|s| s.issuer.clone());
    f.oldest_unchecked = oldest_unchecked;
    f.checkpoint_interval = config.audit_checkpoint_interval;
    let silent: HashMap<_, _> = state.monitor.silent(now)?.into_iter().collect();
    let parked: HashSet<_> = state.broker.parked_workers().into_iter().collect();
    f.workers = workers
        .into_iter()
        .map(|w| WorkerFact {
            id: w.id.to_string(),
            revoked: w.revoked,
            cert_not_after: w.cert_not_after,
            silent_for: silent.get(&w.id).copied(),
            parked: parked.contains(&w.id),
        })
        .collect();
    f.worker_cert_lifetime = config.worker_cert_lifetime;
    Ok(f)
}

/// The listeners' certificates and the CAs, with when each expires.
fn certificates(served: &Served, set: &CaSet) -> Result<Vec<CertFact>, ApiError> {
    let fact = |name: &str, is_ca: bool, pem: &str| -> Result<CertFact, ApiError> {
        let (_, not_after) = pki::cert_validity(pem).map_err(ApiError::internal)?;
        Ok(CertFact { name: name.into(), is_ca, not_after })
    };
    let mut certs = vec![fact("worker listener", false, &served.own)?, fact("CA", true, &set.current)?];
    if let Some((pem, _)) = &served.operator {
        certs.push(fact("console listener", false, pem)?);
    }
    if let Some(r) = &set.rotation {
        certs.push(fact("next CA", true, &r.next_pem)?);
    }
    Ok(certs)
}

fn person(u: auth::users::UserInfo) -> Person {
    Person {
        sso: u.created_by == "sso",
        name: u.name,
        role: u.role,
        disabled: u.disabled,
        second_factor: u.second_factor,
        must_change_password: u.must_change_password,
    }
}

/// Whether `file` lies on the filesystem that holds `dir` (one stolen disk
/// would carry both). A file that cannot be read is treated as beside it.
fn same_filesystem(file: &Path, dir: &Path) -> bool {
    match (std::fs::metadata(file), std::fs::metadata(dir)) {
        (Ok(f), Ok(d)) => f.dev() == d.dev(),
        _ => true,
    }
}
