//! The web console in a real browser: headless Chromium (Debian's
//! `chromium`) driven by `playwright-core`, each page checked by axe-core in
//! light and dark (`tests/browser/walk.mjs`). The walk must see no CSP
//! violation, console error, failed request or request to another origin.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Appliance, fast_env, repo_root};

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
async fn the_first_admin_signs_in_sets_up_and_reaches_the_dashboard_in_a_real_browser() {
    let a = Appliance::start();
    let report = walk(&a, json!({"scenario": "first-admin", "admin_password": a.init["admin_password"]}));
    let pages: Vec<&str> = report["pages"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(
        pages,
        ["sign-in", "password", "totp", "recovery-codes", "dashboard", "signed-out", "dashboard-again"],
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

#[tokio::test(flavor = "multi_thread")]
async fn the_first_boot_is_set_up_in_the_browser_with_the_setup_code_then_unsealed_and_signed_into() {
    let (mut a, setup) = Appliance::start_setup(fast_env());
    let code = setup["setup_code"].as_str().unwrap().to_owned();
    assert!(setup["certificate_fingerprint"].as_str().unwrap().starts_with("sha256:"), "{setup}");
    let report = walk(&a, json!({"scenario": "setup", "setup_code": code}));
    let pages: Vec<&str> = report["pages"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(
        pages,
        [
            "setup-code",
            "setup-names",
            "setup-admin",
            "setup-unseal",
            "setup-share",
            "setup-done",
            "sealed",
            "sign-in",
            "totp",
            "recovery-codes",
            "dashboard"
        ],
        "{report:#}"
    );
    let ready = a.wait_ready();
    assert_eq!(ready["listen"].as_str(), Some(a.console.trim_start_matches("https://")), "served on the same socket");
    let (_, vault) = a.api().with_token(None).get("/api/v1/sys/vault").await;
    assert_eq!(vault["sealed"], json!(false), "unsealed in the walk: {vault}");
    // What the wizard did is audited (the wrong code the walk tried first
    // too); the code itself is in no record and no log.
    a.stop();
    let records = a.audit_records();
    let tried: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "setup.code_tried").collect();
    assert_eq!(tried.len(), 1, "the wrong code is audited: {tried:?}");
    assert_eq!(tried[0]["result"], "failure");
    let completed = records.iter().find(|r| r["event_type"] == "setup.completed").expect("setup.completed");
    assert_eq!(completed["metadata"]["details"]["fips"], "false", "{completed}");
    let everything = format!("{records:?}{}", String::from_utf8_lossy(&a.logs()));
    assert!(!everything.contains(&code), "the setup code reached a record or a log");
}
