//! CA rotation without downtime: add → issue → retire while workers run
//! tasks, a worker that holds the old CA back, and rollbacks a phase at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tether::worker::client::BrokerClient;
use tether_base::tls::Trust;
use tether_domain::pki::new_worker_key_and_csr;

use crate::harness::{Api, Appliance, Proc, count_events, eventually, fast_env};

/// An API client trusting what `ca.pem` holds now (a rotation changes it).
fn api(a: &Appliance) -> Api {
    Api::new(&a.console, &std::fs::read_to_string(a.ca_file()).unwrap(), &a.admin_token)
}

/// Takes a rotation step; returns the HTTP status and the answer.
async fn step(a: &Appliance, name: &str) -> (u16, Value) {
    api(a).post(&format!("/api/v1/pki/ca/rotation/{name}"), &json!({})).await
}

async fn rotation(a: &Appliance) -> Value {
    let (status, body) = api(a).get("/api/v1/pki/ca/rotation").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Takes `name` once every active worker allows it (it answers 409
/// `ca_in_use` until they have polled, or renewed).
async fn step_when_ready(a: &Appliance, name: &str) -> Value {
    let taken = std::sync::Mutex::new(Value::Null);
    eventually(&format!("rotation step {name}"), Duration::from_secs(30), || async {
        let (status, body) = step(a, name).await;
        assert!(status == 200 || body["code"] == "ca_in_use", "{name}: {status} {body}");
        *taken.lock().unwrap() = body;
        status == 200
    })
    .await;
    taken.into_inner().unwrap()
}

/// Waits until the active workers' newest certificates are all from the
/// new CA (`true`) or all from the old one.
async fn workers_on_new_ca(a: &Appliance, on_new: bool) {
    eventually("the workers' certificates", Duration::from_secs(30), || async {
        let r = rotation(a).await;
        let want = if on_new { r["workers_active"].clone() } else { json!(0) };
        r["workers_on_new_ca"] == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ca_rotates_through_every_phase_and_rolls_back_while_workers_run_tasks_and_none_fails() {
    let mut a = Appliance::start_with(fast_env());
    let config = "concurrency = 2\n";
    let _workers = [a.worker("one", &[], Some(config)).await, a.worker("two", &[], Some(config)).await];
    let old_ca = a.ca_pem.clone();

    // A third worker that stays idle: it holds the rotation back until it
    // takes part.
    let token = a.enrollment_token(None).await;
    let (idle_key, csr) = new_worker_key_and_csr().unwrap();
    let idle = BrokerClient::enroll(&a.worker_gateway, Trust::Ca(&old_ca), &token, &csr, &[]).await.unwrap();
    let idle_on_old_ca = BrokerClient::mtls(&a.worker_gateway, &old_ca, &idle.cert_pem, &idle_key).unwrap();

    // Work goes on throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for n in 0..3 {
        let (console, token, ca_file, stop) = (a.console.clone(), a.admin_token.clone(), a.ca_file(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut finished = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let api = Api::new(&console, &std::fs::read_to_string(&ca_file).unwrap(), &token);
                let id = api.submit("echo", json!({"n": n}), &[]).await;
                finished.push(api.wait(&id, 30).await);
            }
            finished
        }));
    }

    // Add: both CAs trusted; ca.pem holds both.
    let (status, added) = step(&a, "add").await;
    assert_eq!((status, added["phase"].as_str()), (200, Some("added")), "{added}");
    let new_ca = added["next_ca"].as_str().unwrap().to_owned();
    let bundle = std::fs::read_to_string(a.ca_file()).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    let (status, refused) = step(&a, "issue").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("ca_in_use")),
        "the idle worker has not heard: {refused}"
    );
    let heard = idle_on_old_ca.poll(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(heard.ca_pem.as_deref(), Some(bundle.as_str()), "a poll answer carries the bundle");

    // Issue: the server certificate and the running workers move to the new CA.
    let issuing = step_when_ready(&a, "issue").await;
    assert_eq!(
        (issuing["issuing_ca"].as_str(), issuing["server_cert_issuer"].as_str()),
        (Some(&*new_ca), Some(&*new_ca))
    );
    eventually("the running workers on the new CA", Duration::from_secs(30), || async {
        rotation(&a).await["workers_on_new_ca"] == 2
    })
    .await;
    let (status, refused) = step(&a, "retire").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("ca_in_use")),
        "the idle worker is on the old CA: {refused}"
    );
    let idle_on_both = BrokerClient::mtls(&a.worker_gateway, &bundle, &idle.cert_pem, &idle_key).unwrap();
    let renewed = idle_on_both.renew(&new_worker_key_and_csr().unwrap().1).await.unwrap();
    assert!(tether_domain::pki::issued_by(&renewed.cert_pem, &new_ca_pem(&bundle, &old_ca)).unwrap());

    // A connection made with the old-CA certificate, open across the retirement.
    let config =
        tether_base::tls::client(&bundle, Some((&idle.cert_pem, &idle_key)), tether_base::tls::WORKER_ALPN).unwrap();
    let tcp = tokio::net::TcpStream::connect(a.worker_gateway.trim_start_matches("https://")).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut open = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();

    // Retire: the old CA is no longer trusted, anywhere.
    let retired = step_when_ready(&a, "retire").await;
    let mut buf = [0u8; 16];
    let cut = tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read(&mut open, &mut buf)).await;
    assert!(matches!(cut, Ok(Ok(0) | Err(_))), "a live old-CA connection is closed at once: {cut:?}");
    assert_eq!((retired["phase"].as_str(), retired["current_ca"].as_str()), (Some("none"), Some(&*new_ca)));
    let only_new = std::fs::read_to_string(a.ca_file()).unwrap();
    assert_eq!(only_new.matches("BEGIN CERTIFICATE").count(), 1);
    let old_cert_again = BrokerClient::mtls(&a.worker_gateway, &bundle, &idle.cert_pem, &idle_key).unwrap();
    assert!(old_cert_again.poll(1, Duration::from_secs(1)).await.is_err(), "an old-CA certificate fails the handshake");
    let token =
        api(&a).post("/api/v1/workers/enrollment-tokens", &json!({})).await.1["token"].as_str().unwrap().to_owned();
    let mut late = Proc::spawn(a.worker_command("late", Some(&token), &[], None));
    late.expect_event("ready", Duration::from_secs(30));

    // The idle worker is retired too, or it would hold the next rotation back.
    let (status, _) = api(&a).post(&format!("/api/v1/workers/{}/revoke", idle.worker_id), &json!({})).await;
    assert_eq!(status, 200);

    // A second rotation, rolled back a phase at a time: the workers follow
    // to the new CA and back.
    assert_eq!(step(&a, "add").await.0, 200);
    step_when_ready(&a, "issue").await;
    workers_on_new_ca(&a, true).await;
    let back = step_when_ready(&a, "rollback").await;
    assert_eq!((back["phase"].as_str(), back["issuing_ca"].as_str()), (Some("added"), Some(&*new_ca)));
    workers_on_new_ca(&a, false).await;
    let none = step_when_ready(&a, "rollback").await;
    assert_eq!((none["phase"].as_str(), none["current_ca"].as_str()), (Some("none"), Some(&*new_ca)));
    assert_eq!(std::fs::read_to_string(a.ca_file()).unwrap(), only_new, "ca.pem is the one CA again");

    stop.store(true, Ordering::Relaxed);
    let mut finished = Vec::new();
    for l in load {
        finished.extend(l.await.unwrap());
    }
    let failed: Vec<&Value> = finished.iter().filter(|t| t["state"] != "succeeded").take(5).collect();
    assert!(failed.is_empty() && finished.len() > 20, "{} tasks, none failed: {failed:?}", finished.len());

    // A rotation in progress survives kill -9 and a restart.
    assert_eq!(step(&a, "add").await.0, 200);
    a.kill9();
    a.restart();
    assert_eq!(rotation(&a).await["phase"], "added");
    assert_eq!(std::fs::read_to_string(a.ca_file()).unwrap().matches("BEGIN CERTIFICATE").count(), 2);
    // The same through the CLI, as an operator would.
    let said = cli(&a, &["ca", "status"]);
    assert!(said.contains("Phase         added") && said.contains("New CA"), "{said}");
    let said = cli(&a, &["ca", "rotate", "rollback"]);
    assert!(said.contains("Phase         none"), "{said}");

    let records = api(&a).audit_log().await;
    for (event, times) in [
        ("pki.ca_rotation_added", 3),
        ("pki.ca_rotation_issuing", 2),
        ("pki.ca_rotation_retired", 1),
        ("pki.ca_rotation_rolled_back", 3),
    ] {
        assert_eq!(count_events(&records, event), times, "{event}");
    }
    // The two running workers renewed to the new CA; the idle one once, by
    // hand; then all three running ones to the next CA and back.
    assert_eq!(count_events(&records, "worker.renewed"), 2 + 1 + 3 * 2);
}

/// Runs `tether ARGS` against the appliance; returns its stdout.
fn cli(a: &Appliance, args: &[&str]) -> String {
    let out = a.cli(args).output().unwrap();
    assert!(out.status.success(), "tether {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The CA certificate in `bundle` that is not `old`.
fn new_ca_pem(bundle: &str, old: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(end)
        .map(|c| c.trim().to_owned())
        .find(|c| !c.is_empty() && c.as_str() != old.trim())
        .unwrap()
}
