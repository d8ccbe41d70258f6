//! Certificate renewal: lineage (only a worker's newest certificate renews),
//! the grace window for workers that were offline past expiry, and renewal
//! that keeps going under load with certificates of a minute.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tether::worker::client::{BrokerClient, CallError};
use tether_base::tls::Trust;
use tether_domain::pki::{cert_validity, new_worker_key_and_csr};

use crate::harness::{Appliance, count_events, fast_env};

fn fresh_csr() -> (String, String) {
    new_worker_key_and_csr().unwrap()
}

fn refusal_code(result: Result<impl std::fmt::Debug, CallError>) -> (u16, String) {
    match result {
        Err(CallError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_newest_certificate_of_a_worker_renews() {
    let a = Appliance::start();
    let client = |cert: &str, key: &str| BrokerClient::mtls(&a.worker_gateway, &a.ca_pem, cert, key).unwrap();
    let token = a.enrollment_token(None).await;
    let (key_a, csr) = fresh_csr();
    let enrolled = BrokerClient::enroll(&a.worker_gateway, Trust::Ca(&a.ca_pem), &token, &csr, &[]).await.unwrap();
    let first = client(&enrolled.cert_pem, &key_a);

    // The first renewal's answer is lost: the worker asks again with the
    // same certificate, which is allowed until it is seen using a newer one.
    let (key_b, csr_b) = fresh_csr();
    let lost = first.renew(&csr_b).await.unwrap();
    let (key_c, csr_c) = fresh_csr();
    let kept = first.renew(&csr_c).await.unwrap();
    let newest = client(&kept.cert_pem, &key_c);
    newest.poll(1, Duration::from_secs(1)).await.unwrap();

    for stale in [&first, &client(&lost.cert_pem, &key_b)] {
        let refused = refusal_code(stale.renew(&fresh_csr().1).await);
        assert_eq!(refused, (403, "certificate_superseded".to_owned()));
    }
    newest.renew(&fresh_csr().1).await.expect("the newest certificate renews");

    let records = a.api().audit_log().await;
    assert_eq!(count_events(&records, "worker.renewed"), 3);
    assert_eq!(count_events(&records, "worker.renew_refused"), 2);
    let retried = records.iter().filter(|r| r["event_type"] == "worker.renewed").nth(1).unwrap();
    assert!(retried.to_string().contains("abandoned_serial"), "the abandoned certificate is on record: {retried}");
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Sleeps until `moment` (time since the epoch) has passed. The test is
/// about real time passing, so this is not synchronisation by sleeping.
async fn sleep_until(moment: Duration) {
    tokio::time::sleep(moment.saturating_sub(unix_now())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_worker_renews_within_the_grace_window_and_must_enroll_again_after_it() {
    const GRACE: Duration = Duration::from_secs(8);
    let mut env = fast_env();
    env.extend([("TETHER_WORKER_CERT_LIFETIME", "6s"), ("TETHER_WORKER_CERT_GRACE", "8s")]);
    let a = Appliance::start_with(env);
    let state = a.worker_state_dir("w");
    let identity = || {
        let cert = std::fs::read_to_string(state.join("worker.pem")).unwrap();
        let key = std::fs::read_to_string(state.join("worker.key")).unwrap();
        let expiry = Duration::from_millis(cert_validity(&cert).unwrap().1.as_millis());
        (cert, key, expiry)
    };

    // Enrolled, then offline before its first renewal falls due.
    let mut w = a.worker("w", &[], None).await;
    w.kill9();
    let (cert, key, expiry) = identity();
    sleep_until(expiry + Duration::from_secs(1)).await;

    // Expired but within the grace window: the handshake succeeds, and
    // renewing is all the certificate may do.
    let expired = BrokerClient::mtls(&a.worker_gateway, &a.ca_pem, &cert, &key).unwrap();
    let refused = refusal_code(expired.poll(1, Duration::from_secs(1)).await);
    assert_eq!(refused, (401, "certificate_expired".to_owned()));
    let mut w = a.resume_worker("w", None);
    w.expect_event("renewed", Duration::from_secs(5));
    w.kill9();

    // Offline again, now past expiry and the grace window: refused at the
    // handshake, and the worker says to enroll again instead of retrying.
    let (_, _, expiry) = identity();
    sleep_until(expiry + GRACE + Duration::from_secs(1)).await;
    let mut cmd = a.worker_command("w", None, &[], None);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the worker gives up: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "at once, not after retrying");
    assert!(stderr.contains("grace window") && stderr.contains("enroll it again"), "{stderr}");

    let records = a.api().audit_log().await;
    assert_eq!(count_events(&records, "worker.renewed"), 1, "the renewal inside the window is audited");
}

/// Counts renewals per worker in the audit log.
fn renewals_of(records: &[Value], worker: &str) -> usize {
    records.iter().filter(|r| r["event_type"] == "worker.renewed" && r["resource"]["id"] == worker).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_minute_certificates_renew_continuously_under_load_with_no_failed_request() {
    const LOAD: Duration = Duration::from_secs(200);
    let mut env = fast_env();
    env.push(("TETHER_WORKER_CERT_LIFETIME", "60s"));
    let a = Appliance::start_logging(env);
    let config = "concurrency = 2\n";
    let mut workers = [a.worker("one", &[], Some(config)).await, a.worker("two", &[], Some(config)).await];
    let ids: Vec<String> = workers
        .iter_mut()
        .map(|w| w.expect_event("ready", Duration::from_secs(1))["worker_id"].as_str().unwrap().to_owned())
        .collect();

    let deadline = Instant::now() + LOAD;
    let mut submitters = Vec::new();
    for n in 0..4 {
        let api = a.api();
        submitters.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while Instant::now() < deadline {
                let id = api.submit("echo", json!({"submitter": n}), &[]).await;
                done.push(api.wait(&id, 30).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done
        }));
    }
    let mut finished = Vec::new();
    for s in submitters {
        finished.extend(s.await.unwrap());
    }

    let failed: Vec<&Value> =
        finished.iter().filter(|t| t["state"] != "succeeded" || t["attempts"] != 1).take(5).collect();
    assert!(failed.is_empty(), "every task succeeded at its first attempt: {failed:?}");
    let records = a.api().audit_log().await;
    for id in &ids {
        // Renewals fall due every 40 s (±10 %): 200 s hold at least four,
        // so each worker outlived three of its certificates.
        assert!(renewals_of(&records, id) >= 4, "worker {id} renewed {} times", renewals_of(&records, id));
    }
    assert_eq!(count_events(&records, "worker.renew_refused"), 0);
    let logs = String::from_utf8_lossy(&a.logs()).into_owned();
    // The one warning expected: the test appliance unseals from a key file.
    let trouble: Vec<&str> = logs
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("unsealed automatically"))
        .take(5)
        .collect();
    assert!(trouble.is_empty(), "no request failed, on either side: {trouble:?}");
    let counts: Vec<usize> = ids.iter().map(|id| renewals_of(&records, id)).collect();
    eprintln!("{} tasks over {LOAD:?}; renewals per worker {counts:?}", finished.len());
}
