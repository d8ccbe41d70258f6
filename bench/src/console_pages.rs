//! (j) The console's pages: each page's API calls, timed on an appliance
//! holding `2 × queued` tasks (half finished through 4 workers, half
//! queued for a label no worker has) and the given workers, alternated with
//! the floor of an HTTPS request on the same connection (`/healthz`); then
//! the live dashboard: its first overview event, and the appliance's CPU
//! per overview with many dashboards open, against one `/healthz`'s.

use std::time::Instant;

use serde_json::{Value, json};
use tether::worker::client::BrokerClient;

use crate::appliance::{Api, Appliance};
use crate::{broker, median};

/// Each page and the calls it makes for its data.
const PAGES: [(&str, &[&str]); 5] = [
    ("dashboard", &["/api/v1/system/status", "/api/v1/alerts?limit=5"]),
    ("tasks", &["/api/v1/tasks?limit=50"]),
    ("workers", &["/api/v1/workers"]),
    ("audit", &["/api/v1/audit/records?limit=100", "/api/v1/audit/sinks"]),
    ("queued tasks (filter)", &["/api/v1/tasks?limit=50&state=queued"]),
];

/// Live dashboards held open at once while the appliance's CPU is read.
const VIEWERS: usize = 20;
/// Overview events each of them reads meanwhile (one per 2 s tick).
const TICKS: usize = 5;
/// `/healthz` requests whose CPU is the yardstick for an overview's.
const HEALTHZ_FOR_CPU: usize = 2000;

/// Fills the store, then times `rounds` rounds; answers the table's rows
/// and the report's JSON.
pub async fn measure(
    app: &Appliance,
    workers: Vec<BrokerClient>,
    api: &Api,
    queued: usize,
    rounds: usize,
) -> anyhow::Result<(Vec<String>, Value)> {
    let enrolled = workers.len();
    broker::lifecycle(workers.into_iter().take(4).collect(), api, queued, 16).await?;
    for i in 0..queued {
        api.post("/api/v1/tasks", &json!({"kind": "queued", "input": {"i": i}, "labels": ["nobody-has-this"]})).await?;
    }
    let status = api.get("/api/v1/system/status").await?;
    anyhow::ensure!(status["workers"].as_u64() == Some(enrolled as u64), "{enrolled} workers enrolled: {status}");
    let mut floor = Vec::new();
    let mut timings: Vec<Vec<f64>> = vec![Vec::new(); PAGES.len()];
    for _ in 0..rounds {
        let start = Instant::now();
        api.get("/healthz").await?;
        floor.push(start.elapsed().as_secs_f64() * 1000.0);
        for (i, (_, calls)) in PAGES.iter().enumerate() {
            let start = Instant::now();
            for call in calls.iter() {
                api.get(call).await?;
            }
            timings[i].push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let floor = median(&floor);
    let (mut rows, mut measured) = (Vec::new(), serde_json::Map::new());
    for ((page, calls), times) in PAGES.iter().zip(&timings) {
        let ms = median(times);
        rows.push(format!(
            "| (j) the {page} page's data ({} call{}), {enrolled} workers, {} tasks, median ms | {ms:.1} | GET /healthz {floor:.1} ms | {:.1}× | ≤ 100 ms |",
            calls.len(),
            if calls.len() == 1 { "" } else { "s" },
            2 * queued,
            ms / floor
        ));
        measured.insert((*page).into(), json!({"median_ms": ms, "ms": times}));
    }
    measured.insert("healthz_median_ms".into(), json!(floor));

    // The live dashboard: the first overview after opening the stream, and
    // what each overview costs the appliance in CPU with many viewers.
    let mut firsts = Vec::new();
    for _ in 0..rounds {
        firsts.push(api.read_events("/api/v1/events", "overview", 1).await?.as_secs_f64() * 1000.0);
    }
    let first = median(&firsts);
    let before = app.cpu_seconds()?;
    for _ in 0..HEALTHZ_FOR_CPU {
        api.get("/healthz").await?;
    }
    let healthz_cpu_ms = (app.cpu_seconds()? - before) * 1000.0 / HEALTHZ_FOR_CPU as f64;
    let before = app.cpu_seconds()?;
    let viewers = (0..VIEWERS).map(|_| {
        let api = api.clone();
        tokio::spawn(async move { api.read_events("/api/v1/events", "overview", TICKS).await })
    });
    for viewer in futures_util::future::join_all(viewers).await {
        viewer??;
    }
    let overview_cpu_ms = (app.cpu_seconds()? - before) * 1000.0 / (VIEWERS * TICKS) as f64;
    rows.push(format!(
        "| (j) the live dashboard's first overview after opening GET /api/v1/events, {enrolled} workers, {} tasks, median ms | {first:.1} | GET /healthz {floor:.1} ms | {:.1}× | ≤ 100 ms |",
        2 * queued,
        first / floor
    ));
    rows.push(format!(
        "| (j) appliance CPU per overview event, {VIEWERS} dashboards open for {TICKS} ticks, ms | {overview_cpu_ms:.2} | one GET /healthz {healthz_cpu_ms:.3} ms | {:.1}× | one core serves ≥ 1,000 dashboards (≤ 2 ms per 2 s tick) |",
        overview_cpu_ms / healthz_cpu_ms
    ));
    measured.insert(
        "live_overview".into(),
        json!({"first_overview_median_ms": first, "first_overview_ms": firsts, "viewers": VIEWERS, "ticks": TICKS,
               "cpu_ms_per_overview": overview_cpu_ms, "cpu_ms_per_healthz": healthz_cpu_ms}),
    );
    Ok((rows, Value::Object(measured)))
}
