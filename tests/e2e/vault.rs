//! The vault from outside: nothing sensitive at rest or in logs, sealed
//! starts, unsealing by shares, sealing under load, and crashes during key
//! rotation.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Appliance, bin, eventually, fast_env};

/// `text` as the encodings a leak could take: raw, hex, base64 (at every
/// alignment), UTF-16.
fn encodings(text: &str) -> Vec<(String, Vec<u8>)> {
    let raw = text.as_bytes();
    let mut out = vec![
        ("raw".to_owned(), raw.to_vec()),
        ("hex".to_owned(), hex::encode(raw).into_bytes()),
        ("HEX".to_owned(), hex::encode_upper(raw).into_bytes()),
        ("utf-16".to_owned(), text.encode_utf16().flat_map(u16::to_le_bytes).collect()),
    ];
    for shift in 0..3 {
        let mut shifted = vec![b'x'; shift];
        shifted.extend_from_slice(raw);
        let b64 = base64(&shifted);
        // Drop the characters that depend on the neighbours.
        let core = &b64[4..b64.len() - 4];
        out.push((format!("base64+{shift}"), core.as_bytes().to_vec()));
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, with its bytes.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// Panics naming the file and encoding if any canary is found.
pub fn assert_absent(canaries: &[&str], places: &[(String, Vec<u8>)]) {
    for canary in canaries {
        for (encoding, needle) in encodings(canary) {
            for (name, bytes) in places {
                assert!(!find(bytes, &needle), "{canary:?} ({encoding}) found in {name}");
            }
        }
    }
}

fn canary(what: &str) -> String {
    format!("canary{what}{:016x}", fastrand::u64(..))
}

const COMMANDS: &str = r#"
[commands.shout]
argv = ["/bin/sh", "-c", "printf %s \"$0\" | tr a-z A-Z", "{text}"]
[commands.shout.params.text]
type = "string"

[commands.complain]
argv = ["/bin/sh", "-c", "printf %s \"$0\" >&2; exit 1", "{text}"]
[commands.complain.params.text]
type = "string"

# Shows it holds the secret, by digest, in both ways it can receive one.
[commands.digest]
argv = ["/bin/sh", "-c", "sha256sum < \"$TETHER_SECRETS_DIR/key\" | cut -c1-64; printf %s \"$API_KEY\" | sha256sum | cut -c1-64"]
[commands.digest.secrets]
canary-key = { file = "key" }
canary-api = { env = "API_KEY" }
"#;

/// SHA-256 by the system's `sha256sum`, so the check does not lean on the
/// appliance's own code.
fn sha256_hex(text: &str) -> String {
    let out = crate::harness::run_with_stdin(&mut std::process::Command::new("sha256sum"), text.as_bytes());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn task_inputs_results_and_errors_never_reach_the_disk_or_the_logs() {
    let mut env = fast_env();
    env.push(("TETHER_LOG", "debug"));
    let mut a = Appliance::start_logging(env);
    let _w = a.worker("w", &[], Some(COMMANDS)).await;
    let api = a.api();

    let input = canary("input");
    let shouted = input.to_uppercase();
    // The idempotency key is metadata, stored in the clear: the control that
    // shows the search below really reads the store's bytes.
    let control = canary("control");
    let body = json!({"kind": "command", "input": {"command": "shout", "params": {"text": input}}});
    let (s, v, _) =
        api.send(reqwest::Method::POST, "/api/v1/tasks", Some(&body), &[("idempotency-key", &control)]).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let done = api.wait(&id, 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["input"]["params"]["text"], input.as_str(), "the input comes back through the API");
    assert_eq!(done["result"]["stdout"], shouted.as_str(), "the worker got the input; its result comes back");

    let error_text = canary("error");
    let id = api.submit("command", json!({"command": "complain", "params": {"text": error_text}}), &[]).await;
    let failed = api.wait(&id, 30).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains(&error_text), "{failed}");

    // Secrets: one through the CLI from stdin, one through the API.
    let (key, api_key) = (canary("secretfile"), canary("secretenv"));
    let mut put = a.cli(&["secret", "put", "canary-key", "--kind", "command", "--json"]);
    let out = crate::harness::run_with_stdin(&mut put, key.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&shown["name"], &shown["version"]), (&json!("canary-key"), &json!(1)), "{shown}");
    let body = json!({"value": api_key, "policy": {"kinds": ["command"]}});
    let (s, v, _) = api.send(reqwest::Method::PUT, "/api/v1/secrets/canary-api", Some(&body), &[]).await;
    assert_eq!(s, 201, "{v}");
    let body = json!({"kind": "command", "input": {"command": "digest"}, "secrets": ["canary-key", "canary-api"]});
    let (s, v) = api.post("/api/v1/tasks", &body).await;
    assert_eq!(s, 201, "{v}");
    let done = api.wait(v["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let want = format!("{}\n{}\n", sha256_hex(&key), sha256_hex(&api_key));
    assert_eq!(done["result"]["stdout"], want.as_str(), "the worker's command received both values");
    let (_, listed) = api.get("/api/v1/secrets").await;
    let (_, one) = api.get("/api/v1/secrets/canary-key").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    for shown in [listed.to_string(), one.to_string(), done.to_string()] {
        assert!(!shown.contains(&key) && !shown.contains(&api_key), "a secret's value came back: {shown}");
    }

    // Stopped, so every byte the appliance wrote is on disk.
    assert!(a.stop().success());
    let canaries = [input.as_str(), shouted.as_str(), error_text.as_str(), key.as_str(), api_key.as_str()];
    let mut places = files_under(&a.data_dir());
    places.extend(files_under(&a.dir.path().join("worker-w")));
    assert!(places.iter().any(|(n, _)| n.ends_with("tether.redb")), "the store was searched");
    places.push(("the logs".into(), a.logs()));
    assert!(!a.logs().is_empty(), "the logs were captured");
    assert!(places.iter().any(|(_, bytes)| find(bytes, control.as_bytes())), "the control is found");
    assert_absent(&canaries, &places);
}

fn shares_of(a: &Appliance) -> Vec<String> {
    a.init["unseal"]["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn it_starts_sealed_and_any_three_of_five_officer_shares_unseal_it() {
    let a = Appliance::start_sealed(&["--unseal", "shares", "--shares", "5", "--threshold", "3"], fast_env());
    let shares = shares_of(&a);
    assert_eq!(shares.len(), 5);
    let api = a.api();
    let anonymous = api.with_token(None);

    let (s, health) = anonymous.get("/healthz").await;
    assert_eq!((s, &health["sealed"]), (200, &json!(true)));
    let (s, v) = api.post("/api/v1/tasks", &json!({"kind": "echo", "input": {}})).await;
    assert_eq!((s, v["code"].as_str()), (503, Some("sealed")), "{v}");
    let (s, v) = api.get("/api/v1/workers").await;
    assert_eq!((s, v["code"].as_str()), (503, Some("sealed")));

    let unseal = |body: Value| {
        let anonymous = anonymous.clone();
        async move { anonymous.post("/api/v1/sys/unseal", &body).await }
    };
    // A share from another appliance, a mistyped share, a wrong method:
    // each named, none counted.
    let other = Appliance::start_sealed(&["--unseal", "shares"], fast_env());
    let (s, v) = unseal(json!({"share": shares_of(&other)[0]})).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("share_invalid")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("another appliance"), "{v}");
    let mut typo = shares[1].clone();
    let at = typo.len() - 12;
    let digit = if &typo[at..=at] == "0" { "1" } else { "0" };
    typo.replace_range(at..=at, digit);
    let (s, v) = unseal(json!({"share": typo})).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("share_invalid")));
    assert!(v["detail"].as_str().unwrap().contains("share 2 is mistyped"), "{v}");
    assert!(!v.to_string().contains(&shares[1][20..60]), "the refusal does not echo the share");
    let (s, v) = unseal(json!({"passphrase": "not the method"})).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("unseal_refused")));

    // Two good shares (k - 1): still sealed. One through the CLI, from a file.
    let (s, v) = unseal(json!({"share": shares[4]})).await;
    assert_eq!((s, &v["sealed"], &v["shares"]["received"]), (200, &json!(true), &json!(1)), "{v}");
    let share_file = a.dir.path().join("officer-2.share");
    std::fs::write(&share_file, &shares[2]).unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["unseal", "--json", "--share-file"])
        .arg(&share_file)
        .env("TETHER_URL", &a.console)
        .env("TETHER_CA_FILE", a.ca_file());
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "a share file others can read is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&share_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&status["sealed"], &status["shares"]["received"]), (&json!(true), &json!(2)));
    let (s, v) = api.post("/api/v1/tasks", &json!({"kind": "echo", "input": {}})).await;
    assert_eq!((s, v["code"].as_str()), (503, Some("sealed")), "k - 1 shares do not unseal");

    // The third share unseals; the appliance works.
    let (s, v) = unseal(json!({"share": shares[0]})).await;
    assert_eq!((s, &v["sealed"]), (200, &json!(false)), "{v}");
    let _w = a.worker("w", &[], None).await;
    let id = api.submit("echo", json!({"after": "unseal"}), &[]).await;
    assert_eq!(api.wait(&id, 30).await["result"], json!({"after": "unseal"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn sealing_while_workers_poll_and_run_loses_nothing_and_work_goes_on_after_unseal() {
    let a = Appliance::start();
    let config = r#"
concurrency = 4
[commands.nap]
argv = ["/bin/sleep", "{seconds}"]
[commands.nap.params.seconds]
type = "integer"
"#;
    let _w1 = a.worker("w1", &[], Some(config)).await;
    let _w2 = a.worker("w2", &[], Some(config)).await;
    let api = a.api();
    // Two long tasks leased, the workers' other slots parked in polls. The
    // seal may land between a lease's commit and its poll's reply: the task
    // must reach its worker all the same.
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(api.submit("command", json!({"command": "nap", "params": {"seconds": 2}}), &[]).await);
    }
    for id in &ids {
        eventually("the task is leased", Duration::from_secs(30), || async {
            api.get(&format!("/api/v1/tasks/{id}")).await.1["state"] == "leased"
        })
        .await;
    }
    let (s, v) = api.post("/api/v1/sys/seal", &json!({})).await;
    assert_eq!((s, &v["sealed"]), (200, &json!(true)), "{v}");
    let (s, v) = api.post("/api/v1/tasks", &json!({"kind": "echo", "input": {}})).await;
    assert_eq!((s, v["code"].as_str()), (503, Some("sealed")));

    // Sealed for longer than a lease (3 s): the running tasks finish and
    // their workers hold the reports.
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.unseal_from_key_file().await;
    for id in &ids {
        let t = api.wait(id, 30).await;
        assert_eq!((t["state"].as_str(), t["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{t}");
    }
    // The parked polls resumed: new work runs.
    let id = api.submit("echo", json!({"n": 1}), &[]).await;
    let t = api.wait(&id, 30).await;
    assert_eq!(t["state"], "succeeded", "{t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_key_rotation_leaves_everything_readable() {
    let mut a = Appliance::start();
    let api = a.api();
    let mut acknowledged = Vec::new();
    let rotations = tokio::spawn({
        let api = api.clone();
        async move {
            loop {
                match api.try_post("/api/v1/sys/rotate", &json!({})).await {
                    Ok((200, _)) => {}
                    _ => return,
                }
            }
        }
    });
    for i in 0..200u32 {
        let (s, v) = api.post("/api/v1/tasks", &json!({"kind": "echo", "input": {"i": i}})).await;
        assert_eq!(s, 201, "{v}");
        acknowledged.push((v["id"].as_str().unwrap().to_owned(), i));
    }
    a.kill9();
    let _ = rotations.await;

    a.restart();
    let (_, vault) = api.get("/api/v1/sys/vault").await;
    assert!(vault["key_version"].as_u64().unwrap() > 1, "rotations happened: {vault}");
    for (id, i) in &acknowledged {
        let (s, t) = api.get(&format!("/api/v1/tasks/{id}")).await;
        assert_eq!((s, &t["input"]), (200, &json!({"i": i})), "{t}");
    }
    // And the appliance keeps sealing new values with the newest key.
    let _w = a.worker("w", &[], None).await;
    let id = api.submit("echo", json!({"after": "crash"}), &[]).await;
    assert_eq!(api.wait(&id, 30).await["result"], json!({"after": "crash"}));
    eventually("a healthy appliance", Duration::from_secs(5), || async {
        api.get("/healthz").await.1["status"] == "ok"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rekey_with_a_quorum_moves_to_a_passphrase_and_the_old_shares_stop_working() {
    let mut a = Appliance::start_sealed(&["--unseal", "shares", "--shares", "3", "--threshold", "2"], fast_env());
    let shares = shares_of(&a);
    let anonymous = a.api().with_token(None);
    for s in &shares[..2] {
        anonymous.post("/api/v1/sys/unseal", &json!({"share": s})).await;
    }
    let id = a.api().submit("echo", json!({"kept": true}), &[]).await;
    let secret_file = |name: &str, text: &str| {
        let path = a.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        path
    };
    let (s0, s2) = (secret_file("s0", &shares[0]), secret_file("s2", &shares[2]));
    let pass = secret_file("pass", "the new site passphrase");
    let rekey = |current: &[&Path]| {
        let mut cmd = a.cli(&["rekey", "--json", "--new-unseal", "passphrase", "--new-passphrase-file"]);
        cmd.arg(&pass);
        for c in current {
            cmd.arg("--share-file").arg(c);
        }
        cmd.output().unwrap()
    };
    let out = rekey(&[&s0]);
    assert!(!out.status.success(), "one share is not a quorum");
    assert!(String::from_utf8_lossy(&out.stderr).contains("quorum"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = rekey(&[&s2, &s0]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // After a restart (sealed again): the shares are refused, the passphrase works.
    a.stop();
    a.restart();
    let (s, v) = anonymous.post("/api/v1/sys/unseal", &json!({"share": shares[1]})).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("unseal_refused")), "{v}");
    let (s, v) = anonymous.post("/api/v1/sys/unseal", &json!({"passphrase": "the new site passphrase"})).await;
    assert_eq!((s, &v["sealed"]), (200, &json!(false)), "{v}");
    let (s, t) = a.api().get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!((s, &t["input"]), (200, &json!({"kept": true})));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_load_restores_every_acknowledged_task_and_secret_and_an_older_one_needs_an_officer() {
    let mut a = Appliance::start();
    let _w = a.worker("w", &[], Some(COMMANDS)).await;
    let api = a.api();
    let officer = a.officer_token().await;
    let (key, api_key) = (canary("secretfile"), canary("secretenv"));
    for (name, value) in [("canary-key", &key), ("canary-api", &api_key)] {
        let body = json!({"value": value, "policy": {"kinds": ["command"]}});
        let (s, v, _) = api.send(reqwest::Method::PUT, &format!("/api/v1/secrets/{name}"), Some(&body), &[]).await;
        assert_eq!(s, 201, "{v}");
    }
    let backup = |name: &str| {
        let path = a.dir.path().join(name);
        let out = a.cli(&["backup", "--json", "--out", path.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        path
    };
    let older = backup("older.backup");

    // Tasks are created and run while the backup is taken.
    let input = canary("input");
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (api, acknowledged, stop, input) = (api.clone(), acknowledged.clone(), stop.clone(), input.clone());
        async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let body = json!({"kind": "echo", "input": {"i": i, "text": input}});
                let (s, v) = api.post("/api/v1/tasks", &body).await;
                assert_eq!(s, 201, "{v}");
                acknowledged.lock().unwrap().push((v["id"].as_str().unwrap().to_owned(), i));
                i += 1;
            }
        }
    });
    eventually("some load", Duration::from_secs(30), || async { acknowledged.lock().unwrap().len() >= 50 }).await;
    let before_backup = acknowledged.lock().unwrap().clone();
    let newer = backup("newer.backup");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();
    assert!(acknowledged.lock().unwrap().len() > before_backup.len(), "tasks were created during the backup");

    let file = std::fs::read(&newer).unwrap();
    assert!(find(&file, b"tether-backup-1"), "the file is a backup");
    assert_absent(&[input.as_str(), key.as_str(), api_key.as_str()], &[("the backup".into(), file)]);

    a.stop();
    let mut b = a.restore_into_new(&newer);
    let restored = b.api();
    for (id, i) in &before_backup {
        let (s, t) = restored.get(&format!("/api/v1/tasks/{id}")).await;
        assert_eq!((s, &t["input"]["i"]), (200, &json!(i)), "acknowledged before the backup: {t}");
    }
    let (_, secrets) = restored.get("/api/v1/secrets").await;
    assert_eq!(secrets.as_array().map(Vec::len), Some(2), "{secrets}");
    // The restored secrets still open: a new worker on the restored appliance gets them.
    let _w2 = b.worker("w2", &[], Some(COMMANDS)).await;
    let body = json!({"kind": "command", "input": {"command": "digest"}, "secrets": ["canary-key", "canary-api"]});
    let (s, v) = restored.post("/api/v1/tasks", &body).await;
    assert_eq!(s, 201, "{v}");
    let done = restored.wait(v["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["result"]["stdout"], format!("{}\n{}\n", sha256_hex(&key), sha256_hex(&api_key)), "{done}");

    // The older backup over the restored directory is a rollback.
    b.stop();
    let refused = a.restore(&older, &b.data_dir(), &[], &[]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("older") && said.contains("--allow-rollback"), "{said}");
    let admin_token = a.admin_token.clone();
    let not_officer = a.restore(&older, &b.data_dir(), &["--allow-rollback"], &[("TETHER_TOKEN", &admin_token)]);
    assert!(!not_officer.status.success(), "an admin is not a security officer");
    let rolled = a.restore(&older, &b.data_dir(), &["--allow-rollback"], &[("TETHER_TOKEN", &officer)]);
    assert!(rolled.status.success(), "{}", String::from_utf8_lossy(&rolled.stderr));
    let report: Value = serde_json::from_slice(&rolled.stdout).unwrap();
    assert_eq!(report["rollback"], true, "{report}");
    let restore_record = b.audit_records().into_iter().rev().find(|r| r["event_type"] == "backup.restored").unwrap();
    assert_eq!(restore_record["metadata"]["details"]["rollback"], "true", "{restore_record}");
    assert!(b.audit_verify().0, "the restored audit chain verifies");
}
