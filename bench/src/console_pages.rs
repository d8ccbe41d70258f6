//! (j) The console's pages: each page's API calls, timed on an appliance
//! holding `2 × queued` tasks (half finished through 4 workers, half
//! queued for a label no worker has) and the given workers, alternated with
//! the floor of an HTTPS request on the same connection (`/healthz`).

use std::time::Instant;

use serde_json::{Value, json};
use tether::worker::client::BrokerClient;

use crate::appliance::Api;
use crate::{broker, median};

/// Each page and the calls it makes for its data.
const PAGES: [(&str, &[&str]); 5] = [
    ("dashboard", &["/api/v1/system/status", "/api/v1/alerts?limit=5"]),
    ("tasks", &["/api/v1/tasks?limit=50"]),
    ("workers", &["/api/v1/workers"]),
    ("audit", &["/api/v1/audit/records?limit=100", "/api/v1/audit/sinks"]),
    ("queued tasks (filter)", &["/api/v1/tasks?limit=50&state=queued"]),
];

/// Fills the store, then times `rounds` rounds; answers the table's rows
/// and the report's JSON.
pub async fn measure(
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
    Ok((rows, Value::Object(measured)))
}
