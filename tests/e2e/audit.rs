//! The audit trail proves itself offline and reaches the SIEM.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::harness::{Appliance, bin, eventually};

/// Runs `tether audit verify` with `args`: (passed, stdout and stderr).
fn verify<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = Command::new(bin()).args(["audit", "verify"]).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs `tether audit verify --file F --public-key K`: (passed, stdout).
fn verify_file(dir: &std::path::Path, export: &str, key: &str) -> (bool, String) {
    let (file, key_file) = (dir.join("export.jsonl"), dir.join("audit-key.pem"));
    std::fs::write(&file, export).unwrap();
    std::fs::write(&key_file, key).unwrap();
    verify(&[std::ffi::OsStr::new("--file"), file.as_os_str(), "--public-key".as_ref(), key_file.as_os_str()])
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_verifies_offline_and_an_edit_a_deletion_a_swap_or_a_cut_tail_is_named() {
    let mut env = crate::harness::fast_env();
    env.push(("TETHER_AUDIT_CHECKPOINT_INTERVAL", "1s"));
    let a = Appliance::start_with(env);
    let api = a.api();
    let _w = a.worker("w", &[], None).await;
    for i in 0..5 {
        let id = api.submit("echo", json!({"n": i}), &[]).await;
        api.wait(&id, 30).await;
    }
    eventually("a signed checkpoint in the chain", Duration::from_secs(10), || async {
        api.audit_log().await.iter().any(|r| r["event_type"] == "audit.checkpoint")
    })
    .await;
    for i in 5..8 {
        api.submit("echo", json!({"n": i}), &[]).await;
    }
    let (s, key) = api.get("/api/v1/audit/public-key").await;
    assert_eq!(s, 200, "{key}");
    let key = key.as_str().unwrap().to_owned();
    assert!(key.starts_with("-----BEGIN PUBLIC KEY-----"), "{key}");
    let (s, export) = api.get("/api/v1/audit/export").await;
    assert_eq!(s, 200);
    let export = export.as_str().unwrap().to_owned();
    let lines: Vec<&str> = export.lines().collect();
    assert!(lines.last().unwrap().starts_with("{\"export_seal\""), "the export ends with its seal");
    let dir = tempfile::tempdir().unwrap();

    let (ok, text) = verify_file(dir.path(), &export, &key);
    assert!(ok, "the untouched export verifies: {text}");
    assert!(text.contains("checkpoints"), "{text}");

    // Pick a task record in the middle.
    let k = lines.iter().position(|l| l.contains("\"event_type\":\"task.created\"")).unwrap() + 2;
    let seq_of = |line: &str| serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap();
    let join = |ls: Vec<&str>| ls.join("\n") + "\n";

    let mut edited = lines.clone();
    let changed = lines[k].replacen("\"result\":\"success\"", "\"result\":\"failure\"", 1);
    assert_ne!(changed, lines[k], "the edit changes the record");
    edited[k] = &changed;
    let (ok, text) = verify_file(dir.path(), &join(edited), &key);
    assert!(!ok, "an edited record fails");
    assert!(text.contains(&format!("line {} (seq {})", k + 1, seq_of(lines[k]))) && text.contains("altered"), "{text}");

    let mut deleted = lines.clone();
    deleted.remove(k);
    let (ok, text) = verify_file(dir.path(), &join(deleted), &key);
    assert!(!ok);
    assert!(
        text.contains(&format!("line {} (seq {})", k + 1, seq_of(lines[k + 1]))) && text.contains("missing"),
        "{text}"
    );

    let mut swapped = lines.clone();
    swapped.swap(k, k + 1);
    let (ok, text) = verify_file(dir.path(), &join(swapped), &key);
    assert!(!ok);
    assert!(text.contains(&format!("line {} (seq {})", k + 1, seq_of(lines[k + 1]))), "{text}");

    let cut = lines[..lines.len() - 3].to_vec();
    let (ok, text) = verify_file(dir.path(), &join(cut), &key);
    assert!(!ok);
    assert!(text.contains("no seal"), "a cut tail is found: {text}");

    // Another appliance's key does not vouch for this log.
    let b = Appliance::start();
    let (_, other_key) = b.api().get("/api/v1/audit/public-key").await;
    let (ok, text) = verify_file(dir.path(), &export, other_key.as_str().unwrap());
    assert!(!ok, "{text}");

    // A checkpoint kept apart: it verifies on its own and against an export
    // that holds what it covers; altered, foreign-keyed or not reached, it fails.
    let (status, checkpoint) = api.get("/api/v1/audit/checkpoint").await;
    assert_eq!(status, 200, "{checkpoint}");
    let covers = checkpoint["covers_seq"].as_u64().unwrap();
    let d = dir.path();
    let (cp, key_file, other_key_file, file) =
        (d.join("checkpoint.json"), d.join("audit-key.pem"), d.join("other-key.pem"), d.join("export.jsonl"));
    std::fs::write(&cp, checkpoint.to_string()).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    std::fs::write(&other_key_file, other_key.as_str().unwrap()).unwrap();
    std::fs::write(&file, &export).unwrap();
    // `verify --checkpoint` with a key, and with the export file or without.
    let check = |key: &std::path::Path, with_export: bool| {
        let mut args = vec!["--checkpoint".as_ref(), cp.as_os_str(), "--public-key".as_ref(), key.as_os_str()];
        if with_export {
            args.extend(["--file".as_ref(), file.as_os_str()]);
        }
        verify(&args)
    };
    let (ok, text) = check(&key_file, false);
    assert!(ok && text.contains(&format!("vouches for records up to seq {covers}")), "{text}");
    let (ok, text) = check(&key_file, true);
    assert!(ok && text.contains("the exports agree with it"), "{text}");
    let (ok, text) = check(&other_key_file, false);
    assert!(!ok && text.contains("does not verify with this public key"), "another appliance's key: {text}");
    let mut altered = checkpoint.clone();
    altered["covers_seq"] = json!(covers - 1);
    std::fs::write(&cp, altered.to_string()).unwrap();
    let (ok, text) = check(&key_file, false);
    assert!(!ok && text.contains("checkpoint BROKEN"), "an altered checkpoint: {text}");
    std::fs::write(&cp, checkpoint.to_string()).unwrap();
    let (_, later) = api.get(&format!("/api/v1/audit/export?from={}", covers + 1)).await;
    std::fs::write(&file, later.as_str().unwrap()).unwrap();
    let (ok, text) = check(&key_file, true);
    assert!(!ok && text.contains(&format!("do not hold record {covers}")), "an export that starts after it: {text}");
}

/// A syslog-over-TLS receiver (RFC 5425 framing) that records every seq it
/// reads, in order, until stopped.
struct Receiver {
    task: tokio::task::JoinHandle<()>,
}

fn receiver_tls() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["siem.test".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    (Arc::new(config), ca.pem())
}

impl Receiver {
    async fn start(port: u16, tls: Arc<rustls::ServerConfig>, seqs: Arc<Mutex<Vec<u64>>>) -> Receiver {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(([127, 0, 0, 1], port).into()).unwrap();
        let listener = socket.listen(16).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let sink = seqs.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, seqs) = (acceptor.clone(), sink.clone());
                connections.spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    loop {
                        let mut len = Vec::new();
                        loop {
                            let mut b = [0u8; 1];
                            if tls.read_exact(&mut b).await.is_err() {
                                return;
                            }
                            if b[0] == b' ' {
                                break;
                            }
                            len.push(b[0]);
                        }
                        let n: usize = std::str::from_utf8(&len).unwrap().parse().unwrap();
                        let mut msg = vec![0u8; n];
                        if tls.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        let msg = String::from_utf8(msg).unwrap();
                        assert!(msg.starts_with('<') && msg.contains(">1 "), "RFC 5424: {msg}");
                        let seq = msg.split("seq=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
                        seqs.lock().unwrap().push(seq);
                    }
                });
            }
        });
        Receiver { task }
    }

    fn stop(self) {
        // Aborting the accept loop drops the listener and every connection.
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syslog_tls_receiver_gets_every_record_in_order_even_across_an_outage_under_load() {
    let mut env = crate::harness::fast_env();
    env.push(("TETHER_AUDIT_SINK_DOWN_ALERT", "3s"));
    let mut a = Appliance::start_with(env);
    let api = a.api();
    let officer = api.with_token(Some(&a.officer_token().await));
    let _w = a.worker("w", &[], None).await;
    let (tls, ca_pem) = receiver_tls();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(port, tls.clone(), seqs.clone()).await;

    let sink = json!({"syslog_tls": {"address": format!("127.0.0.1:{port}"), "server_name": "siem.test",
        "ca_pem": ca_pem, "format": "rfc5424"}});
    let (s, v, _) = api.send(Method::PUT, "/api/v1/audit/sinks/siem", Some(&sink), &[]).await;
    assert_eq!(s, 403, "an admin cannot configure (or silence) audit sinks: {v}");
    let (s, v, _) = officer.send(Method::PUT, "/api/v1/audit/sinks/siem", Some(&sink), &[]).await;
    assert_eq!(s, 200, "{v}");

    // Load throughout: submitters and a worker write records all the time.
    let load = tokio::spawn({
        let api = api.clone();
        async move {
            // Paced at 50 submissions a second, however long each takes.
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            for i in 0.. {
                pace.tick().await;
                api.submit("echo", json!({"n": i}), &[]).await;
            }
        }
    });
    let head =
        |api: crate::harness::Api| async move { api.get("/api/v1/audit/verify").await.1["head_seq"].as_u64().unwrap() };
    let before = head(api.clone()).await;
    eventually("the receiver catches up", Duration::from_secs(30), || async {
        seqs.lock().unwrap().iter().any(|s| *s >= before)
    })
    .await;

    // The receiver goes away for a while under load, then comes back.
    receiver.stop();
    let sink_down = |api: crate::harness::Api| async move {
        let (_, alerts) = api.get("/api/v1/alerts").await;
        alerts.as_array().unwrap().iter().filter(|a| a["kind"] == "audit_sink_down").cloned().collect::<Vec<_>>()
    };
    // Down longer than TETHER_AUDIT_SINK_DOWN_ALERT (3 s), with records piling up.
    eventually("the outage raises its alert", Duration::from_secs(30), || async {
        !sink_down(api.clone()).await.is_empty()
    })
    .await;
    eventually("records keep coming while the receiver is away", Duration::from_secs(30), || async {
        head(api.clone()).await > before + 50
    })
    .await;
    let down = sink_down(api.clone()).await;
    assert_eq!(down.len(), 1, "the outage raised one alert: {down:?}");
    assert_eq!(down[0]["subject"], "siem");
    let during = head(api.clone()).await;
    let receiver = Receiver::start(port, tls, seqs.clone()).await;
    eventually("the receiver gets records written during the outage", Duration::from_secs(30), || async {
        seqs.lock().unwrap().iter().any(|s| *s >= during)
    })
    .await;
    load.abort();
    let last = head(api.clone()).await;
    eventually("the receiver has every record up to the last", Duration::from_secs(60), || async {
        seqs.lock().unwrap().iter().any(|s| *s >= last)
    })
    .await;
    // Once the connection has stayed healthy a while, the cursor moves past
    // what was sent: a later outage resends from there.
    eventually("the sink's cursor confirms the delivery", Duration::from_secs(15), || async {
        let (_, sinks) = officer.get("/api/v1/audit/sinks").await;
        sinks[0]["status"]["delivered_through"].as_u64().is_some_and(|d| d >= last)
    })
    .await;
    // A crash: the sink resumes from its durable cursor.
    a.kill9();
    a.restart();
    for i in 0..5 {
        api.submit("echo", json!({"after_crash": i}), &[]).await;
    }
    let last = head(api.clone()).await;
    eventually("the receiver has the records written after the crash", Duration::from_secs(30), || async {
        seqs.lock().unwrap().iter().any(|s| *s >= last)
    })
    .await;
    receiver.stop();

    let got = seqs.lock().unwrap().clone();
    // In order, none missing: each seq is at most one past the highest seen
    // before it (a resend after the outage repeats, never skips).
    let mut highest: Option<u64> = None;
    for (i, s) in got.iter().enumerate() {
        let next = highest.map_or(0, |h| h + 1);
        assert!(*s <= next, "message {i}: seq {s} arrived before seq {next}");
        highest = Some(highest.map_or(*s, |h| h.max(*s)));
    }
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    let newest = *distinct.last().unwrap();
    assert!(newest >= last);
    assert_eq!(distinct.len() as u64, newest + 1, "every record 0..={newest} arrived, none missing");
    let duplicates = got.len() - distinct.len();
    eprintln!(
        "received {} messages for {} records ({duplicates} resent after the outage and the crash)",
        got.len(),
        distinct.len()
    );

    let (_, sinks) = officer.get("/api/v1/audit/sinks").await;
    assert_eq!(sinks[0]["name"], "siem", "{sinks}");
    assert_eq!(sinks[0]["kind"]["syslog_tls"]["format"], "rfc5424", "{sinks}");
    let records = api.audit_log().await;
    assert!(
        records
            .iter()
            .any(|r| r["event_type"] == "audit.sink_configured" && r["actor"]["roles"][0] == "security_officer")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_lines_file_sink_holds_the_log_as_exported() {
    let a = Appliance::start();
    let api = a.api();
    let officer_token = a.officer_token().await;
    let path = a.dir.path().join("siem.jsonl");
    // Through the CLI, as a security officer; an admin is refused.
    let add = ["audit", "sink", "add", "file", "--jsonl-file", path.to_str().unwrap()];
    let refused = a.cli(&add).output().unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("forbidden"));
    let added = a.cli(&add).env("TETHER_TOKEN", &officer_token).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let listed = a.cli(&["audit", "sink", "list"]).env("TETHER_TOKEN", &officer_token).output().unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "file", "{listed}");
    for i in 0..3 {
        api.submit("echo", json!({"n": i}), &["nobody"]).await;
    }
    let export = api.get("/api/v1/audit/export").await.1.as_str().unwrap().to_owned();
    let records: Vec<&str> = export.lines().filter(|l| !l.starts_with("{\"export_seal\"")).collect();
    eventually("the file holds every exported record", Duration::from_secs(10), || async {
        let file = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = file.lines().collect();
        lines.len() >= records.len() && lines[..records.len()] == records[..]
    })
    .await;
    // The appliance made the file for itself alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // A path that is not plainly itself is refused.
    let dotted = format!("{}/../elsewhere.jsonl", a.dir.path().display());
    let refused = a
        .cli(&["audit", "sink", "add", "other", "--jsonl-file", &dotted])
        .env("TETHER_TOKEN", &officer_token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("plain absolute file path"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_gone_silent_raises_one_alert() {
    let mut env = crate::harness::fast_env();
    // Polls held the default 30 s: the killed worker's parked poll is
    // noticed as its connection drops, not when the poll would have ended.
    env.extend([("TETHER_MAX_POLL_WAIT", "30s"), ("TETHER_WORKER_SILENCE_GRACE", "2s")]);
    let a = Appliance::start_with(env);
    let api = a.api();
    let mut w = a.worker("w", &[], None).await;
    let id = api.submit("echo", json!({}), &[]).await;
    api.wait(&id, 30).await;
    let (_, workers) = api.get("/api/v1/workers").await;
    let worker_id = workers[0]["id"].as_str().unwrap().to_owned();
    assert!(workers[0]["last_seen"].is_string(), "a polling worker was seen: {workers}");
    let silent = |api: crate::harness::Api| async move {
        let (_, alerts) = api.get("/api/v1/alerts").await;
        alerts.as_array().unwrap().iter().filter(|a| a["kind"] == "worker_silent").cloned().collect::<Vec<_>>()
    };
    // Longer than the silence threshold (2 s without a request in flight)
    // passes: a rule about time passing, so real time passes here on purpose.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(silent(api.clone()).await.is_empty(), "a polling worker is not silent");

    let killed_at = tether_base::clock::Clock::now(&tether_base::clock::SystemClock);
    w.kill9();
    eventually("the silent worker is reported", Duration::from_secs(15), || async {
        !silent(api.clone()).await.is_empty()
    })
    .await;
    // More silence does not raise it again (real time, on purpose).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let alerts = silent(api.clone()).await;
    assert_eq!(alerts.len(), 1, "once: {alerts:?}");
    assert_eq!(alerts[0]["subject"], worker_id.as_str());
    // Its last-seen time is the moment its connection dropped (its parked
    // poll had begun 5 s before), then the grace passed before the alert.
    let (_, workers) = api.get("/api/v1/workers").await;
    let at = |v: &Value| tether_base::clock::Timestamp::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let last_seen = at(&workers[0]["last_seen"]);
    assert!(last_seen.since(killed_at) < Duration::from_secs(1), "seen until it was killed: {workers}");
    assert!(killed_at.since(last_seen) < Duration::from_secs(1), "seen until it was killed: {workers}");
    let quiet = at(&alerts[0]["raised_at"]).since(last_seen);
    assert!(quiet >= Duration::from_secs(2), "last seen {quiet:?} before the alert: {workers}");
    eprintln!(
        "a killed worker was reported silent {:?} after it was killed (grace 2 s)",
        at(&alerts[0]["raised_at"]).since(killed_at)
    );
    let cli = a.cli(&["alerts"]).output().unwrap();
    let shown = String::from_utf8_lossy(&cli.stdout);
    assert!(shown.lines().any(|l| l.contains("worker_silent") && l.contains(&worker_id)), "{shown}");
    let records = api.audit_log().await;
    assert_eq!(
        records.iter().filter(|r| r["event_type"] == "alert.raised" && r["resource"]["id"] == "worker_silent").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn old_records_go_to_signed_segments_and_the_chain_stays_anchored_across_the_cut() {
    let mut env = crate::harness::fast_env();
    env.push(("TETHER_AUDIT_RETENTION", "3s"));
    let a = Appliance::start_with(env);
    let api = a.api();
    let archive = a.data_dir().join("audit-archive");
    let segments = || {
        let mut files: Vec<_> =
            std::fs::read_dir(&archive).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
        files.sort();
        files
    };
    for round in 0..2 {
        for i in 0..5 {
            api.submit("echo", json!({"round": round, "i": i}), &["nobody"]).await;
        }
        let before = segments().len();
        eventually("a segment is archived", Duration::from_secs(20), || async { segments().len() > before }).await;
    }
    let (_, verdict) = api.get("/api/v1/audit/verify").await;
    assert_eq!(verdict["ok"], true, "the kept chain verifies from its anchor: {verdict}");
    let records = api.audit_log().await;
    assert!(records[0]["seq"].as_u64().unwrap() > 0, "old records were pruned");
    assert!(records.iter().any(|r| r["event_type"] == "audit.archived"));

    let (_, key) = api.get("/api/v1/audit/public-key").await;
    let dir = tempfile::tempdir().unwrap();
    let (key_file, export_file) = (dir.path().join("key.pem"), dir.path().join("export.jsonl"));
    std::fs::write(&key_file, key.as_str().unwrap()).unwrap();
    // Retention keeps archiving while the test runs: an export taken while
    // a segment is being written (file first, then the prune) overlaps it.
    // Take the export between two identical looks at the segments, after
    // the last archive's record.
    for attempt in 0.. {
        assert!(attempt < 100, "the segments never held still for an export");
        let before = segments();
        let (_, export) = api.get("/api/v1/audit/export").await;
        std::fs::write(&export_file, export.as_str().unwrap()).unwrap();
        let settled = export.as_str().unwrap().lines().next().is_some_and(|first| {
            let seq = serde_json::from_str::<Value>(first).ok().and_then(|r| r["seq"].as_u64()).unwrap_or(0);
            before.last().is_some_and(|f| {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                name.trim_end_matches(".jsonl").rsplit('-').next().and_then(|n| n.parse::<u64>().ok())
                    == seq.checked_sub(1)
            })
        });
        if settled && segments() == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let verify = |files: &[std::path::PathBuf]| {
        let mut cmd = Command::new(bin());
        cmd.args(["audit", "verify", "--public-key"]).arg(&key_file);
        for f in files {
            cmd.arg("--file").arg(f);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut all = segments();
    assert!(all.len() >= 2, "{all:?}");
    all.push(export_file.clone());
    let (ok, text) = verify(&all);
    assert!(ok, "every segment and the export, each continuing the last: {text}");
    let mut missing = all.clone();
    missing.remove(1);
    let (ok, text) = verify(&missing);
    assert!(!ok && text.contains("does not continue"), "a missing segment is found: {text}");
}
