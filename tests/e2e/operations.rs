//! What an operator meets: the quickstart, certificate renewal, and the
//! listeners' protection against slow, idle and too many clients.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::harness::{Appliance, Proc, bin, fast_env};

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_quickstart_prints_a_worker_command_that_works() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tether-data");
    let serve = |data: &std::path::Path| {
        let mut cmd = Command::new(bin());
        cmd.args([
            "serve",
            "--dev",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--worker-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data);
        let mut p = Proc::spawn(cmd);
        let ready = p.expect_event("ready", Duration::from_secs(30));
        (p, ready)
    };
    let (mut appliance, ready) = serve(&data);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory is private");
    assert!(!data.join("ca.key").exists(), "the CA key is sealed in the store, not a file");
    assert_eq!(mode(&data.join("dev-unseal.key")), 0o600);
    assert_eq!(ready["sealed"], false, "--dev unseals itself");
    assert!(ready["unseal_key_file"].as_str().unwrap().ends_with("dev-unseal.key"), "and says so: {ready}");
    let token = ready["admin_token"].as_str().expect("first start shows the admin token").to_owned();
    assert!(ready["console_url"].as_str().unwrap().starts_with("https://127.0.0.1:"));

    // Paste the printed worker command, as the README says.
    let printed = ready["worker_command"].as_str().unwrap();
    let mut words = printed.split_whitespace();
    let mut worker = Command::new(words.next().unwrap());
    let state = dir.path().join("tether-worker");
    for w in words {
        worker.arg(if w == "./tether-worker" { state.to_str().unwrap() } else { w });
    }
    let mut worker = Proc::spawn({
        worker.arg("--json");
        worker
    });
    worker.expect_event("ready", Duration::from_secs(30));
    let key_mode = mode(&state.join("worker.key"));
    assert_eq!(key_mode, 0o600, "the worker's key is private");

    let out = Command::new(bin())
        .args(["task", "submit", "--kind", "echo", "--input", r#"{"hi":1}"#, "--wait", "30", "--json"])
        .env("TETHER_URL", format!("https://{}", ready["listen"].as_str().unwrap()))
        .env("TETHER_TOKEN", &token)
        .env("TETHER_CA_FILE", ready["ca_file"].as_str().unwrap())
        .output()
        .unwrap();
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((task["state"].as_str(), &task["result"]), (Some("succeeded"), &json!({"hi": 1})));

    // A second start reuses the directory and still shows how to get in.
    assert!(appliance.signal_term().success());
    let (_appliance, again) = serve(&data);
    assert_eq!(again["admin_token"].as_str(), Some(token.as_str()));
    assert_eq!(again["ca_fingerprint"], ready["ca_fingerprint"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_renew_their_certificates_and_keep_working_past_the_first_ones_expiry() {
    let mut env = fast_env();
    env.push(("TETHER_WORKER_CERT_LIFETIME", "6s"));
    let a = Appliance::start_with(env);
    let mut w = a.worker("w", &[], None).await;
    let enrolled_at = Instant::now();
    // Renewal falls due two thirds into each 6 s lifetime.
    let first = w.expect_event("renewed", Duration::from_secs(20));
    w.expect("a second renewal", Duration::from_secs(20), |v| {
        v["event"] == "renewed" && v["cert_not_after"] != first["cert_not_after"]
    });
    assert!(enrolled_at.elapsed() > Duration::from_secs(6), "the enrollment certificate has expired by now");
    let api = a.api();
    let id = api.submit("echo", json!({"after": "renewal"}), &[]).await;
    assert_eq!(api.wait(&id, 30).await["state"], "succeeded");
    let (_, log) = api.get("/api/v1/audit/export").await;
    let renewals = log.as_str().unwrap().lines().filter(|l| l.contains("\"worker.renewed\"")).count();
    assert!(renewals >= 2, "each renewal is audited");
}

async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_idle_and_surplus_connections_are_closed() {
    let mut env = fast_env();
    env.extend([("TETHER_HEADER_TIMEOUT", "2s"), ("TETHER_IDLE_TIMEOUT", "2s"), ("TETHER_MAX_CONNECTIONS", "3")]);
    let a = Appliance::start_with(env);
    let addr = a.console.trim_start_matches("https://").to_owned();

    // Three silent connections take every slot; a fourth is turned away at once.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let api = a.api();
    crate::harness::eventually("the limit to be reached", Duration::from_secs(5), || {
        let addr = addr.clone();
        async move {
            let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
            closed_within(&mut extra, Duration::from_secs(5)).await < Duration::from_secs(1)
        }
    })
    .await;
    // The silent ones are cut off when the handshake deadline passes.
    for s in &mut silent {
        let lived = closed_within(s, Duration::from_secs(10)).await;
        assert!(lived < Duration::from_secs(5), "closed after {lived:?}");
    }
    // Slots are free again.
    assert_eq!(api.get("/healthz").await.0, 200);

    // A TLS connection that never sends a request is closed as idle.
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        tether_base::tls::client(&a.ca_pem, None, &[b"http/1.1"]).unwrap(),
    ));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.expect("closed before 10 s");
    assert!(matches!(n, Ok(0) | Err(_)), "no data, just a close");
    let lived = start.elapsed();
    assert!(lived >= Duration::from_millis(1500) && lived < Duration::from_secs(8), "idle close after {lived:?}");
}
