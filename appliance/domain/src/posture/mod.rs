//! The appliance grading its own deployment: a fixed list of checks over a
//! snapshot of facts ([`Facts`], gathered by the API from the services and
//! the host), each with a stable dotted id, a severity, a status, the
//! evidence it saw and the exact remediation; a weighted score and grade.
//!
//! Rules: checks are pure functions of [`Facts`] (so each is tested with
//! one setting that passes and one that fails); evidence names what was
//! seen — counts, names, ids, modes — never a secret value; every run is
//! audited (`security.checked`), and a change of score since the last run
//! too (`security.score_changed`).

mod checks;
pub mod host;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Event, Origin, Resource};
use crate::auth::Role;
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Store, WriteTx};

pub use checks::{CHECKS, assess};

/// How much a failing check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Its share of the score.
    fn weight(self) -> u32 {
        match self {
            Severity::Info => 0,
            Severity::Low => 1,
            Severity::Medium => 3,
            Severity::High => 6,
            Severity::Critical => 10,
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Severity, String> {
        match s {
            "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(format!("{other:?}: a severity is critical, high, medium, low or info")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Worth a look; counts half.
    Warn,
    NotApplicable,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    /// What the check saw (never a secret).
    pub evidence: String,
    /// The command or setting that fixes it.
    pub remediation: String,
}

/// Every check's result, the score and the grade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub score: u32,
    pub grade: String,
    pub checks: Vec<Finding>,
}

impl Report {
    /// Scores `checks`: each applicable check weighs its severity; a pass
    /// earns all of it, a warning half, a failure none.
    pub fn new(checks: Vec<Finding>) -> Report {
        let (mut earned, mut possible) = (0u32, 0u32);
        for c in &checks {
            let w = c.severity.weight() * 2;
            match c.status {
                Status::Pass => (earned, possible) = (earned + w, possible + w),
                Status::Warn => (earned, possible) = (earned + w / 2, possible + w),
                Status::Fail => possible += w,
                Status::NotApplicable => {}
            }
        }
        let score = (earned * 100).checked_div(possible).unwrap_or(100);
        let grade = match score {
            90.. => "A",
            80..=89 => "B",
            70..=79 => "C",
            60..=69 => "D",
            _ => "F",
        };
        Report { score, grade: grade.into(), checks }
    }

    /// Whether any check fails at `severity` or above (`--fail-on`).
    pub fn fails_at(&self, severity: Severity) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail && c.severity >= severity)
    }

    /// Replaces the findings with the same ids (the CLI's own host checks).
    pub fn merge(self, local: Vec<Finding>) -> Report {
        let mut checks = self.checks;
        for finding in local {
            match checks.iter_mut().find(|c| c.id == finding.id) {
                Some(slot) => *slot = finding,
                None => checks.push(finding),
            }
        }
        Report::new(checks)
    }
}

