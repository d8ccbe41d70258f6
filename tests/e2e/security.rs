//! Who may connect and what each role may do.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tether::worker::client::{BrokerClient, CallError};

use crate::harness::{Appliance, count_events, count_failures, eventually, manual_worker};

#[tokio::test(flavor = "multi_thread")]
async fn an_enrollment_token_works_once() {
    let a = Appliance::start();
    let token = a.enrollment_token(None).await;
    let (_, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    BrokerClient::enroll(&a.worker_gateway, tether_base::tls::Trust::Ca(&a.ca_pem), &token, &csr, &[]).await.unwrap();
    let (_, csr2) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    match BrokerClient::enroll(&a.worker_gateway, tether_base::tls::Trust::Ca(&a.ca_pem), &token, &csr2, &[]).await {
        Err(CallError::Refused { status: 401, code, .. }) => assert_eq!(code, "enrollment_token_invalid"),
        other => panic!("a reused token must be refused, got {other:?}"),
    }
    let records = a.api().audit_log().await;
    assert_eq!(count_events(&records, "worker.enrolled"), 1);
    assert_eq!(count_events(&records, "worker.enroll_refused"), 1);
    assert!(!Value::from(records).to_string().contains(&token), "the token secret never reaches the audit log");
}

fn gateway_client(a: &Appliance, identity: Option<(&str, &str)>) -> reqwest::Client {
    let config = tether_base::tls::client(&a.ca_pem, identity, tether_base::tls::CLIENT_HTTP_ALPN).unwrap();
    tether_base::tls::https_client(config, Duration::from_secs(10)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_refuses_missing_or_foreign_certificates_at_the_handshake() {
    let a = Appliance::start();
    let poll = format!("{}/worker/v1/poll", a.worker_gateway);
    let body = json!({"max_tasks": 1, "wait_s": 0});

    // No certificate at all.
    let err = gateway_client(&a, None).post(&poll).json(&body).send().await.expect_err("no HTTP answer without a cert");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");

    // A certificate from another CA, naming a worker id.
    let now = tether_base::clock::Timestamp::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    );
    let (other_ca, _) = tether_domain::pki::Ca::create(now).unwrap();
    let (key, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let forged = other_ca
        .sign_worker_csr(
            tether_base::crypto::CryptoPolicy::STANDARD,
            &csr,
            tether_base::ids::WorkerId::new(),
            now,
            Duration::from_secs(3600),
        )
        .unwrap();
    let client = gateway_client(&a, Some((&forged.cert_pem, &key)));
    let err = client.post(&poll).json(&body).send().await.expect_err("no HTTP answer with a foreign cert");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");

    // A connection that asked to enroll reaches the enrollment route only.
    let enroll_cfg = tether_base::tls::client(&a.ca_pem, None, tether_base::tls::CLIENT_ENROLL_ALPN).unwrap();
    let enroll_client = tether_base::tls::https_client(enroll_cfg, Duration::from_secs(10)).unwrap();
    let resp = enroll_client.post(&poll).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // And an enrolled worker gets in.
    let worker = manual_worker(&a).await;
    assert!(worker.poll(1, Duration::ZERO).await.unwrap().tasks.is_empty());

    // Both refusals are failed authentications, and are audited as such
    // (right after the handshake is refused, so allow the write a moment).
    let refusals = || async {
        a.api()
            .audit_log()
            .await
            .into_iter()
            .filter(|r| r["event_type"] == "auth.failed" && r["resource"]["type"] == "worker_gateway")
            .collect::<Vec<Value>>()
    };
    crate::harness::eventually("two audited refusals", Duration::from_secs(10), || async {
        refusals().await.len() >= 2
    })
    .await;
    let refused = refusals().await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["metadata"]["details"]["reason"], "no client certificate");
    assert_eq!(refused[0]["metadata"]["source_ip"], "127.0.0.1");
}

// The role matrix (every console route, for every role by token and by
// session) runs in process against the router:
// `appliance/api/tests/app/roles.rs`.

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_problem_json_with_a_stable_code() {
    let a = Appliance::start();
    let api = a.api();
    let json_ct = Some("application/json");
    // method, path, body, content type, expected status, expected code
    type Case<'a> = (Method, &'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/api/v1/tasks",
            br#"{"kind":"echo","input":{},"sneaky":1}"#.to_vec(),
            json_ct,
            400,
            "invalid_json",
        ),
        (Method::POST, "/api/v1/tasks", b"{not json".to_vec(), json_ct, 400, "invalid_json"),
        (Method::POST, "/api/v1/tasks", br#"{"kind":"echo","input":{}}"#.to_vec(), None, 415, "unsupported_media_type"),
        (Method::POST, "/api/v1/tasks", vec![b' '; 2 * 1024 * 1024], json_ct, 413, "payload_too_large"),
        (
            Method::POST,
            "/api/v1/tasks",
            br#"{"kind":"echo","input":{},"priority":10}"#.to_vec(),
            json_ct,
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/tasks",
            br#"{"kind":"bad kind!","input":{}}"#.to_vec(),
            json_ct,
            400,
            "invalid_request",
        ),
        (Method::GET, "/api/v1/tasks/not-a-task", vec![], None, 404, "not_found"),
        (Method::GET, "/api/v1/tasks?limit=lots", vec![], None, 400, "invalid_request"),
        (Method::GET, "/no/such/route", vec![], None, 404, "not_found"),
        (Method::DELETE, "/api/v1/tasks", vec![], None, 405, "method_not_allowed"),
    ];
    for (method, path, body, ct, want_status, want_code) in cases {
        let (status, content_type, v) = api.raw(method.clone(), path, body, ct).await;
        assert_eq!((status, v["code"].as_str()), (want_status, Some(want_code)), "{method} {path}: {v}");
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        assert_eq!(v["status"], want_status);
    }
    let (status, _, v) = api.with_token(Some("tether_garbage")).raw(Method::GET, "/api/v1/tasks", vec![], None).await;
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")));
    let (status, health) = api.with_token(None).get("/healthz").await;
    assert_eq!((status, health["status"].as_str(), health["sealed"].as_bool()), (200, Some("ok"), Some(false)));
}

#[tokio::test(flavor = "multi_thread")]
async fn developers_see_only_their_own_tasks_and_viewers_never_see_payloads() {
    let a = Appliance::start();
    let admin = a.api();
    let token = |role: &'static str, name: &'static str| {
        let admin = admin.clone();
        async move {
            let (_, v) = admin.post("/api/v1/tokens", &json!({"role": role, "name": name})).await;
            admin.with_token(Some(v["token"].as_str().unwrap()))
        }
    };
    let (alice, bob, viewer) =
        (token("developer", "alice").await, token("developer", "bob").await, token("viewer", "vera").await);
    let id = alice.submit("echo", json!({"secret_plan": 1}), &["nobody"]).await;
    assert_eq!(alice.get(&format!("/api/v1/tasks/{id}")).await.1["input"], json!({"secret_plan": 1}));
    assert_eq!(bob.get(&format!("/api/v1/tasks/{id}")).await.0, 404);
    assert_eq!(bob.post(&format!("/api/v1/tasks/{id}/cancel"), &json!({})).await.0, 404);
    assert!(bob.get("/api/v1/tasks").await.1["tasks"].as_array().unwrap().is_empty());
    let (s, seen) = viewer.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!((s, seen["kind"].as_str()), (200, Some("echo")));
    assert!(seen.get("input").is_none(), "a viewer sees metadata only: {seen}");
    let listed = viewer.get("/api/v1/tasks").await.1;
    assert!(listed["tasks"][0].get("input").is_none());
    assert_eq!(admin.get(&format!("/api/v1/tasks/{id}")).await.1["created_by"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_worker_is_cut_off_within_a_second_and_stays_refused_after_a_restart() {
    use std::time::Instant;
    let mut a = Appliance::start();
    let api = a.api();
    let token = a.enrollment_token(None).await;
    let (key, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let enrolled = BrokerClient::enroll(&a.worker_gateway, tether_base::tls::Trust::Ca(&a.ca_pem), &token, &csr, &[])
        .await
        .unwrap();
    let worker = BrokerClient::mtls(&a.worker_gateway, &a.ca_pem, &enrolled.cert_pem, &key).unwrap();
    let bystander = manual_worker(&a).await;

    // The worker holds one task's lease and parks a second poll.
    let task = api.submit("echo", json!({"n": 1}), &[]).await;
    let held = worker.poll(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(held.tasks.len(), 1);
    let parked = tokio::spawn(async move { worker.poll(1, Duration::from_secs(30)).await });
    crate::harness::eventually("a parked poll", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get("/api/v1/system/status").await.1["parked_polls"] == 1 }
    })
    .await;

    let revoked_at = Instant::now();
    let (status, body) = api.post(&format!("/api/v1/workers/{}/revoke", enrolled.worker_id), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tasks_released"], 1, "{body}");
    let cut = tokio::time::timeout(Duration::from_secs(1), parked).await;
    let reply = cut.expect("the parked poll's connection closes within a second").unwrap();
    assert!(reply.is_err(), "the parked poll gets no answer, its connection is closed: {reply:?}");
    assert!(revoked_at.elapsed() < Duration::from_secs(1));

    // Its certificate fails the handshake; polls and renewals are refused.
    let identity = (enrolled.cert_pem.as_str(), key.as_str());
    refused_at_handshake(&a, identity, "a revoked worker's handshake fails").await;
    let again = BrokerClient::mtls(&a.worker_gateway, &a.ca_pem, &enrolled.cert_pem, &key).unwrap();
    let (_, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    assert!(again.renew(&csr).await.is_err(), "a revoked worker cannot renew");

    // The task it held went back in line and another worker finishes it.
    let (_, seen) = api.get(&format!("/api/v1/tasks/{task}")).await;
    assert_eq!(seen["state"], "queued", "{seen}");
    let next = bystander.poll(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.tasks.len(), 1);
    assert_eq!(next.tasks[0].id, task);

    // The CRL lists its certificate, signed by the appliance CA.
    let (status, _, crl) = api.with_token(None).raw(Method::GET, "/api/v1/pki/crl?format=pem", Vec::new(), None).await;
    assert_eq!(status, 200, "the CRL is public");
    let crl = crl.as_str().unwrap().to_owned();
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
    let serial = body["serials"][0].as_str().unwrap().to_owned();
    assert_eq!(crl_serials(&a, &crl), vec![serial]);

    let records = api.audit_log().await;
    assert_eq!(count_events(&records, "worker.revoked"), 1);
    assert_eq!(count_events(&records, "task.lease_revoked"), 1);

    a.kill9();
    a.restart();
    refused_at_handshake(&a, identity, "still refused after kill -9 and a restart").await;

    // The CLI: another worker revoked by id; an unknown id is an error.
    let token = a.enrollment_token(None).await;
    let (_, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let other = BrokerClient::enroll(&a.worker_gateway, tether_base::tls::Trust::Ca(&a.ca_pem), &token, &csr, &[])
        .await
        .unwrap();
    let out = a.cli(&["worker", "revoke", &other.worker_id, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["worker_id"], other.worker_id.as_str());
    let unknown = tether_base::ids::WorkerId::new().to_string();
    let out = a.cli(&["worker", "revoke", &unknown]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("not_found"), "{said}");
}

/// The certificate gets no HTTP answer, and the appliance audits the
/// handshake it refused as a revoked certificate. (The client's own error
/// may be the alert or a broken pipe: in TLS 1.3 it may already be writing
/// its request when the server's verdict arrives.)
async fn refused_at_handshake(a: &Appliance, identity: (&str, &str), label: &str) {
    let revoked_refusals = || async {
        let (_, log) = a.api().get("/api/v1/audit/export").await;
        let refused = |l: &&str| l.contains("auth.failed") && l.contains("client certificate refused: Revoked");
        log.as_str().unwrap().lines().filter(refused).count()
    };
    let before = revoked_refusals().await;
    let poll = format!("{}/worker/v1/poll", a.worker_gateway);
    let sent = gateway_client(a, Some(identity)).post(&poll).json(&json!({"max_tasks": 1, "wait_s": 0})).send().await;
    let err = sent.expect_err(label);
    assert!(err.status().is_none(), "{label}: refused before any HTTP exchange: {err:?}");
    crate::harness::eventually(label, Duration::from_secs(10), || async { revoked_refusals().await > before }).await;
}

/// The serials (hex) a PEM CRL lists, after checking its signature with the
/// appliance CA's key.
fn crl_serials(a: &Appliance, pem: &str) -> Vec<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::revocation_list::CertificateRevocationList;
    let (_, crl_pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let (_, crl) = CertificateRevocationList::from_der(&crl_pem.contents).unwrap();
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(a.ca_pem.as_bytes()).unwrap();
    let (_, ca) = X509Certificate::from_der(&ca_pem.contents).unwrap();
    crl.verify_signature(ca.public_key()).expect("the CRL is signed by the appliance CA");
    crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_string_enrolls_without_a_ca_file_and_a_wrong_pin_is_refused_before_the_token_is_sent() {
    use crate::harness::{Proc, bin};
    let a = Appliance::start();
    let api = a.api();
    let (status, created) = api.post("/api/v1/workers/enrollment-tokens", &json!({})).await;
    assert_eq!(status, 201, "{created}");
    let (join, token) = (created["join"].as_str().unwrap(), created["token"].as_str().unwrap());
    let pin = tether_domain::pki::fingerprint_pem(&a.ca_pem).unwrap();
    let port = a.worker_gateway.rsplit(':').next().unwrap();
    assert_eq!(join, format!("tether://127.0.0.1:{port}?token={token}&ca={pin}"));

    // A broker whose CA is not the pinned one: the worker stops at the
    // handshake, with a message that says so.
    let wrong = join.replace(&pin, &format!("sha256:{}", "0".repeat(64)));
    let state = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(bin())
        .args(["worker", "--join", &wrong, "--state-dir"])
        .arg(state.path().join("w"))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run).await.expect("a wrong pin is not retried").unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("does not match the pin"), "{said}");

    // The token never left: it still enrolls, from the join string alone,
    // and nothing was refused on the broker's side.
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["worker", "--json", "--join", join, "--state-dir"]).arg(state.path().join("ok"));
    let mut worker = Proc::spawn(cmd);
    worker.expect_event("enrolled", Duration::from_secs(30));
    worker.expect_event("ready", Duration::from_secs(30));
    let task = api.submit("echo", json!({"joined": true}), &[]).await;
    assert_eq!(api.wait(&task, 30).await["state"], "succeeded");
    let records = api.audit_log().await;
    assert_eq!(count_events(&records, "worker.enroll_refused"), 0, "the token was never presented before");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_used_token_is_bound_to_its_key_a_retry_keeps_the_worker_and_another_key_is_refused() {
    let a = Appliance::start();
    let trust = tether_base::tls::Trust::Ca(&a.ca_pem);
    let token = a.enrollment_token(None).await;
    let (key, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let first = BrokerClient::enroll(&a.worker_gateway, trust, &token, &csr, &[]).await.unwrap();

    // The answer was lost, say: the same key and token get the same worker
    // back, with a certificate that works.
    let again = BrokerClient::enroll(&a.worker_gateway, trust, &token, &csr, &[]).await.unwrap();
    assert_eq!(again.worker_id, first.worker_id);
    assert_ne!(again.cert_pem, first.cert_pem, "a fresh certificate");
    let worker = BrokerClient::mtls(&a.worker_gateway, &a.ca_pem, &again.cert_pem, &key).unwrap();
    worker.poll(1, Duration::ZERO).await.unwrap();

    // Any other key is refused: the token is spent for it.
    let (_, other_csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    match BrokerClient::enroll(&a.worker_gateway, trust, &token, &other_csr, &[]).await {
        Err(CallError::Refused { status: 401, code, .. }) => assert_eq!(code, "enrollment_token_invalid"),
        other => panic!("another key must be refused, got {other:?}"),
    }
    // And a revoked worker does not come back through its old token.
    let (status, _) = a.api().post(&format!("/api/v1/workers/{}/revoke", first.worker_id), &json!({})).await;
    assert_eq!(status, 200);
    match BrokerClient::enroll(&a.worker_gateway, trust, &token, &csr, &[]).await {
        Err(CallError::Refused { status: 401, code, .. }) => assert_eq!(code, "enrollment_token_invalid"),
        other => panic!("a revoked worker must not re-enroll, got {other:?}"),
    }
    eventually("both refusals are audited", Duration::from_secs(10), || async {
        count_failures(&a.api().audit_log().await, "worker.enroll_refused") == 2
    })
    .await;
    let events = a.api().audit_log().await;
    let count = |kind: &str| count_events(&events, kind);
    assert_eq!((count("worker.enrolled"), count("worker.enrolled_again")), (1, 1));
}
