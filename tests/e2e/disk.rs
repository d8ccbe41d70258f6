//! A full disk: the appliance refuses state changes before the audit log
//! runs out of room, fails closed when it does, loses nothing it
//! acknowledged, and resumes by itself; a disk already over 80 % at start
//! raises its alert.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Appliance, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn filling_the_disk_under_load_fails_cleanly_loses_nothing_acknowledged_and_resumes_when_space_returns() {
    use std::time::Instant;
    let mut env = crate::harness::fast_env();
    env.push(("TETHER_DISK_RESERVE", "16m"));
    let (mut a, mount) = Appliance::start_on_tmpfs(128, env);
    let api = a.api();
    let _w = a.worker("w", &[], None).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut submitters = Vec::new();
    for s in 0..2 {
        let (api, acknowledged, refused, stop) = (api.clone(), acknowledged.clone(), refused.clone(), stop.clone());
        submitters.push(tokio::spawn(async move {
            let mut i = 0;
            // After a refusal, the next try waits for this pace (50 a second).
            let mut retry = tokio::time::interval(Duration::from_millis(20));
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                let body = json!({"kind": "echo", "input": {"s": s, "i": i, "pad": "x".repeat(2000)}});
                let (status, v) = api.try_post("/api/v1/tasks", &body).await.expect("the appliance answers");
                assert!(started.elapsed() < Duration::from_secs(10), "an answer within bounded time");
                if status == 201 {
                    acknowledged.lock().unwrap().push(v["id"].as_str().unwrap().to_owned());
                } else {
                    let code = v["code"].as_str().unwrap_or_else(|| panic!("problem+json, got {status}: {v}"));
                    assert!(matches!(code, "insufficient_storage" | "audit_degraded"), "{status} {v}");
                    *refused.lock().unwrap().entry(code.to_owned()).or_default() += 1;
                    retry.tick().await;
                }
            }
        }));
    }
    eventually("the submitters are under way", Duration::from_secs(10), || async {
        !acknowledged.lock().unwrap().is_empty()
    })
    .await;
    let health = |api: crate::harness::Api| async move { api.with_token(None).get("/healthz").await.1 };

    // The disk nearly fills (another program's file), then fills
    // completely. Under load the appliance gives up its reserve and refuses
    // state changes (507), and when even that room is gone every action
    // fails closed (503 audit_degraded): within bounded time, as
    // problem+json (the submitters check each answer).
    let available = || {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(&mount.0).output().unwrap();
        String::from_utf8(out.stdout).unwrap().lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    // The appliance keeps writing between the look and the fill: measure
    // again and retry if the space went meanwhile.
    let big = mount.0.join("big-file");
    let made = (0..5).any(|_| {
        let size = available().saturating_sub(512 << 10).to_string();
        Command::new("fallocate").args(["-l", &size]).arg(&big).status().unwrap().success()
    });
    assert!(made, "the disk is filled to within 512 KiB");
    eventually("the appliance says the disk is low", Duration::from_secs(10), || async {
        let h = health(api.clone()).await;
        h["disk"] == "low" || h["audit"] == "degraded"
    })
    .await;
    let disk_alerts = |api: crate::harness::Api| async move {
        // Reads answer 503 while the store reopens after a failed write.
        let (_, alerts) = api.get("/api/v1/alerts").await;
        alerts.as_array().map_or(0, |all| all.iter().filter(|a| a["kind"] == "disk_usage").count())
    };
    eventually("the fill raises the disk-usage alert", Duration::from_secs(30), || async {
        disk_alerts(api.clone()).await > 0
    })
    .await;
    let refusals = || refused.lock().unwrap().values().sum::<usize>();
    // 507: the disk gate refuses (and tallies the refusal for the audit log).
    eventually("state changes are refused while the disk is low", Duration::from_secs(10), || async {
        refused.lock().unwrap().contains_key("insufficient_storage")
    })
    .await;
    let filler = mount.0.join("filler");
    let filled =
        Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", filler.display())).arg("bs=64k").output().unwrap();
    assert!(!filled.status.success(), "dd stops at a full disk");
    eventually("the appliance says audit is degraded", Duration::from_secs(10), || async {
        // A login is allowed while the disk is low, and writes a session
        // and an audit record: it finds the store unable to write.
        let _ =
            api.with_token(None).try_post("/api/v1/auth/login", &json!({"username": "nobody", "password": "x"})).await;
        let h = health(api.clone()).await;
        h["audit"] == "degraded" && h["status"] == "audit degraded"
    })
    .await;
    let before_full = refusals();
    eventually("state changes are refused while the disk is full", Duration::from_secs(10), || async {
        refusals() > before_full
    })
    .await;

    // Space returns: service resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&big).unwrap();
    eventually("the appliance is healthy again", Duration::from_secs(30), || async {
        health(api.clone()).await["status"] == "ok"
    })
    .await;
    let before = acknowledged.lock().unwrap().len();
    eventually("tasks are accepted again", Duration::from_secs(10), || async {
        acknowledged.lock().unwrap().len() > before + 5
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in submitters {
        s.await.unwrap();
    }
    eprintln!("acknowledged {} tasks; refused {:?}", acknowledged.lock().unwrap().len(), refused.lock().unwrap());

    // Nothing acknowledged is lost, before and after a crash, and the audit chain holds.
    let ids = acknowledged.lock().unwrap().clone();
    let check_all = |api: crate::harness::Api, ids: Vec<String>| async move {
        for id in ids {
            let (s, v) = api.get(&format!("/api/v1/tasks/{id}")).await;
            assert_eq!(s, 200, "acknowledged task {id} is there: {v}");
        }
    };
    check_all(api.clone(), ids.clone()).await;
    assert_eq!(api.get("/api/v1/audit/verify").await.1["ok"], true);
    // The refusals came before any authentication, so they were tallied in
    // memory while the disk was low (anonymous traffic does not spend the
    // reserve) and are written once space is back.
    eventually("the refusals are audited", Duration::from_secs(10), || async {
        api.audit_log().await.iter().any(|r| r["event_type"] == "system.refused_disk_low")
    })
    .await;
    assert_eq!(disk_alerts(api.clone()).await, 1, "one disk-usage alert for the fill");
    a.kill9();
    a.restart();
    check_all(a.api(), ids).await;
    a.stop();
    let (ok, verdict) = a.audit_verify();
    assert!(ok, "{verdict}");
    drop(mount);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_appliance_started_on_a_disk_over_80_percent_full_starts_and_raises_one_alert() {
    let (mut a, mount) = Appliance::start_on_tmpfs(64, vec![("TETHER_DISK_RESERVE", "1m")]);
    a.stop();
    // Another program's file takes the disk to about 90%, as df counts it.
    let made = Command::new("fallocate").args(["-l", "57m"]).arg(mount.0.join("other-data")).status().unwrap();
    assert!(made.success());
    a.restart();
    let (s, alerts) = a.api().get("/api/v1/alerts").await;
    assert_eq!(s, 200, "{alerts}");
    let disk: Vec<&Value> = alerts.as_array().unwrap().iter().filter(|al| al["kind"] == "disk_usage").collect();
    assert_eq!(disk.len(), 1, "{alerts}");
    a.stop();
}
