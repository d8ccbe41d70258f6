//! Crashes, restarts and fencing: nothing acknowledged is lost, nothing is
//! completed twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether::worker::client::{CallError, Report};

use crate::harness::{Appliance, Proc, eventually, manual_worker};

const NAP: &str = r#"
[commands.nap]
argv = ["/bin/sleep", "{seconds}"]
[commands.nap.params.seconds]
type = "integer"
"#;

fn completions(records: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut by_task: HashMap<String, Vec<Value>> = HashMap::new();
    for r in records.iter().filter(|r| r["event_type"] == "task.completed") {
        by_task.entry(r["resource"]["id"].as_str().unwrap().to_owned()).or_default().push(r.clone());
    }
    by_task
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_task_is_finished_by_another_after_its_lease_expires() {
    let mut a = Appliance::start();
    let mut first = a.worker("first", &[], Some(NAP)).await;
    let api = a.api();
    let id = api.submit("command", json!({"command": "nap", "params": {"seconds": 2}}), &[]).await;
    first.expect("task_started", Duration::from_secs(30), |v| {
        v["event"] == "task_started" && v["task_id"] == id.as_str()
    });
    let first_id = first.expect_event("enrolled", Duration::ZERO)["worker_id"].as_str().unwrap().to_owned();
    first.kill9();

    let mut second = a.worker("second", &[], Some(NAP)).await;
    let second_id = second.expect_event("enrolled", Duration::ZERO)["worker_id"].as_str().unwrap().to_owned();
    second.expect("the retried task", Duration::from_secs(30), |v| {
        v["event"] == "task_started" && v["task_id"] == id.as_str()
    });
    let done = api.wait(&id, 30).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);

    a.stop();
    let records = a.audit_records();
    let expired: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "task.lease_expired").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["metadata"]["details"]["worker"], first_id.as_str());
    let done_by = &completions(&records)[&id];
    assert_eq!(done_by.len(), 1);
    assert_eq!(done_by[0]["actor"]["id"], second_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_completion_is_refused_with_409_and_completion_happens_once() {
    let a = Appliance::start();
    let worker = manual_worker(&a).await;
    let api = a.api();
    let id = api.submit("echo", json!({"v": 1}), &[]).await;
    let first = worker.poll(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.tasks[0].id, id);
    let stale_lease = first.tasks[0].lease_id.clone();
    // Do not heartbeat: the 3 s lease expires and the task comes back.
    let second = worker.poll(1, Duration::from_secs(20)).await.unwrap();
    assert_eq!(second.tasks.len(), 1, "the task is leased again after expiry");
    let lease = second.tasks[0].lease_id.clone();
    assert_ne!(lease, stale_lease);

    let report = |lease: &str, v: i32| Report::Succeeded { lease_id: lease.into(), result: json!({"v": v}) };
    assert!(matches!(worker.complete(&id, &report(&stale_lease, 1)).await, Err(CallError::LeaseLost)));
    assert!(matches!(worker.heartbeat(&id, &stale_lease).await, Err(CallError::LeaseLost)));
    worker.complete(&id, &report(&lease, 2)).await.unwrap();
    assert!(matches!(worker.complete(&id, &report(&lease, 3)).await, Err(CallError::LeaseLost)));
    let t = api.wait(&id, 1).await;
    assert_eq!((t["state"].as_str(), &t["result"]), (Some("succeeded"), &json!({"v": 2})));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_parked_polls_and_exits_cleanly() {
    let mut a = Appliance::start();
    let worker = manual_worker(&a).await;
    let api = a.api();
    let parked = tokio::spawn(async move {
        let started = Instant::now();
        (worker.poll(1, Duration::from_secs(30)).await, started.elapsed())
    });
    eventually("a parked poll", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get("/api/v1/system/status").await.1["parked_polls"] == 1 }
    })
    .await;
    let status = a.stop();
    assert!(status.success(), "serve exits 0 after draining: {status:?}");
    let (reply, waited) = parked.await.unwrap();
    assert!(reply.unwrap().tasks.is_empty(), "the parked poll is answered, empty");
    assert!(waited < Duration::from_secs(10), "answered at once, not at its 30 s timeout ({waited:?})");
}

