use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::posture::{CertFact, KeyFile, Person, SinkFact, TokenFact, WorkerFact};
use tether_base::clock::Timestamp;

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const DAY: Duration = Duration::from_secs(86400);

fn ago(d: Duration) -> Timestamp {
    Timestamp::from_millis(NOW.as_millis() - d.as_millis() as u64)
}

fn person(name: &str, role: Role) -> Person {
    Person { name: name.into(), role, disabled: false, second_factor: true, sso: false, must_change_password: false }
}

/// A setup as README's "running it for real" leaves it.
fn good() -> Facts {
    Facts {
        key_file: Some(KeyFile { path: "/run/credentials/tether.service/unseal".into(), beside_data: false }),
        fips_mode: true,
        fips_required: true,
        self_tests_passed: true,
        people: vec![
            person("ada", Role::Admin),
            person("sam", Role::SecurityOfficer),
            person("tess", Role::SecurityOfficer),
            Person { second_factor: false, ..person("dev", Role::Developer) },
            Person { sso: true, ..person("sso:otto", Role::Admin) },
        ],
        second_factor_roles: vec![Role::Admin, Role::SecurityOfficer],
        tokens: vec![TokenFact {
            id: "t1".into(),
            created_at: ago(10 * DAY),
            expires_at: NOW.plus(20 * DAY),
            last_used: Some(ago(DAY)),
        }],
        enrollment_tokens: vec![ago(Duration::from_secs(60))],
        sinks: vec![SinkFact { name: "siem".into(), down_since: None, backlog: 0 }],
        audit_retention: 365 * DAY,
        newest_backup: Some(ago(DAY)),
        host: crate::posture::host::HostFacts {
            euid: 990,
            no_new_privs: Some(true),
            cap_eff: Some(0),
            core_dumps_off: true,
            exposed: vec![],
        },
        newest_record: Some(ago(Duration::from_secs(5))),
        upstreams: vec![("local".into(), "http://127.0.0.1:8000".into()), ("gpu".into(), "https://gpu.lan".into())],
        llm_keys: 2,
        unsealed_since: Some(ago(DAY)),
        max_unsealed: Some(7 * DAY),
        tls_versions: vec!["TLSv1_3".into(), "TLSv1_2".into()],
        tls_suites: vec!["TLS13_AES_256_GCM_SHA384".into(), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()],
        certs: vec![
            CertFact { name: "console listener".into(), is_ca: false, not_after: NOW.plus(300 * DAY) },
            CertFact { name: "CA".into(), is_ca: true, not_after: NOW.plus(3000 * DAY) },
        ],
        rotation: Some(("added".into(), ago(DAY))),
        rotation_limit: 2 * DAY,
        sso_issuer: Some("https://idp.lan".into()),
        oldest_unchecked: Some(ago(Duration::from_secs(30))),
        checkpoint_interval: Duration::from_secs(60),
        newest_restore_test: Some(ago(10 * DAY)),
        prompt_logging_keys: 1,
        prompt_log_retention: 30 * DAY,
        workers: vec![
            WorkerFact {
                id: "w1".into(),
                revoked: false,
                cert_not_after: NOW.plus(DAY - Duration::from_secs(3600)),
                silent_for: None,
                parked: true,
            },
            WorkerFact { id: "w2".into(), revoked: true, cert_not_after: ago(DAY), silent_for: None, parked: false },
        ],
        worker_cert_lifetime: DAY,
        ..Facts::at(NOW)
    }
}

/// A change to the good setup.
type Breaker = fn(&mut Facts);

/// For every check: a change to the good setup that makes it fail.
fn breakers() -> Vec<(&'static str, Breaker)> {
    vec![
        ("vault.dev-mode", |f| f.dev_files = vec!["dev-unseal.key".into()]),
        ("vault.key-file-beside-data", |f| f.key_file.as_mut().unwrap().beside_data = true),
        ("crypto.fips-required", |f| f.fips_mode = false),
        ("crypto.self-tests", |f| f.self_tests_passed = false),
        ("people.initial-admin-password", |f| f.people[0].must_change_password = true),
        ("people.admin-without-mfa", |f| f.people[1].second_factor = false),
        ("people.too-few-officers", |f| f.people[2].disabled = true),
        ("tokens.long-lived", |f| f.tokens[0].expires_at = f.tokens[0].created_at.plus(365 * DAY)),
        ("tokens.unused", |f| f.tokens[0].last_used = Some(ago(120 * DAY))),
        ("tokens.stale-enrollment", |f| f.enrollment_tokens.push(ago(2 * DAY))),
        ("audit.chain", |f| f.audit_broken = Some("record 17: hash mismatch".into())),
        ("audit.siem", |f| f.sinks[0].down_since = Some(ago(Duration::from_secs(600)))),
        ("audit.retention", |f| f.audit_retention = 30 * DAY),
        ("backups.stale", |f| f.newest_backup = Some(ago(8 * DAY))),
        ("host.data-dir-permissions", |f| f.host.exposed = vec!["/var/lib/tether/tether.redb (0644)".into()]),
        ("host.running-as-root", |f| f.host.euid = 0),
        ("host.no-new-privs", |f| f.host.no_new_privs = Some(false)),
        ("host.capabilities", |f| f.host.cap_eff = Some(0x20)),
        ("host.core-dumps", |f| f.host.core_dumps_off = false),
        ("host.disk-reserve", |f| f.disk_low = true),
        ("host.clock-rollback", |f| f.newest_record = Some(NOW.plus(DAY))),
        ("llm.upstream-plain-http", |f| f.upstreams.push(("far".into(), "http://10.0.0.7:11434".into()))),
        ("llm.key-without-limits", |f| f.unlimited_keys = vec!["k1".into()]),
        ("llm.no-enforcement-prompt", |f| f.unrestricted_keys = vec!["k2".into()]),
        ("vault.unsealed-too-long", |f| f.unsealed_since = Some(ago(8 * DAY))),
        ("crypto.tls-policy", |f| f.tls_suites.push("TLS_RSA_WITH_AES_128_CBC_SHA".into())),
        ("pki.cert-expiring", |f| f.certs[0].not_after = NOW.plus(10 * DAY)),
        ("pki.ca-expiring", |f| f.certs[1].not_after = NOW.plus(200 * DAY)),
        ("pki.ca-rotation-stuck", |f| f.rotation = Some(("issuing".into(), ago(30 * DAY)))),
        ("people.admin-and-officer", |f| f.people.push(person("sso:ada", Role::SecurityOfficer))),
        ("audit.checkpoint", |f| f.oldest_unchecked = Some(ago(DAY))),
        ("backups.restore-untested", |f| f.newest_restore_test = None),
        ("sso.issuer-plain-http", |f| f.sso_issuer = Some("http://idp.lan".into())),
        ("llm.prompt-log-retention", |f| f.prompt_log_retention = 365 * DAY),
        ("workers.cert-expiring", |f| f.workers[0].cert_not_after = NOW.plus(Duration::from_secs(3600))),
        ("workers.silent", |f| f.workers[0].silent_for = Some(Duration::from_secs(600))),
        ("workers.revoked-parked", |f| f.workers[1].parked = true),
    ]
}

