//! The certificates the listeners serve: the appliance's own renews itself
//! and is swapped in without a restart; an operator's console certificate
//! is taken up on SIGHUP, and a bad one is refused.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tether::worker::client::BrokerClient;
use tether_base::clock::{Clock, SystemClock};
use tether_base::tls::fingerprint_der;
use tether_base::tls::{self, Trust};
use tether_domain::pki::{Ca, fingerprint_pem};
use tokio::net::TcpStream;

use crate::harness::{Api, Appliance, Proc, count_events, eventually, fast_env};

/// The fingerprint of the certificate a fresh handshake with `base` gets.
async fn served(base: &str, config: rustls::ClientConfig) -> String {
    let addr = base.trim_start_matches("https://");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    fingerprint_der(&stream.get_ref().1.peer_certificates().unwrap()[0])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_certificate_renews_itself_and_is_swapped_in_without_a_restart() {
    let mut env = fast_env();
    env.push(("TETHER_SERVER_CERT_LIFETIME", "6s"));
    let mut a = Appliance::start_with(env);
    let _worker = a.worker("w", &[], None).await;
    let console = || served(&a.console, tls::client(&a.ca_pem, None, &[]).unwrap());
    let first = console().await;

    // Renewal falls due two thirds into each 6 s lifetime; work goes on.
    let api = a.api();
    eventually("two renewals", Duration::from_secs(30), || {
        let api = api.clone();
        async move { count_events(&api.audit_log().await, "pki.server_cert_renewed") >= 2 }
    })
    .await;
    let now_served = console().await;
    assert_ne!(now_served, first, "a new handshake gets the renewed certificate");
    let id = api.submit("echo", json!({"across": "renewals"}), &[]).await;
    assert_eq!(api.wait(&id, 30).await["state"], "succeeded");

    // The worker gateway serves the same certificate, and enrollment by pin
    // still finds the CA at the end of the chain.
    let (key, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let pin = fingerprint_pem(&a.ca_pem).unwrap();
    let token = a.enrollment_token(None).await;
    let enrolled = BrokerClient::enroll(&a.worker_gateway, Trust::Pin(&pin), &token, &csr, &[]).await.unwrap();
    let gateway = tls::client(&a.ca_pem, Some((&enrolled.cert_pem, &key)), tls::WORKER_ALPN).unwrap();
    let (on_gateway, on_console) = (served(&a.worker_gateway, gateway).await, console().await);
    assert_eq!(on_gateway, on_console);

    // What is served is what is on disk: a restart serves the newest.
    a.stop();
    let on_disk = fingerprint_pem(&std::fs::read_to_string(a.data_dir().join("server.pem")).unwrap()).unwrap();
    let logged = a.audit_records();
    let renewals = count_events(&logged, "pki.server_cert_renewed");
    let last = logged.iter().rev().find(|r| r["event_type"] == "pki.server_cert_renewed").unwrap();
    assert_eq!(last["resource"]["id"], on_disk.as_str(), "the last renewal is the one on disk");
    a.restart();
    let api = a.api();
    eventually("a renewal after the restart", Duration::from_secs(15), || {
        let api = api.clone();
        async move { count_events(&api.audit_log().await, "pki.server_cert_renewed") > renewals }
    })
    .await;
    let records = api.audit_log().await;
    let next = records.iter().filter(|r| r["event_type"] == "pki.server_cert_renewed").nth(renewals).unwrap();
    assert_eq!(
        next["metadata"]["details"]["previous"],
        on_disk.as_str(),
        "the restart took up the certificate on disk"
    );
}

/// A site CA and a console certificate it issued, as PEM (chain, key).
fn site_cert(ca: &Ca) -> (String, String) {
    let issued = ca.issue_server_cert(&[], SystemClock.now(), Duration::from_secs(86400)).unwrap();
    (issued.cert_pem, issued.key_pem)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_console_certificate_is_served_and_replaced_on_sighup_and_a_bad_one_is_refused() {
    let files = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (files.path().join("console.pem"), files.path().join("console.key"));
    let (site, site_material) = Ca::create(SystemClock.now()).unwrap();
    let install = |(cert, key): &(String, String)| {
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    };
    let first = site_cert(&site);
    install(&first);
    let leak = |p: &std::path::Path| &*Box::leak(p.to_str().unwrap().to_owned().into_boxed_str());
    let status_file = files.path().join("status.json");
    let mut env = fast_env();
    env.extend([
        ("TETHER_CONSOLE_CERT_FILE", leak(&cert_file)),
        ("TETHER_CONSOLE_KEY_FILE", leak(&key_file)),
        ("TETHER_STATUS_FILE", leak(&status_file)),
    ]);
    let a = Appliance::start_with(env);
    // `tether health` (the image's boot check) pins what the status file
    // says the console serves: the site's certificate, not the appliance CA's.
    let health = || {
        let out = std::process::Command::new(crate::harness::bin())
            .arg("health")
            .arg("--status-file")
            .arg(&status_file)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let shown = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap() };
    assert_eq!(shown()["certificate_fingerprint"], fingerprint_pem(&first.0).unwrap().as_str());
    let (healthy, said) = health();
    assert!(healthy && said.contains("healthy: serving"), "{said}");

    // The console answers with the site's certificate; the worker gateway
    // keeps the appliance's.
    let site_client = || tls::client(&site_material.cert_pem, None, &[]).unwrap();
    assert_eq!(served(&a.console, site_client()).await, fingerprint_pem(&first.0).unwrap());
    let api = Api::new(&a.console, &site_material.cert_pem, &a.admin_token);
    assert_eq!(api.get("/api/v1/system/status").await.0, 200);
    let (status, token) = api.post("/api/v1/workers/enrollment-tokens", &json!({})).await;
    assert_eq!(status, 201);
    let mut worker = Proc::spawn(a.worker_command("w", token["token"].as_str(), &[], None));
    worker.expect_event("ready", Duration::from_secs(30));

    // A new certificate in the files, then SIGHUP: served from the next handshake.
    let second = site_cert(&site);
    install(&second);
    a.proc.as_ref().unwrap().signal("HUP");
    let want = fingerprint_pem(&second.0).unwrap();
    eventually("the new console certificate", Duration::from_secs(10), || {
        let (want, client) = (want.clone(), site_client());
        let console = a.console.clone();
        async move { served(&console, client).await == want }
    })
    .await;
    eventually("the status file names the new certificate", Duration::from_secs(30), || {
        let now = shown()["certificate_fingerprint"] == want.as_str();
        async move { now }
    })
    .await;
    let (healthy, said) = health();
    assert!(healthy, "health follows the replaced certificate: {said}");

    // A certificate whose key does not match is refused; the last good one stays.
    let third = site_cert(&site);
    install(&(third.0.clone(), second.1.clone()));
    a.proc.as_ref().unwrap().signal("HUP");
    eventually("the refusal on record", Duration::from_secs(10), || {
        let api = api.clone();
        async move { count_events(&api.audit_log().await, "pki.console_cert_refused") == 1 }
    })
    .await;
    assert_eq!(served(&a.console, site_client()).await, want);
    assert_eq!(count_events(&api.audit_log().await, "pki.console_cert_replaced"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_nearing_expiry_raise_alerts_in_the_api_and_the_audit_log_once_each() {
    let mut env = fast_env();
    // A warning period longer than the CA's ten years puts every
    // certificate in it; a worker certificate of 6 s soon expires.
    env.extend([("TETHER_CERT_EXPIRY_WARNING", "4000d"), ("TETHER_WORKER_CERT_LIFETIME", "6s")]);
    let mut a = Appliance::start_with(env);
    let api = a.api();
    let (status, listed) = api.get("/api/v1/pki/certificates").await;
    assert_eq!(status, 200, "{listed}");
    let kinds: Vec<&str> =
        listed["certificates"].as_array().unwrap().iter().map(|c| c["certificate"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ca", "server"]);
    let alerted = |v: &serde_json::Value| -> Vec<String> {
        v["alerts"].as_array().unwrap().iter().map(|a| a["certificate"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(alerted(&listed), ["ca", "server"], "{listed}");
    assert_eq!(listed["alerts"][0]["expired"], false);
    eventually("the alerts audited", Duration::from_secs(10), || {
        let api = api.clone();
        async move { count_events(&api.audit_log().await, "pki.cert_expiring") == 2 }
    })
    .await;
    let (_, alerts) = api.get("/api/v1/alerts").await;
    let expiring = alerts.as_array().unwrap().iter().filter(|a| a["kind"] == "cert_expiring").count();
    assert_eq!(expiring, 2, "each is listed as an alert: {alerts}");

    // A worker goes offline and its certificate runs out.
    let mut worker = a.worker("w", &[], None).await;
    let id = worker.expect_event("ready", Duration::from_secs(1))["worker_id"].as_str().unwrap().to_owned();
    worker.kill9();
    eventually("the worker's alert", Duration::from_secs(15), || {
        let (api, id) = (api.clone(), id.clone());
        async move {
            let (_, listed) = api.get("/api/v1/pki/certificates").await;
            listed["alerts"].as_array().unwrap().iter().any(|a| a["id"] == id.as_str() && a["expired"] == true)
        }
    })
    .await;
    let (_, status) = api.get("/api/v1/system/status").await;
    assert_eq!(status["certificate_alerts"], 3, "{status}");

    // A restart audits what is new (the worker) and repeats nothing.
    a.kill9();
    a.restart();
    let api = a.api();
    eventually("the worker's alert audited", Duration::from_secs(10), || {
        let api = api.clone();
        async move { count_events(&api.audit_log().await, "pki.cert_expiring") == 3 }
    })
    .await;
    let records = api.audit_log().await;
    let worker_alert =
        records.iter().find(|r| r["event_type"] == "pki.cert_expiring" && r["resource"]["type"] == "worker");
    assert_eq!(worker_alert.unwrap()["metadata"]["details"]["expired"], "true");
}