/// A worker resumes from its state directory alone (no broker, CA or
/// token named), and says it is ready only once the appliance answered.
#[tokio::test(flavor = "multi_thread")]
async fn workers_resume_without_re_enrolling_after_either_side_restarts() {
    let mut a = Appliance::start();
    let mut w = a.worker("w", &[], None).await;
    let id = w.expect_event("enrolled", Duration::ZERO)["worker_id"].clone();
    let api = a.api();
    assert_eq!(api.wait(&api.submit("echo", json!(1), &[]).await, 30).await["state"], "succeeded");

    w.kill9();
    let mut w = a.resume_worker("w", None);
    assert_eq!(w.expect_event("resumed", Duration::from_secs(30))["worker_id"], id);
    w.expect_event("ready", Duration::from_secs(30));
    assert_eq!(api.wait(&api.submit("echo", json!(2), &[]).await, 30).await["state"], "succeeded");

    a.kill9();
    a.restart();
    let api = a.api();
    assert_eq!(api.wait(&api.submit("echo", json!(3), &[]).await, 60).await["state"], "succeeded");
    let (_, workers) = api.get("/api/v1/workers").await;
    assert_eq!(workers.as_array().unwrap().len(), 1, "no second enrollment");

    // Started while the appliance is down, a worker is not ready until it
    // reaches it.
    drop(w);
    a.kill9();
    let mut w = Proc::spawn(a.worker_command("w", None, &[], None));
    w.expect("unreachable, not ready", Duration::from_secs(30), |v| {
        assert_ne!(v["event"], "ready", "ready before it reached the appliance");
        v["event"] == "unreachable"
    });
    a.restart();
    w.expect_event("ready", Duration::from_secs(60));
    assert_eq!(api.wait(&api.submit("echo", json!(4), &[]).await, 60).await["state"], "succeeded");
}

/// Submits tasks from `clients` concurrent clients until `until` tasks are
/// acknowledged or the appliance stops answering. Returns when all stop.
async fn submit_load(api: &crate::harness::Api, acked: &Arc<Mutex<Vec<String>>>, clients: usize, until: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut joins = Vec::new();
    for c in 0..clients {
        let (api, acked, stop) = (api.clone(), acked.clone(), stop.clone());
        joins.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && acked.lock().unwrap().len() < until {
                n += 1;
                match api.try_post("/api/v1/tasks", &json!({"kind": "echo", "input": {"client": c, "n": n}})).await {
                    Ok((201, v)) => acked.lock().unwrap().push(v["id"].as_str().unwrap().to_owned()),
                    Ok((status, v)) => panic!("unexpected {status}: {v}"),
                    Err(_) => {
                        // The appliance went away mid-request: that task was
                        // never acknowledged, so nothing is promised about it.
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_acknowledged_task_and_completes_none_twice() {
    let mut a = Appliance::start();
    let _w1 = a.worker("w1", &[], Some("concurrency = 8\n")).await;
    let _w2 = a.worker("w2", &[], Some("concurrency = 8\n")).await;
    let acked = Arc::new(Mutex::new(Vec::new()));

    // Phase 1: load, and kill -9 the broker in the middle of it.
    let api = a.api();
    let load = {
        let (api, acked) = (api.clone(), acked.clone());
        tokio::spawn(async move { submit_load(&api, &acked, 16, usize::MAX).await })
    };
    eventually("500 acknowledged tasks", Duration::from_secs(120), || {
        let n = acked.lock().unwrap().len();
        async move { n >= 500 }
    })
    .await;
    a.kill9();
    load.await.unwrap();
    let before_crash = acked.lock().unwrap().len();

    // Phase 2: restart on the same ports and bring the total past 1,000.
    a.restart();
    let api = a.api();
    submit_load(&api, &acked, 16, before_crash + 600).await;
    let ids = acked.lock().unwrap().clone();
    assert!(ids.len() >= 1000, "only {} tasks acknowledged", ids.len());

    let mut waits = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    for id in ids.clone() {
        let (api, limit) = (api.clone(), limit.clone());
        waits.spawn(async move {
            let _slot = limit.acquire_owned().await.unwrap();
            let t = api.wait(&id, 60).await;
            (id, t["state"].as_str().unwrap_or("?").to_owned())
        });
    }
    let mut not_done = Vec::new();
    while let Some(r) = waits.join_next().await {
        let (id, state) = r.unwrap();
        if state != "succeeded" {
            not_done.push((id, state));
        }
    }
    assert!(not_done.is_empty(), "acknowledged tasks not completed: {not_done:?}");

    a.stop();
    let (ok, report) = a.audit_verify();
    assert!(ok, "audit chain must verify after a crash: {report}");
    let done = completions(&a.audit_records());
    let twice: Vec<_> = done.iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| k).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    for id in &ids {
        assert_eq!(done.get(id).map(Vec::len), Some(1), "task {id} has no completion record");
    }
    eprintln!("acknowledged {} tasks ({before_crash} before the crash); all completed exactly once", ids.len());
}
