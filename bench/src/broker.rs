//! The appliance's broker measured over TLS/mTLS: lifecycle throughput,
//! create-to-delivery latency, create throughput under many clients, and
//! memory per parked long-poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::appliance::{Api, Appliance};
use crate::{enroll_workers, percentiles};
use tether::worker::client::{BrokerClient, Report};

/// `workers` loop poll → complete while `api` creates `n` tasks, `in_flight`
/// at a time; returns tasks/s from the first create to the last completion.
pub async fn lifecycle(workers: Vec<BrokerClient>, api: &Api, n: usize, in_flight: usize) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Notify::new());
    let workers: Vec<_> = workers
        .into_iter()
        .map(|w| {
            let (done, finished) = (done.clone(), finished.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(reply) = w.poll(1, Duration::from_secs(30)).await else { continue };
                    for t in reply.tasks {
                        let report = Report::Succeeded { lease_id: t.lease_id, result: t.input };
                        if w.complete(&t.id, &report).await.is_ok() && done.fetch_add(1, Ordering::SeqCst) + 1 == n {
                            finished.notify_one();
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut producer = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (api, next) = (api.clone(), next.clone());
        producer.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                api.post("/api/v1/tasks", &json!({"kind": "echo", "input": {"i": i}})).await?;
            }
        });
    }
    while let Some(r) = producer.join_next().await {
        r??;
    }
    tokio::time::timeout(Duration::from_secs(600), finished.notified()).await.context("tasks did not finish")?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    workers.iter().for_each(|w| w.abort());
    Ok(rate)
}

pub async fn latency(app: &Appliance, api: &Api, samples: usize) -> anyhow::Result<Value> {
    let w = app.enroll_worker(api).await?;
    let (tx, mut delivered) = mpsc::unbounded_channel::<Instant>();
    let worker = tokio::spawn(async move {
        loop {
            let Ok(reply) = w.poll(1, Duration::from_secs(30)).await else { continue };
            let at = Instant::now();
            for t in reply.tasks {
                let _ = tx.send(at);
                let _ = w.complete(&t.id, &Report::Succeeded { lease_id: t.lease_id, result: json!({}) }).await;
            }
        }
    });
    let mut after_ack = Vec::with_capacity(samples);
    for i in 0..samples {
        // Only an already-waiting worker counts: wait until its poll is parked.
        while api.parked_polls().await? < 1 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        api.post("/api/v1/tasks", &json!({"kind": "echo", "input": {"i": i}})).await?;
        let acked = Instant::now();
        let got = delivered.recv().await.context("worker stopped")?;
        after_ack.push(got.saturating_duration_since(acked));
    }
    worker.abort();
    Ok(percentiles(after_ack))
}

/// `clients` producers, each with its own connection from `connect`, create
/// tasks for `run_for`; returns creates/s.
pub async fn create_throughput(
    connect: impl Fn() -> anyhow::Result<Api>,
    clients: usize,
    run_for: Duration,
) -> anyhow::Result<f64> {
    let mut apis = Vec::new();
    for _ in 0..clients {
        let api = connect()?;
        api.get("/healthz").await?; // connect and handshake before the clock starts
        apis.push(api);
    }
    let total = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + run_for;
    let mut joins = Vec::new();
    for (c, api) in apis.into_iter().enumerate() {
        let total = total.clone();
        joins.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                if api.post("/api/v1/tasks", &json!({"kind": "echo", "input": {"c": c, "n": n}})).await.is_ok() {
                    total.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for j in joins {
        j.await?;
    }
    Ok(total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

pub async fn idle_polls(app: &Appliance, api: &Api, count: usize) -> anyhow::Result<Value> {
    let workers = enroll_workers(app, api, count).await?;
    let before = app.rss_kib()?;
    let mut polls = Vec::with_capacity(count);
    for w in workers {
        polls.push(tokio::spawn(async move { w.poll(1, Duration::from_secs(30)).await }));
    }
    let wait_start = Instant::now();
    let mut parked = 0;
    while wait_start.elapsed() < Duration::from_secs(25) {
        parked = api.parked_polls().await?;
        if parked as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = app.rss_kib()?;
    polls.iter().for_each(|p| p.abort());
    let kib_per_poll = (after.saturating_sub(before)) as f64 / parked.max(1) as f64;
    Ok(json!({"parked": parked, "rss_before_kib": before, "rss_after_kib": after, "kib_per_poll": kib_per_poll}))
}