fn status_of(report: &Report, id: &str) -> Status {
    report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}")).status
}

#[test]
fn the_good_setup_passes_every_check_and_scores_full() {
    let report = assess(&good());
    for c in &report.checks {
        assert_eq!(c.status, Status::Pass, "{}: {}", c.id, c.evidence);
    }
    assert_eq!((report.score, report.grade.as_str()), (100, "A"));
}

#[test]
fn each_check_fails_on_its_own_bad_setting_and_says_how_to_fix_it() {
    let table = breakers();
    let ids: BTreeSet<&str> = CHECKS.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), CHECKS.len(), "ids are unique");
    assert_eq!(ids, table.iter().map(|(id, _)| *id).collect(), "every check has a failing case");
    for (id, breaks) in table {
        let mut facts = good();
        breaks(&mut facts);
        let report = assess(&facts);
        let finding = report.checks.iter().find(|c| c.id == id).unwrap();
        assert_eq!(finding.status, Status::Fail, "{id}: {}", finding.evidence);
        assert!(!finding.remediation.is_empty() && !finding.evidence.is_empty(), "{id}");
        let others_failing: Vec<&str> =
            report.checks.iter().filter(|c| c.status == Status::Fail && c.id != id).map(|c| c.id.as_str()).collect();
        assert!(others_failing.is_empty(), "{id} broke others too: {others_failing:?}");
        assert!(report.score < 100, "{id}");
    }
}

#[test]
fn checks_that_do_not_apply_say_so() {
    let mut f = good();
    (f.fips_required, f.upstreams, f.llm_keys) = (false, vec![], 0);
    (f.max_unsealed, f.sso_issuer, f.prompt_logging_keys) = (None, None, 0);
    let report = assess(&f);
    for id in [
        "crypto.fips-required",
        "llm.upstream-plain-http",
        "llm.key-without-limits",
        "llm.no-enforcement-prompt",
        "vault.unsealed-too-long",
        "sso.issuer-plain-http",
        "llm.prompt-log-retention",
    ] {
        assert_eq!(status_of(&report, id), Status::NotApplicable, "{id}");
    }
    f.sinks.clear();
    assert_eq!(status_of(&assess(&f), "audit.siem"), Status::Warn, "no sink at all is a warning");
}

#[test]
fn plain_http_is_only_allowed_to_this_host() {
    for ok in ["http://127.0.0.1:8000", "http://localhost:11434/v1", "http://[::1]:8000", "https://gpu.lan"] {
        assert!(!plain_http_off_loopback(ok), "{ok}");
    }
    for bad in ["http://10.0.0.7:8000", "http://gpu.lan", "http://127.0.0.1.evil.example:80"] {
        assert!(plain_http_off_loopback(bad), "{bad}");
    }
}

#[test]
fn a_single_sign_on_admin_whose_provider_vouched_for_no_second_factor_fails_too() {
    let mut f = good();
    f.people.last_mut().unwrap().second_factor = false;
    let finding = assess(&f).checks.into_iter().find(|c| c.id == "people.admin-without-mfa").unwrap();
    assert_eq!(finding.status, Status::Fail);
    assert!(finding.evidence.contains("sso:otto"), "{}", finding.evidence);
}

#[test]
fn the_readme_lists_every_check_with_its_fix() {
    let readme = include_str!("../../../../../README.md");
    for c in CHECKS {
        let row = readme.lines().find(|l| l.starts_with(&format!("| `{}` |", c.id)));
        let row = row.unwrap_or_else(|| panic!("README's check table has no row for {}", c.id));
        assert!(row.contains(c.title), "README's row for {} does not say what it checks", c.id);
    }
}