/// What the checks look at: a snapshot, taken by the caller.
#[derive(Debug, Clone)]
pub struct Facts {
    pub now: Timestamp,
    /// Files `serve --dev` leaves in the data directory, found there.
    pub dev_files: Vec<String>,
    /// The unattended unseal key file, when one is configured.
    pub key_file: Option<KeyFile>,
    pub fips_mode: bool,
    /// The site's policy (`fips_required`).
    pub fips_required: bool,
    pub self_tests_passed: bool,
    pub people: Vec<Person>,
    pub second_factor_roles: Vec<Role>,
    pub tokens: Vec<TokenFact>,
    /// When each outstanding enrollment token was made.
    pub enrollment_tokens: Vec<Timestamp>,
    /// `None`: the chain verifies; else where it breaks.
    pub audit_broken: Option<String>,
    pub sinks: Vec<SinkFact>,
    pub audit_retention: Duration,
    /// When the newest backup was taken.
    pub newest_backup: Option<Timestamp>,
    pub host: host::HostFacts,
    pub disk_low: bool,
    /// The newest audit record's time (a clock before it has gone back).
    pub newest_record: Option<Timestamp>,
    pub upstreams: Vec<(String, String)>,
    /// Virtual keys with neither a request nor a token rate limit.
    pub unlimited_keys: Vec<String>,
    pub llm_keys: usize,
    /// Virtual keys at the `unrestricted` level: no enforcement prompt goes first.
    pub unrestricted_keys: Vec<String>,
    /// Since when the vault has been unsealed (`None`: sealed).
    pub unsealed_since: Option<Timestamp>,
    /// The site's policy (`max_unsealed`): seal at least this often.
    pub max_unsealed: Option<Duration>,
    /// The TLS versions and cipher suites the listeners accept, as rustls names them.
    pub tls_versions: Vec<String>,
    pub tls_suites: Vec<String>,
    /// The listeners' certificates and the CAs.
    pub certs: Vec<CertFact>,
    /// A CA rotation in progress: its phase and when it began.
    pub rotation: Option<(String, Timestamp)>,
    /// A rotation still in progress after this is stuck (every worker
    /// renews, and so moves to the new CA, well within it).
    pub rotation_limit: Duration,
    /// The single sign-on provider's issuer, when one is configured.
    pub sso_issuer: Option<String>,
    /// The oldest audit record no signed checkpoint covers yet.
    pub oldest_unchecked: Option<Timestamp>,
    pub checkpoint_interval: Duration,
    /// When a backup was last shown to restore.
    pub newest_restore_test: Option<Timestamp>,
    /// Virtual keys that log prompts, and how long the log keeps them.
    pub prompt_logging_keys: usize,
    pub prompt_log_retention: Duration,
    pub workers: Vec<WorkerFact>,
    /// Worker certificates are issued for this long.
    pub worker_cert_lifetime: Duration,
}

impl Facts {
    /// Workers not revoked.
    fn active_workers(&self) -> impl Iterator<Item = &WorkerFact> {
        self.workers.iter().filter(|w| !w.revoked)
    }

