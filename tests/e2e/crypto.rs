//! The crypto policy as a peer meets it: what a TLS scanner (testssl.sh)
//! finds offered on each listener, and handshakes that real clients (the
//! `openssl s_client` command) are refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::harness::{Appliance, count_events, fips_build};
use serde_json::{Value, json};

/// `host:port` of a listener's URL.
fn address(url: &str) -> &str {
    url.trim_start_matches("https://")
}

/// What testssl.sh finds at `address`: its JSON findings by id.
fn scan(address: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("scan.json");
    let out = Command::new("testssl")
        .args(["--quiet", "--warnings", "off", "--protocols", "--cipher-per-proto", "--pfs", "--jsonfile"])
        .arg(&report)
        .arg(address)
        .output()
        .expect("testssl.sh is installed (scripts/test.sh installs the Debian package testssl.sh)");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|_| panic!("testssl wrote no report: {}", String::from_utf8_lossy(&out.stdout)));
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    findings
        .into_iter()
        .map(|f| (f["id"].as_str().unwrap().to_owned(), f["finding"].as_str().unwrap().trim().to_owned()))
        .collect()
}

/// The protocol, suite and group findings a listener must show; `groups` as
/// testssl names them.
fn assert_offers_only_the_policy(findings: &BTreeMap<String, String>, groups: &str) {
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert_eq!(findings[old], "not offered", "{old}");
    }
    assert_eq!(findings["TLS1_2"], "offered");
    assert!(findings["TLS1_3"].starts_with("offered"), "{}", findings["TLS1_3"]);
    let suites: Vec<&str> = findings
        .iter()
        .filter(|(id, _)| id.starts_with("cipher-tls") || id.starts_with("cipher_x"))
        .map(|(_, f)| f.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        suites,
        [
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384"
        ],
        "{findings:#?}"
    );
    assert_eq!(findings["PFS_ECDHE_curves"], groups);
}

#[test]
fn testssl_finds_only_tls_1_2_and_1_3_with_ecdhe_and_aes_gcm_on_both_listeners() {
    let a = Appliance::start();
    for listener in [&a.console, &a.worker_gateway] {
        assert_offers_only_the_policy(&scan(address(listener)), "prime256v1 secp384r1 X25519");
    }
}

#[test]
fn in_fips_mode_testssl_finds_no_x25519() {
    let a = Appliance::start_fips();
    for listener in [&a.console, &a.worker_gateway] {
        assert_offers_only_the_policy(&scan(address(listener)), "prime256v1 secp384r1");
    }
}

