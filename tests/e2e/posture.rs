//! `tether security-check`: an appliance set up as README's "running it for
//! real" grades itself A with no failing high or critical check; one set up
//! carelessly fails each careless setting by id, with its fix, and
//! `--fail-on high` tells the two apart in the exit code.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::harness::{Appliance, fast_env};

/// `tether security-check --json [ARGS]` against `a`: the exit code and the report.
fn security_check(a: &Appliance, args: &[&str]) -> (i32, Value) {
    let out = a.cli(&[&["security-check", "--json"], args].concat()).output().unwrap();
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

/// The report's checks by id.
fn by_id(report: &Value) -> BTreeMap<String, Value> {
    report["checks"].as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap().to_owned(), c.clone())).collect()
}

fn failing(report: &Value) -> Vec<String> {
    by_id(report).into_iter().filter(|(_, c)| c["status"] == "fail").map(|(id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_careful_setup_grades_a_and_a_careless_one_fails_each_careless_setting_by_id() {
    // Careful: officer shares, run confined, every admin and officer with
    // TOTP, two officers, a backup taken and its restore tested.
    let good = Appliance::start_confined(&["--unseal", "shares"], fast_env());
    let shares: Vec<String> =
        good.init["unseal"]["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    let share_files: Vec<String> = shares
        .iter()
        .enumerate()
        .take(3)
        .map(|(i, share)| {
            let path = good.dir.path().join(format!("share-{i}"));
            std::fs::write(&path, share).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path.display().to_string()
        })
        .collect();
    let with_shares = |args: &[&str]| {
        let mut cmd = good.cli(args);
        for f in &share_files {
            cmd.args(["--share-file", f]);
        }
        cmd
    };
    let out = with_shares(&["unseal"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let initial = good.init["admin_password"].as_str().unwrap().to_owned();
    good.first_login("admin", &initial, "admin").await;
    let first_officer = good.person("sam", "security_officer").await;
    good.person("tess", "security_officer").await;
    let (s, v) = first_officer.console.post("/api/v1/users/tess/role/approve", &json!({})).await;
    assert_eq!((s, v["role"].as_str()), (200, Some("security_officer")), "{v}");
    let backup = good.dir.path().join("tether.backup");
    let out = good.cli(&["backup", "--out", backup.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = with_shares(&["restore-test", backup.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tested: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&tested["epoch"], &tested["recorded"]), (&json!(1), &json!(true)), "{tested}");

    let data_dir = good.data_dir().display().to_string();
    let (code, report) = security_check(&good, &["--fail-on", "high", "--data-dir", &data_dir]);
    let checks = by_id(&report);
    let high_failures: Vec<&String> = checks
        .iter()
        .filter(|(_, c)| c["status"] == "fail" && matches!(c["severity"].as_str(), Some("high" | "critical")))
        .map(|(id, _)| id)
        .collect();
    assert!(
        high_failures.is_empty(),
        "failing high/critical checks on the careful setup: {high_failures:?}\n{report:#}"
    );
    assert!(report["score"].as_u64().unwrap() >= 90, "{report:#}");
    assert_eq!(report["grade"], "A", "{report:#}");
    assert_eq!(code, 0, "--fail-on high passes the careful setup: {report:#}");
    for id in ["backups.stale", "backups.restore-untested", "people.admin-without-mfa", "people.too-few-officers"] {
        assert_eq!(checks[id]["status"], "pass", "{id}: {:#}", checks[id]);
    }
    if rustix::process::geteuid().is_root() {
        for id in ["host.running-as-root", "host.no-new-privs", "host.capabilities"] {
            assert_eq!(checks[id]["status"], "pass", "{id}: {:#}", checks[id]);
        }
    }
    for c in checks.values() {
        for field in ["id", "title", "severity", "status", "evidence", "remediation"] {
            assert!(c[field].as_str().is_some_and(|v| !v.is_empty()), "{field} of {c}");
        }
    }
    // The run is audited with its score.
    let records = good.api().audit_log().await;
    let checked = records.iter().rev().find(|r| r["event_type"] == "security.checked").expect("audited");
    assert_eq!(checked["metadata"]["details"]["score"], report["score"].to_string().as_str(), "{checked}");

    // Careless: `serve --dev` (its key and token beside the data), an admin
    // without TOTP, a year-long token, a data directory others can read, no backup.
    let bad = Appliance::start_dev(vec![("TETHER_TOKEN_MAX_TTL", "400d")]);
    let (s, v) = bad
        .api()
        .post("/api/v1/users", &json!({"name": "ada", "role": "admin", "password": "ada-first-pw-2026"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = bad.api().post("/api/v1/tokens", &json!({"role": "admin", "name": "forever", "ttl": "365d"})).await;
    assert_eq!(s, 201, "{v}");
    let data = bad.data_dir();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(data.join("tether.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let bad_dir = data.display().to_string();
    let (code, report) = security_check(&bad, &["--fail-on", "high", "--data-dir", &bad_dir]);
    assert_eq!(code, 2, "--fail-on high fails the careless setup: {report:#}");
    let checks = by_id(&report);
    let expected = [
        ("vault.dev-mode", "dev-unseal.key"),
        ("vault.key-file-beside-data", "dev-unseal.key"),
        ("people.admin-without-mfa", "ada"),
        ("people.initial-admin-password", "admin"),
        ("tokens.long-lived", "365 d"),
        ("host.data-dir-permissions", "tether.redb (0644)"),
        ("backups.stale", "no backup"),
        ("backups.restore-untested", "no restore"),
    ];
    for (id, seen) in expected {
        let c = &checks[id];
        assert_eq!(c["status"], "fail", "{id}: {c:#}");
        assert!(c["evidence"].as_str().unwrap().contains(seen), "{id}'s evidence names {seen:?}: {c:#}");
        assert!(c["remediation"].as_str().unwrap().len() > 20, "{id} says how to fix it: {c:#}");
    }
    assert!(report["score"].as_u64().unwrap() < 70, "{report:#}");
    // Without --fail-on the exit code says nothing of the findings.
    assert_eq!(security_check(&bad, &[]).0, 0, "{:?}", failing(&report));

    // Evidence names files, people and ids, never a secret.
    let text = report.to_string();
    assert!(!text.contains(&bad.admin_token), "the admin token is in the report");
    assert!(!text.contains("ada-first-pw-2026"), "a password is in the report");
}