    /// Nothing seen yet, at `now` (the caller fills in what it gathers).
    pub fn at(now: Timestamp) -> Facts {
        Facts {
            now,
            dev_files: Vec::new(),
            key_file: None,
            fips_mode: false,
            fips_required: false,
            self_tests_passed: false,
            people: Vec::new(),
            second_factor_roles: Vec::new(),
            tokens: Vec::new(),
            enrollment_tokens: Vec::new(),
            audit_broken: None,
            sinks: Vec::new(),
            audit_retention: Duration::ZERO,
            newest_backup: None,
            host: host::HostFacts::default(),
            disk_low: false,
            newest_record: None,
            upstreams: Vec::new(),
            unlimited_keys: Vec::new(),
            llm_keys: 0,
            unrestricted_keys: Vec::new(),
            unsealed_since: None,
            max_unsealed: None,
            tls_versions: Vec::new(),
            tls_suites: Vec::new(),
            certs: Vec::new(),
            rotation: None,
            rotation_limit: Duration::ZERO,
            sso_issuer: None,
            oldest_unchecked: None,
            checkpoint_interval: Duration::ZERO,
            newest_restore_test: None,
            prompt_logging_keys: 0,
            prompt_log_retention: Duration::ZERO,
            workers: Vec::new(),
            worker_cert_lifetime: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyFile {
    pub path: String,
    /// On the same filesystem as the data directory (one stolen disk holds both).
    pub beside_data: bool,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    /// TOTP here; for a single sign-on person, their last sign-in's
    /// provider vouched for one, or they hold the appliance's TOTP.
    pub second_factor: bool,
    /// Signed in through the identity provider.
    pub sso: bool,
    pub must_change_password: bool,
}

#[derive(Debug, Clone)]
pub struct TokenFact {
    pub id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub last_used: Option<Timestamp>,
}

/// A certificate the appliance serves or trusts.
#[derive(Debug, Clone)]
pub struct CertFact {
    /// `console listener`, `worker listener`, `CA` or `next CA`.
    pub name: String,
    pub is_ca: bool,
    pub not_after: Timestamp,
}

/// An enrolled worker.
#[derive(Debug, Clone)]
pub struct WorkerFact {
    pub id: String,
    pub revoked: bool,
    pub cert_not_after: Timestamp,
    /// Not heard from for this long, past the silence grace.
    pub silent_for: Option<Duration>,
    /// A poll of its is parked now.
    pub parked: bool,
}

#[derive(Debug, Clone)]
pub struct SinkFact {
    pub name: String,
    /// Down since then (it cannot deliver).
    pub down_since: Option<Timestamp>,
    /// Records written but not yet delivered.
    pub backlog: u64,
}

/// The score of the last run, to audit a change.
const LAST_SCORE: Collection<u32> = Collection::new("security_posture");
const LAST_SCORE_KEY: &[u8] = b"last_score";
/// The last run, for the dashboard.
const LAST_RUN: Collection<LastRun> = Collection::new("security_posture_last_run");
const LAST_RUN_KEY: &[u8] = b"last_run";

/// What the last run found, in brief.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    pub score: u32,
    pub grade: String,
    /// How many checks failed.
    pub failing: u32,
    pub at: Timestamp,
}

/// The last run, if the check ever ran.
pub fn last_run(tx: &tether_store::ReadTx) -> Result<Option<LastRun>, store::Error> {
    tx.get(LAST_RUN, LAST_RUN_KEY)
}

/// Audits a run: its score and failing checks, and a change of score.
pub async fn record(store: &Store, origin: &Origin, now: Timestamp, report: &Report) -> Result<(), store::Error> {
    let (origin, score, grade) = (origin.clone(), report.score, report.grade.clone());
    let failing: Vec<String> =
        report.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.id.clone()).collect();
    store.write(move |tx| write_record(tx, now, &origin, score, &grade, &failing)).await
}

fn write_record(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    score: u32,
    grade: &str,
    failing: &[String],
) -> Result<(), store::Error> {
    let event = Event::new("security.checked", "check", Resource::new("security_posture", "appliance"))
        .detail("score", score)
        .detail("grade", grade)
        .detail("failing", failing.join(","));
    audit::append(tx, now, origin, event)?;
    let previous = tx.get(LAST_SCORE, LAST_SCORE_KEY)?;
    if previous.is_some_and(|p| p != score) {
        let event = Event::new("security.score_changed", "check", Resource::new("security_posture", "appliance"))
            .detail("from", previous.unwrap_or_default())
            .detail("to", score);
        audit::append(tx, now, origin, event)?;
    }
    let failing = u32::try_from(failing.len()).unwrap_or(u32::MAX);
    tx.put(LAST_RUN, LAST_RUN_KEY, &LastRun { score, grade: grade.to_owned(), failing, at: now })?;
    tx.put(LAST_SCORE, LAST_SCORE_KEY, &score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity, status: Status) -> Finding {
        Finding {
            id: "x".into(),
            title: String::new(),
            severity,
            status,
            evidence: String::new(),
            remediation: String::new(),
        }
    }

    #[test]
    fn the_score_weighs_severity_and_warnings_count_half() {
        use Severity as S;
        use Status as T;
        assert_eq!(Report::new(vec![finding(S::High, T::Pass), finding(S::Low, T::NotApplicable)]).score, 100);
        let r = Report::new(vec![finding(S::Critical, T::Fail), finding(S::Critical, T::Pass)]);
        assert_eq!((r.score, r.grade.as_str()), (50, "F"));
        assert_eq!(Report::new(vec![finding(S::Medium, T::Warn)]).score, 50);
        assert!(r.fails_at(S::High) && !Report::new(vec![finding(S::Low, T::Fail)]).fails_at(S::Medium));
    }
}