/// An `openssl s_client` handshake with `address`: the protocol and suite it
/// agreed on, or what it printed when the server refused it.
fn handshake(address: &str, ca: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", address, "-servername", "localhost", "-CAfile"])
        .arg(ca)
        .args(["-verify_return_error"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let agreed = text.lines().find_map(|l| l.strip_prefix("New, ")).filter(|l| !l.starts_with("(NONE)"));
    match agreed {
        Some(line) if out.status.success() => Ok(line.to_owned()),
        _ => Err(text),
    }
}

/// The handshake failed because the server sent an alert, not because the
/// client would not send what it was asked to.
fn assert_refused_by_server(result: Result<String, String>, what: &str) {
    let text = result.expect_err(what);
    assert!(text.contains("alert handshake failure") || text.contains("alert protocol version"), "{what}: {text}");
}

#[test]
fn handshakes_offering_only_chacha20_or_tls_1_1_are_refused_and_in_fips_mode_only_x25519_too() {
    let standard = Appliance::start();
    let fips = Appliance::start_fips();
    for a in [&standard, &fips] {
        let (console, ca) = (address(&a.console), a.ca_file());
        assert_eq!(handshake(console, &ca, &[]).unwrap(), "TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384");
        assert_eq!(handshake(console, &ca, &["-tls1_2"]).unwrap(), "TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384");
        assert_refused_by_server(
            handshake(console, &ca, &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"]),
            "TLS 1.3 with only ChaCha20",
        );
        assert_refused_by_server(
            handshake(console, &ca, &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"]),
            "TLS 1.2 with only ChaCha20",
        );
        // OpenSSL 3 sends TLS 1.1 only at security level 0.
        assert_refused_by_server(handshake(console, &ca, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]), "TLS 1.1");
    }
    let only_x25519 = ["-groups", "X25519"];
    assert!(handshake(address(&standard.console), &standard.ca_file(), &only_x25519).is_ok());
    assert_refused_by_server(
        handshake(address(&fips.console), &fips.ca_file(), &only_x25519),
        "only X25519 in FIPS mode",
    );
    assert!(handshake(address(&fips.console), &fips.ca_file(), &["-groups", "P-384"]).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn fips_mode_reports_its_self_tests_and_refuses_to_start_with_a_key_it_does_not_approve() {
    let mut a = Appliance::start_fips();
    let (s, crypto) = a.api().get("/api/v1/system/crypto").await;
    assert_eq!(s, 200, "{crypto}");
    // The validated module is the FIPS build's (the suite also runs against it).
    let validated = fips_build();
    assert_eq!((&crypto["mode"], &crypto["validated_module"]), (&json!("fips"), &json!(validated)), "{crypto}");
    assert_eq!(crypto["self_tests_passed"].as_array().unwrap().len(), 6, "{crypto}");
    assert_eq!(crypto["policy"]["tls_groups"], json!(["secp256r1", "secp384r1"]));
    assert_eq!(crypto["policy"]["worker_keys"], json!(["ECDSA P-256", "ECDSA P-384"]));
    let (_, status) = a.api().get("/api/v1/system/status").await;
    assert_eq!(status["crypto"]["mode"], "fips");
    let out = a.cli(&["status"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let module = if validated { "a FIPS 140-3 validated module" } else { "not a validated module" };
    for line in ["Crypto mode   fips", module, "Self-tests    6 passed at start"] {
        assert!(said.contains(line), "`tether status` says {line:?}: {said}");
    }
    a.stop();

    // An operator configures a console certificate with an Ed25519 key.
    let data = a.data_dir();
    let (cert, key) = (a.dir.path().join("console.pem"), a.dir.path().join("console.key"));
    ed25519_self_signed(&cert, &key);
    let config = format!("console_cert_file = {cert:?}\nconsole_key_file = {key:?}\n");
    std::fs::write(data.join("tether.toml"), config).unwrap();
    let said = a.serve_refused();
    assert!(said.contains("the console certificate's key uses Ed25519, which fips mode does not allow"), "{said}");
    std::fs::remove_file(data.join("tether.toml")).unwrap();

    // Or puts one in place of the appliance's own.
    ed25519_self_signed(&data.join("server.pem"), &data.join("server.key"));
    let said = a.serve_refused();
    assert!(
        said.contains("the server certificate's key (server.pem) uses Ed25519, which fips mode does not allow"),
        "{said}"
    );
}

fn ed25519_self_signed(cert: &std::path::Path, key: &std::path::Path) {
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "30", "-subj", "/CN=localhost", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_security_officer_switches_to_fips_mode_after_re_authenticating_and_it_takes_effect_at_the_restart() {
    use tether::worker::client::BrokerClient;
    let files = tempfile::tempdir().unwrap();
    let pass_file = files.path().join("passphrase");
    std::fs::write(&pass_file, "the site's long passphrase").unwrap();
    std::fs::set_permissions(&pass_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let init = ["--unseal", "passphrase", "--passphrase-file", pass_file.to_str().unwrap()];
    let mut a = Appliance::start_sealed(&init, crate::harness::fast_env());
    let anonymous = a.api().with_token(None);
    let unseal = json!({"passphrase": "the site's long passphrase"});
    assert_eq!(anonymous.post("/api/v1/sys/unseal", &unseal).await.0, 200);

    // A worker with an Ed25519 key, which standard mode allows.
    let token = a.enrollment_token(None).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let trust = tether_base::tls::Trust::Ca(&a.ca_pem);
    let ed25519 = BrokerClient::enroll(&a.worker_gateway, trust, &token, &csr, &[]).await.unwrap();

    let officer_token = a.officer_token().await;
    let officer = a.api().with_token(Some(&officer_token));
    let switch = |passphrase: &str| json!({"mode": "fips", "current": [{"passphrase": passphrase}]});
    let (s, _) = a.api().post("/api/v1/system/crypto/mode", &switch("the site's long passphrase")).await;
    assert_eq!(s, 403, "the security officer's decision, not the admin's");
    let (s, v) = officer.post("/api/v1/system/crypto/mode", &switch("a wrong passphrase")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("unseal_refused")), "re-authentication failed: {v}");
    let (s, v) = officer.post("/api/v1/system/crypto/mode", &switch("the site's long passphrase")).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("key_not_approved")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains(&ed25519.worker_id), "names the worker: {v}");
    let (s, _) = officer.post(&format!("/api/v1/workers/{}/revoke", ed25519.worker_id), &json!({})).await;
    assert_eq!(s, 200);
    let (s, v) = officer.post("/api/v1/system/crypto/mode", &switch("the site's long passphrase")).await;
    assert_eq!((s, &v["restart_required"]), (200, &json!(true)), "{v}");
    let (_, crypto) = officer.get("/api/v1/system/crypto").await;
    assert_eq!((&crypto["mode"], &crypto["pending_mode"]), (&json!("standard"), &json!("fips")), "{crypto}");

    // The restart runs in FIPS mode; the same passphrase, now behind PBKDF2, unseals.
    a.stop();
    a.restart();
    assert_eq!(anonymous.post("/api/v1/sys/unseal", &unseal).await.0, 200);
    let (_, crypto) = officer.get("/api/v1/system/crypto").await;
    assert_eq!(crypto["mode"], "fips", "{crypto}");
    assert_eq!(crypto["self_tests_passed"].as_array().unwrap().len(), 6);
    let records = officer.audit_log().await;
    assert_eq!(count_events(&records, "crypto.mode_change_refused"), 2);
    let changed: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "crypto.mode_changed").collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["metadata"]["details"]["passphrase_kdf"], "rewrapped");

    // And back, from the command line.
    let out = a
        .cli(&["crypto", "mode", "standard", "--passphrase-file", pass_file.to_str().unwrap()])
        .env("TETHER_TOKEN", &officer_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("restart the appliance"));
}
