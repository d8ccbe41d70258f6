//! The web console in a real browser: headless Chromium (Debian's
//! `chromium`) driven by `playwright-core`, each page checked by axe-core in
//! light and dark (`tests/browser/walk.mjs`). The walk must see no CSP
//! violation, console error, failed request or request to another origin.

use std::process::Command;

use serde_json::{Value, json};

use crate::fake_llm::FakeLlm;
use crate::harness::{Appliance, bin, fast_env, repo_root};

/// The SHA-256 of a certificate's public key (base64): the one
/// certificate Chromium is told it may accept without knowing its CA.
/// `source` prints the certificate (PEM) for `arg`.
fn spki_pin(source: &str, arg: &str) -> String {
    let pipeline = format!(
        "{source} | openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
    );
    let out = Command::new("sh").arg("-c").arg(pipeline).arg("sh").arg(arg).output().expect("run openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs the walk against `a`; returns its report.
fn walk(a: &Appliance, extra: Value) -> Value {
    let script = repo_root().join("tests/browser/walk.mjs");
    assert!(
        script.with_file_name("node_modules").exists(),
        "the browser test's npm packages are missing: run scripts/test.sh (it runs npm ci in tests/browser)"
    );
    let server_pem = a.data_dir().join("server.pem");
    // In setup mode the certificate is on no disk: read it off the wire.
    let spki = if server_pem.exists() {
        spki_pin("cat \"$1\"", server_pem.to_str().unwrap())
    } else {
        spki_pin("openssl s_client -connect \"$1\" </dev/null 2>/dev/null", a.console.trim_start_matches("https://"))
    };
    let mut config = json!({"console": a.console, "spki": spki});
    if let Some(dir) = std::env::var_os("TETHER_CONSOLE_SCREENSHOTS") {
        config["screenshots"] = json!(dir.to_string_lossy());
    }
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let config_file = a.dir.path().join("walk.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let out = Command::new("node").arg(&script).arg(&config_file).output().expect("run node");
    let report: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the walk printed no report: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "the walk found problems: {report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_admin_signs_in_sets_up_reaches_the_dashboard_and_works_by_keyboard_alone() {
    let a = Appliance::start();
    // Some use of the gateway first, for the LLM page to draw.
    let upstream = FakeLlm::start().await;
    crate::llm::add_upstream(&a, "vllm", &upstream.url(), &["llama3"]).await;
    let (s, key) = a.api().post("/api/v1/llm/keys", &json!({"models": ["llama3"]})).await;
    assert_eq!(s, 201, "{key}");
    let ask = json!({"model": "llama3", "messages": [{"role": "user", "content": "count the racks"}]});
    let (s, answer) = crate::llm::call(&a, key["key"].as_str().unwrap(), &ask).await;
    assert_eq!(s, 200, "{answer}");
    let report = walk(&a, json!({"scenario": "first-admin", "admin_password": a.init["admin_password"]}));
    let pages = pages_of(&report);
    assert_eq!(
        pages,
        [
            "sign-in",
            "password",
            "totp",
            "recovery-codes",
            "dashboard",
            "signed-out",
            "dashboard-again",
            "keyboard-tasks",
            "keyboard-task",
            "llm-usage"
        ],
        "{report:#}"
    );
    // axe ran on every page in both themes and found nothing serious.
    assert_eq!(report["axe"].as_object().unwrap().len(), 2 * pages.len(), "{report:#}");
    // No browser reported a CSP violation to the appliance either.
    let (s, status) = a.api().get("/api/v1/system/status").await;
    assert_eq!((s, &status["csp_violations"]), (200, &json!(0)), "{status}");
    // The console's setup went through the public API: audited as ever.
    let records = a.api().audit_log().await;
    assert!(records.iter().any(|r| r["event_type"] == "user.second_factor_enrolled"), "TOTP enrolment audited");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_officers_unseal_together_from_their_own_browsers_following_the_ceremony_live() {
    let a = Appliance::start_sealed(&["--unseal", "shares", "--shares", "3", "--threshold", "2"], fast_env());
    let shares: Vec<String> =
        a.init["unseal"]["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    let report = walk(&a, json!({"scenario": "unseal", "shares": &shares[..2]}));
    assert_eq!(report["pages"], json!(["sealed", "sealed-one-share", "unsealed-sign-in"]), "{report:#}");
    let (s, vault) = a.api().get("/api/v1/sys/vault").await;
    assert_eq!((s, &vault["sealed"]), (200, &json!(false)), "{vault}");
    // No share was kept: not in the data directory, not in the logs.
    for entry in std::fs::read_dir(a.data_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        for share in &shares {
            let value = share.rsplit('-').nth(1).unwrap();
            assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "a share is on disk");
        }
    }
    let records = a.api().audit_log().await;
    assert!(records.iter().any(|r| r["event_type"] == "vault.unsealed"), "the unseal is audited");
}

/// The setup wizard's pages up to the unseal method, as the walk names them.
const WIZARD: [&str; 4] = ["setup-code", "setup-names", "setup-admin", "setup-unseal"];

/// The pages a walk went through, by the names it gave them.
fn pages_of(report: &Value) -> Vec<&str> {
    report["pages"].as_array().unwrap().iter().filter_map(Value::as_str).collect()
}

/// The walk's second part runs against the same appliance restarted: it
/// reads what the first part made from this file.
const HANDOFF: &str = "walk-handoff.json";

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_walk_from_first_boot_through_unseal_worker_task_tokens_keys_checks_audit_to_idle_sign_out() {
    // Short session limits, so the walk meets both: a re-authentication
    // before the token, and the idle sign-out at its end; checkpoints
    // often, so one is there to download on the audit page.
    let mut env = fast_env();
    env.extend([
        ("TETHER_SESSION_IDLE", "60s"),
        ("TETHER_REAUTH_WINDOW", "1s"),
        ("TETHER_AUDIT_CHECKPOINT_INTERVAL", "2s"),
    ]);
    let (mut a, setup) = Appliance::start_setup(env);
    let code = setup["setup_code"].as_str().unwrap().to_owned();
    assert!(setup["certificate_fingerprint"].as_str().unwrap().starts_with("sha256:"), "{setup}");
    let handoff = a.dir.path().join(HANDOFF);
    let report = walk(&a, json!({"scenario": "setup", "setup_code": code, "handoff": handoff}));
    let pages = pages_of(&report);
    assert_eq!(
        pages,
        [&WIZARD[..], &["setup-share", "setup-done", "sealed", "sign-in", "totp", "recovery-codes", "dashboard"]]
            .concat(),
        "{report:#}"
    );
    let ready = a.wait_ready();
    assert_eq!(ready["listen"].as_str(), Some(a.console.trim_start_matches("https://")), "served on the same socket");
    let (_, vault) = a.api().with_token(None).get("/api/v1/sys/vault").await;
    assert_eq!(vault["sealed"], json!(false), "unsealed in the walk: {vault}");

    // Restarted, it is sealed again; the second part takes it from there.
    a.stop();
    a.restart();
    let worker_state = a.dir.path().join("worker");
    let report =
        walk(&a, json!({"scenario": "operate", "handoff": handoff, "tether": bin(), "worker_state": worker_state}));
    let pages = pages_of(&report);
    for page in [
        "dashboard",
        "workers",
        "tasks",
        "task",
        "people",
        "llm",
        "security",
        "audit",
        "vault",
        "backups",
        "alerts",
        "firmware",
        "network",
    ] {
        assert!(pages.contains(&page), "{page} was walked and checked: {report:#}");
    }
    assert_eq!(pages.last(), Some(&"idle-signed-out"), "{report:#}");

    // What the walk did, the appliance recorded; the secrets it handled are
    // in no record and no log.
    a.stop();
    let records = a.audit_records();
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["event_type"].as_str()).collect();
    for kind in [
        "setup.completed",
        "vault.unsealed",
        "worker.enrolled",
        "task.completed",
        "worker.revoked",
        "token.created",
        "token.revoked",
        "llm.key_created",
        "security.checked",
        "auth.reauthenticated",
        "vault.rekeyed",
        "auth.logout",
    ] {
        assert!(kinds.contains(&kind), "{kind} is audited: {kinds:?}");
    }
    let tried: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "setup.code_tried").collect();
    assert_eq!(tried.len(), 1, "the wrong code is audited: {tried:?}");
    assert_eq!(tried[0]["result"], "failure");
    let completed = records.iter().find(|r| r["event_type"] == "setup.completed").expect("setup.completed");
    assert_eq!(completed["metadata"]["details"]["fips"], "false", "{completed}");
    let made: Value = serde_json::from_slice(&std::fs::read(&handoff).unwrap()).unwrap();
    let everything = format!("{records:?}{}", String::from_utf8_lossy(&a.logs()));
    assert!(!everything.contains(&code), "the setup code reached a record or a log");
    assert!(!everything.contains(made["password"].as_str().unwrap()), "the admin's password reached a record or a log");
    let rekeyed = made["rekeyed"].as_array().expect("the walk rekeyed the vault");
    assert_eq!(rekeyed.len(), 3);
    for share in made["shares"].as_array().unwrap().iter().chain(rekeyed) {
        assert!(!everything.contains(share.as_str().unwrap()), "a share reached a record or a log");
    }

    // The console's rekey took: restarted, the old shares are refused and
    // two of the new ones unseal it.
    a.restart();
    let anyone = a.api().with_token(None);
    let (status, refused) = anyone.post("/api/v1/sys/unseal", &json!({"share": made["shares"][0]})).await;
    assert_eq!(status, 400, "an old share: {refused}");
    for share in &rekeyed[..2] {
        let (status, vault) = anyone.post("/api/v1/sys/unseal", &json!({"share": share})).await;
        assert_eq!(status, 200, "{vault}");
    }
    let (_, vault) = anyone.get("/api/v1/sys/vault").await;
    assert_eq!(vault["sealed"], json!(false), "unsealed by the new shares: {vault}");
}

#[tokio::test(flavor = "multi_thread")]
async fn first_boot_with_a_key_file_hands_it_out_once_and_unseals_from_it() {
    let (mut a, setup) = Appliance::start_setup(fast_env());
    let handoff = a.dir.path().join(HANDOFF);
    let code = setup["setup_code"].as_str().unwrap();
    let report = walk(&a, json!({"scenario": "setup", "setup_code": code, "unseal": "key_file", "handoff": handoff}));
    let pages = pages_of(&report);
    assert_eq!(
        pages,
        [&WIZARD[..], &["setup-key-file", "setup-done", "sealed-key-file", "sign-in"]].concat(),
        "{report:#}"
    );
    a.wait_ready();
    let (_, vault) = a.api().with_token(None).get("/api/v1/sys/vault").await;
    assert_eq!((&vault["sealed"], &vault["method"]), (&json!(false), &json!("key_file")), "{vault}");
    // The key went to the browser only: not beside the data, not in a log.
    let made: Value = serde_json::from_slice(&std::fs::read(&handoff).unwrap()).unwrap();
    let key = made["key_file"].as_str().unwrap().trim();
    assert!(key.len() >= 32, "a key file's worth: {} characters", key.len());
    for entry in std::fs::read_dir(a.data_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "the key file is in the data directory");
    }
    a.stop();
    let records = a.audit_records();
    assert!(records.iter().any(|r| r["event_type"] == "setup.completed"), "the setup is audited");
    let everything = format!("{records:?}{}", String::from_utf8_lossy(&a.logs()));
    assert!(!everything.contains(key), "the key file reached a record or a log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_and_an_auditor_see_no_action_their_role_lacks_and_the_api_refuses_what_they_craft() {
    let a = Appliance::start();
    let mut people = Vec::new();
    for (name, role, pages, crafted) in [
        (
            "vera",
            "viewer",
            json!(["Dashboard", "Tasks", "Workers", "API tokens", "Vault"]),
            json!([
                ["POST", "/api/v1/tasks"],
                ["POST", "/api/v1/sys/seal"],
                ["POST", "/api/v1/workers/enrollment-tokens"]
            ]),
        ),
        (
            "aude",
            "auditor",
            json!(["Dashboard", "API tokens", "Vault", "PKI", "Audit", "Security", "Alerts"]),
            json!([["POST", "/api/v1/sys/backup"], ["POST", "/api/v1/sys/seal"], ["POST", "/api/v1/tasks"]]),
        ),
    ] {
        let password = format!("first-password-of-{name}");
        let (s, v) = a.api().post("/api/v1/users", &json!({"name": name, "role": role, "password": password})).await;
        assert_eq!(s, 201, "{v}");
        people.push(json!({"name": name, "role": role, "password": password, "pages": pages, "crafted": crafted}));
    }
    let report = walk(&a, json!({"scenario": "roles", "people": people}));
    let pages = pages_of(&report);
    assert!(pages.contains(&"viewer-workers") && pages.contains(&"auditor-audit"), "{report:#}");
    // What they crafted was refused and recorded as refused.
    let records = a.api().audit_log().await;
    let denied = records.iter().filter(|r| r["result"] == "denied" && r["actor"]["id"] != "-").count();
    assert!(denied >= 6, "each crafted request is audited as denied ({denied})");
}
