//! Upgrading a data directory the broker core made (before the vault):
//! `fixtures/pre-vault.tar.gz` was written by that build
//! (`scripts/make-pre-vault-fixture.sh`), with what its API said about every
//! task. The upgrade is killed mid-way, resumed, and then every task must
//! read as it did, work must go on, and no plaintext may be left on disk.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use tether_base::clock::Clock;

use crate::harness::{Appliance, bin, fast_env};
use crate::vault::{assert_absent, files_under, find};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/pre-vault.tar.gz");
/// Every task input in the fixture starts with one of these, and every error
/// message holds the last: if any survived in plaintext, its prefix would too.
const PLAINTEXT_MARKS: [&str; 3] = ["pre-vault-input-", "pre-vault-waiting-", "pre-vault-error-canary"];

/// Unpacks the fixture into `dir` (`dir/data`, `dir/expected.json`) and
/// gives it a fresh server certificate from its own CA: the one it was
/// made with expires a year after it was made.
fn unpack_fixture(dir: &Path) -> Value {
    let status = Command::new("tar").arg("xzf").arg(FIXTURE).arg("-C").arg(dir).status().unwrap();
    assert!(status.success(), "unpacking the fixture");
    let data = dir.join("data");
    let ca_pem = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(data.join("ca.key")).unwrap();
    let ca = tether_domain::pki::Ca::load(&ca_pem, &ca_key).unwrap();
    let server = ca
        .issue_server_cert(&[], tether_base::clock::SystemClock.now(), tether_domain::pki::SERVER_CERT_LIFETIME)
        .unwrap();
    std::fs::write(data.join("server.pem"), server.cert_pem).unwrap();
    std::fs::write(data.join("server.key"), server.key_pem).unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

fn tether(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(bin()).args(args).arg("--data-dir").arg(data).output().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tether upgrade`, killed with SIGKILL as soon as it reports its first
/// sealed batch. Returns what it printed on stderr.
fn upgrade_killed_mid_way(data: &Path, key_file: &Path) -> Vec<String> {
    let mut child = Command::new(bin())
        .args(["upgrade", "--unseal", "key-file", "--key-file"])
        .arg(key_file)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let progress = line.starts_with("sealed ");
        seen.push(line);
        if progress {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the upgrade finished before it could be killed: {seen:?}");
    seen
}

/// `sealed`/`total` from "… N of M tasks …".
fn counts_in(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "of").unwrap_or_else(|| panic!("no count in {line:?}"));
    (words[at - 1].parse().unwrap(), words[at + 1].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_core_directory_upgrades_through_a_kill_9_and_every_task_reads_as_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let expected = unpack_fixture(dir.path());
    let data = dir.path().join("data");
    let key_file = dir.path().join("unseal.key");

    // The fixture really is plaintext: the search below would find it.
    let before = files_under(&data);
    for mark in PLAINTEXT_MARKS {
        assert!(before.iter().any(|(_, bytes)| find(bytes, mark.as_bytes())), "{mark} not in the fixture");
    }

    // A line from the middle of the CA's private key, to look for later.
    let ca_key_line = std::fs::read_to_string(data.join("ca.key")).unwrap().lines().nth(2).unwrap().to_owned();

    let refused = tether(&["serve"], &data);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("tether upgrade --data-dir"), "{}", stderr(&refused));

    // Killed after its first batch: the vault is recorded, some tasks are sealed.
    let seen = upgrade_killed_mid_way(&data, &key_file);
    assert!(seen.iter().any(|l| l.contains("vault recorded")), "{seen:?}");
    assert!(!data.join("ca.key").exists(), "the plaintext CA key outlived the vault's creation");
    let refused = tether(&["serve"], &data);
    assert!(stderr(&refused).contains("stopped after sealing"), "{}", stderr(&refused));

    // Resuming needs the credentials; wrong ones change nothing.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, "not a key\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = tether(&["upgrade", "--key-file", wrong.to_str().unwrap()], &data);
    assert!(!out.status.success() && stderr(&out).contains("key file"), "{}", stderr(&out));

    let out = tether(&["upgrade", "--key-file", key_file.to_str().unwrap()], &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = stderr(&out);
    let (sealed, total) = counts_in(resumed.lines().find(|l| l.starts_with("resuming")).unwrap());
    assert!(sealed > 0 && sealed < total, "the kill did not land mid-way: {resumed}");
    assert_eq!(total as usize, expected["tasks"].as_array().unwrap().len());
    let again = tether(&["upgrade"], &data);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));

    // No plaintext is left anywhere in the directory: not the task data, not the CA key.
    let after = files_under(&data);
    assert_absent(&PLAINTEXT_MARKS, &after);
    assert_absent(&[ca_key_line.as_str()], &after);

    let mut a = Appliance::adopt(dir, expected["admin_token"].as_str().unwrap(), Some(key_file), fast_env());
    let api = a.api();
    for want in expected["tasks"].as_array().unwrap() {
        let id = want["id"].as_str().unwrap();
        let (s, got) = api.get(&format!("/api/v1/tasks/{id}")).await;
        assert_eq!(s, 200, "{got}");
        for field in ["kind", "input", "result", "error", "labels", "priority"] {
            assert_eq!(got[field], want[field], "{field} of task {id}");
        }
        // The one leased when the old appliance stopped has since lost its lease.
        if want["state"] != "leased" {
            assert_eq!(got["state"], want["state"], "state of task {id}");
        }
    }

    // Idempotency keys still hold: the same request gets the same task, a
    // different one a conflict (the digests were keyed during the upgrade).
    for entry in expected["idempotency"].as_array().unwrap().iter().take(20) {
        let key = entry["key"].as_str().unwrap();
        let (s, same, headers) = api
            .send(reqwest::Method::POST, "/api/v1/tasks", Some(&entry["request"]), &[("Idempotency-Key", key)])
            .await;
        assert_eq!((s, &same["id"]), (201, &entry["task"]), "{same}");
        assert_eq!(headers["idempotent-replayed"], "true");
        let mut other = entry["request"].clone();
        other["priority"] = json!(0);
        other["input"] = json!({"changed": true});
        let (s, body, _) =
            api.send(reqwest::Method::POST, "/api/v1/tasks", Some(&other), &[("Idempotency-Key", key)]).await;
        assert_eq!((s, body["code"].as_str()), (422, Some("idempotency_conflict")), "{body}");
    }

    // Work goes on: a worker with the label the waiting tasks need runs them all.
    let worker = a.worker("gpu", &["gpu"], None).await;
    for want in expected["tasks"].as_array().unwrap().iter().filter(|t| t["state"] == "queued") {
        let done = api.wait(want["id"].as_str().unwrap(), 60).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["result"], want["input"]);
    }

    // The chain holds across the upgrade, and the upgrade is in it.
    drop(worker);
    a.stop();
    let (ok, report) = a.audit_verify();
    assert!(ok, "{report}");
    let types: Vec<Value> = a.audit_records().into_iter().map(|r| r["event_type"].clone()).collect();
    for event in ["system.upgrade_started", "vault.created", "system.upgraded"] {
        assert!(types.contains(&json!(event)), "no {event} in the audit log");
    }
}
