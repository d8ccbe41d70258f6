//! `tether-bench`: measures the broker on this machine, in one run, beside
//! the ceilings it should be judged against:
//!
//! - (a) durable lifecycle throughput (create → claim → complete, all over
//!   TLS/mTLS) with 1 producer and 4 workers, against a Redis reliable queue
//!   (LPUSH, BLMOVE, LREM; `appendfsync always`) with 1 producer and 4
//!   consumers, and against the bare brokers (`bare_broker.rs`: the same
//!   contract and stack with nothing but the transport, then with a sync per
//!   change) and, with one request in flight, the bound that the transport
//!   and one fdatasync per create put on any durable broker;
//! - (b) p50/p99 from create-acknowledged to delivery to an already-waiting
//!   worker, against Redis enqueue-acknowledged to BLMOVE returning;
//! - (c) create throughput with 64 concurrent clients, against the rate of
//!   single-insert durable redb commits (what one fsync per request would
//!   allow) and the bare brokers, with the clients' own CPU time;
//! - (d) the appliance's memory per idle parked mTLS long-poll;
//! - (e) with `--baseline PATH` (another build): lifecycle throughput of this
//!   build against the baseline, alternating runs of each — against a build
//!   from before the vault, the cost of encryption at rest;
//! - (f) server CPU per new mTLS connection to the worker gateway, against a
//!   bare rustls mTLS server on the same certificates (`handshakes.rs`);
//! - (g) a reconnect storm: 5,000 enrolled workers open new mTLS connections
//!   and poll at once, against the same storm on the bare server;
//! - (h) the LLM gateway against LiteLLM's proxy in front of the same fake
//!   model server, and the fake called directly (`gateway.rs`);
//! - (i) `GET /api/v1/security/checks` on an appliance whose audit chain a
//!   few thousand task lifecycles filled — the first after start (a walk of
//!   the whole chain) and later ones (what was appended since) — against
//!   the chain's full verification;
//! - (j) the console's pages and the live dashboard (`console_pages.rs`);
//! - (k) the release bundle: verifying it against `sha256sum` of it, and an
//!   install and an upgrade into scratch roots against the release's own
//!   start (`shipping.rs`).
//!
//! Usage: see `bench/run.sh`, which builds the release binary and installs
//! redis-server first. Results go to stdout as a table and as JSON.

mod appliance;
mod bare_broker;
mod broker;
mod console_pages;
mod disk;
// The e2e tests' fake model server, the same code: test support, which
// panics (unwraps) on what would be a broken test bench.
#[path = "../../tests/e2e/fake_llm.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod fake_llm;
mod gateway;
mod handshakes;
mod redis;
mod shipping;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use appliance::{Api, Appliance, Identity};
use tether::worker::client::BrokerClient;

struct Args {
    tether: PathBuf,
    work_dir: PathBuf,
    tasks: usize,
    samples: usize,
    idle: usize,
    create_secs: u64,
    /// Which measurements to run (a, b, c, d, e, redis); all by default.
    only: Vec<String>,
    /// A build without encryption at rest, for (e).
    baseline: Option<PathBuf>,
    /// Rounds of (e) and (f), alternating the two builds or servers.
    rounds: usize,
    /// New connections per round of (f).
    handshakes: usize,
    /// Seconds of load per concurrency in (h).
    llm_secs: f64,
    /// Streamed requests timed for (h)'s time to first token.
    ttft_samples: usize,
    /// The virtualenv LiteLLM's proxy is installed in, for (h).
    litellm_venv: PathBuf,
}

impl Args {
    fn wants(&self, m: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == m)
    }
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        tether: PathBuf::from("target/release/tether"),
        work_dir: PathBuf::from("."),
        tasks: 5000,
        samples: 1000,
        idle: 5000,
        create_secs: 5,
        only: Vec::new(),
        baseline: None,
        rounds: 3,
        handshakes: 3000,
        llm_secs: 3.0,
        ttft_samples: 300,
        litellm_venv: gateway::default_venv(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tether" => args.tether = value()?.into(),
            "--work-dir" => args.work_dir = value()?.into(),
            "--tasks" => args.tasks = value()?.parse()?,
            "--samples" => args.samples = value()?.parse()?,
            "--idle" => args.idle = value()?.parse()?,
            "--create-secs" => args.create_secs = value()?.parse()?,
            "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
            "--baseline" => args.baseline = Some(value()?.into()),
            "--rounds" => args.rounds = value()?.parse()?,
            "--handshakes" => args.handshakes = value()?.parse()?,
            "--llm-secs" => args.llm_secs = value()?.parse()?,
            "--ttft-samples" => args.ttft_samples = value()?.parse()?,
            "--litellm-venv" => args.litellm_venv = value()?.into(),
            other => bail!(
                "unknown flag {other}; flags: --tether PATH --work-dir DIR --tasks N --samples N --idle N --create-secs S --only a,b,c,d,e,f,g,h,i,j,k --baseline PATH --rounds N --handshakes N --llm-secs S --ttft-samples N --litellm-venv DIR"
            ),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let mut raw = std::env::args().skip(1);
    match raw.next().as_deref() {
        Some("--bare-mtls-server") => {
            let data = raw.next().context("--bare-mtls-server needs the appliance's data directory")?;
            return handshakes::serve_bare(std::path::Path::new(&data));
        }
        Some("--fake-llm") => return gateway::serve_fake(),
        Some("--bare-broker") => {
            let data = raw.next().context("--bare-broker needs the appliance's data directory")?;
            return bare_broker::serve(std::path::Path::new(&data), raw.next().as_deref() == Some("--durable"));
        }
        _ => {}
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    // On the same disk as the appliance's data: fsync costs are what matter.
    let dir = tempfile::tempdir_in(&args.work_dir)?;
    let mut report = serde_json::Map::new();
    let mut rows: Vec<String> = Vec::new();
    // Each measurement gets a fresh appliance, so one's leftovers (a queue
    // of 50,000 tasks after (c), say) cannot flatter or spoil the next.
    let fresh_of = |tether: &std::path::Path, name: &str| -> anyhow::Result<(Appliance, Api)> {
        let app = Appliance::start(tether, &dir.path().join(name))?;
        let api = app.api()?;
        Ok((app, api))
    };
    let fresh = |name: &str| fresh_of(&args.tether, name);
    let redis_server = if args.wants("a") || args.wants("b") {
        Some(redis::Server::start(&dir.path().join("redis")).await?)
    } else {
        None
    };

    if args.wants("a") {
        for in_flight in [1, 16] {
            eprintln!("(a) lifecycle, 1 producer ({in_flight} in flight) / 4 workers, {} tasks…", args.tasks);
            let (app, api) = fresh(&format!("a{in_flight}"))?;
            let cpu = app.cpu_seconds()?;
            let ours = broker::lifecycle(enroll_workers(&app, &api, 4).await?, &api, args.tasks, in_flight).await?;
            let cpu = app.cpu_seconds()? - cpu;
            let port = redis_server.as_ref().map(|r| r.port).context("redis")?;
            let peer = redis::lifecycle(port, args.tasks, in_flight).await?;
            report.insert(
                format!("a_lifecycle_per_s_in_flight_{in_flight}"),
                json!({"tether": ours, "redis": peer, "tether_cpu_s": cpu}),
            );
            rows.push(format!(
                "| (a) lifecycle tasks/s, 1 producer ({in_flight} in flight) + 4 workers | {ours:.0} | Redis {peer:.0} | {:.2}× | ≥ 1.0× |",
                ours / peer
            ));
            // The ceilings: the same clients against a broker that is only
            // the stack (bare_broker.rs), on the appliance's certificates;
            // then the same broker syncing each change before answering.
            let identities = enroll_many(&app, &api, 4).await?;
            let mut transport_only = f64::NAN;
            for durable in [false, true] {
                let bare = bare_broker::BareBroker::start(&app.data, durable)?;
                let workers = clients_at(&bare.gateway, &app.ca_pem, &identities)?;
                let bare_api = Api::at(&bare.console, &app.ca_pem, "unused")?;
                let bare_cpu = bare.cpu_seconds()?;
                let ceiling = broker::lifecycle(workers, &bare_api, args.tasks, in_flight).await?;
                let bare_cpu = bare.cpu_seconds()? - bare_cpu;
                let name = bare_broker::name(durable);
                report.insert(
                    format!("a_lifecycle_per_s_in_flight_{in_flight}_{}", name.replace(' ', "_")),
                    json!({"per_s": ceiling, "cpu_s": bare_cpu}),
                );
                rows.push(format!(
                    "| (a) the same on the {name} | {ceiling:.0} | Redis {peer:.0} | {:.2}× (tether {:.2}× of it) | — |",
                    ceiling / peer,
                    ours / ceiling
                ));
                if !durable {
                    transport_only = ceiling;
                }
            }
            if in_flight == 1 {
                // One request at a time, a durable broker answers each create
                // only after a sync, and the next create is sent only after
                // that answer: no broker on this transport can take less than
                // the bare broker's time per task plus one sync.
                let sync = disk::fdatasync_latency(&dir.path().join("sync-probe"), 500)?;
                let bound = 1.0 / (1.0 / transport_only + sync.as_secs_f64());
                report.insert(
                    "a_bound_any_durable_broker_in_flight_1".into(),
                    json!({"per_s": bound, "fdatasync_ms": sync.as_secs_f64() * 1000.0}),
                );
                rows.push(format!(
                    "| (a) bound for any durable broker on this transport, 1 in flight: 1 / (bare time per task + one fdatasync, {:.3} ms) | {bound:.0} | Redis {peer:.0} | {:.2}× | — |",
                    sync.as_secs_f64() * 1000.0,
                    bound / peer
                ));
            }
        }
    }
    if args.wants("b") {
        eprintln!("(b) create-ack → delivery latency, {} samples…", args.samples);
        let (app, api) = fresh("b")?;
        let ours = broker::latency(&app, &api, args.samples).await?;
        let port = redis_server.as_ref().map(|r| r.port).context("redis")?;
        let peer = redis::latency(port, args.samples).await?;
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        rows.push(format!(
            "| (b) create-ack → delivery p50 / p99 ms | {:.3} / {:.3} | Redis {:.3} / {:.3} | p99 {:.2}× | p99 ≤ Redis |",
            f(&ours, "p50"),
            f(&ours, "p99"),
            f(&peer, "p50"),
            f(&peer, "p99"),
            f(&ours, "p99") / f(&peer, "p99")
        ));
        report.insert("b_latency_ms".into(), json!({"tether": ours, "redis": peer}));
    }
    drop(redis_server);
    if args.wants("c") {
        eprintln!("ceiling: single-insert durable redb commits…");
        let redb_rate = disk::redb_single_commits(&dir.path().join("ceiling.redb"), 500)?;
        eprintln!("(c) create throughput, 64 clients, {} s…", args.create_secs);
        let (app, api) = fresh("c")?;
        let before = api.get("/api/v1/system/status").await?["store"].clone();
        let (cpu, clients_cpu) = (app.cpu_seconds()?, own_cpu_seconds()?);
        let rate = broker::create_throughput(|| app.api(), 64, Duration::from_secs(args.create_secs)).await?;
        let (cpu, clients_cpu) = (app.cpu_seconds()? - cpu, own_cpu_seconds()? - clients_cpu);
        let after = api.get("/api/v1/system/status").await?["store"].clone();
        let delta = |k: &str| after[k].as_f64().unwrap_or(0.0) - before[k].as_f64().unwrap_or(0.0);
        let per_commit = delta("operations") / delta("commits").max(1.0);
        rows.push(format!(
            "| (c) creates/s, 64 clients | {rate:.0} ({per_commit:.1} per fsync) | redb single commits {redb_rate:.0}/s | {:.1}× | ≥ 10× |",
            rate / redb_rate
        ));
        report.insert(
            "c_creates_64_clients".into(),
            json!({"tether_per_s": rate, "redb_single_commit_per_s": redb_rate, "operations_per_commit": per_commit,
                   "tether_cpu_s": cpu, "clients_cpu_s": clients_cpu, "seconds": args.create_secs}),
        );
        for durable in [false, true] {
            let bare = bare_broker::BareBroker::start(&app.data, durable)?;
            let (bare_cpu, clients_cpu) = (bare.cpu_seconds()?, own_cpu_seconds()?);
            let connect = || Api::at(&bare.console, &app.ca_pem, "unused");
            let ceiling = broker::create_throughput(connect, 64, Duration::from_secs(args.create_secs)).await?;
            let (bare_cpu, clients_cpu) = (bare.cpu_seconds()? - bare_cpu, own_cpu_seconds()? - clients_cpu);
            let name = bare_broker::name(durable);
            report.insert(
                format!("c_creates_64_clients_{}", name.replace(' ', "_")),
                json!({"per_s": ceiling, "cpu_s": bare_cpu, "clients_cpu_s": clients_cpu}),
            );
            rows.push(format!(
                "| (c) the same on the {name} | {ceiling:.0} | redb single commits {redb_rate:.0}/s | {:.1}× (tether {:.2}× of it) | — |",
                ceiling / redb_rate,
                rate / ceiling
            ));
        }
    }
    if args.wants("d") {
        eprintln!("(d) {} idle parked mTLS polls…", args.idle);
        let (app, api) = fresh("d")?;
        let idle = broker::idle_polls(&app, &api, args.idle).await?;
        let kib = idle["kib_per_poll"].as_f64().unwrap_or(f64::NAN);
        rows.push(format!(
            "| (d) RSS per idle parked mTLS poll | {kib:.1} KiB ({} parked) | 32 KiB | {:.2}× | ≤ 1.0× |",
            idle["parked"],
            kib / 32.0
        ));
        report.insert("d_idle_polls".into(), idle);
    }

    if let Some(baseline) = args.baseline.as_ref().filter(|_| args.wants("e")) {
        // Against a build without the vault this is the cost of encryption
        // at rest (goal ≥ 0.9×); against any other, what the changes since cost.
        let encryption = !appliance::has_vault(baseline)? && appliance::has_vault(&args.tether)?;
        let (measure, goal) = if encryption {
            ("with encryption at rest, against without", "≥ 0.9×")
        } else {
            ("of this build, against the baseline build", "—")
        };
        for in_flight in [1, 16] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for round in 0..args.rounds {
                eprintln!("(e) round {round}: lifecycle {measure}, {in_flight} in flight…");
                let (app, api) = fresh_of(&args.tether, &format!("e{in_flight}-{round}-this"))?;
                ours.push(broker::lifecycle(enroll_workers(&app, &api, 4).await?, &api, args.tasks, in_flight).await?);
                drop(app);
                let (app, api) = fresh_of(baseline, &format!("e{in_flight}-{round}-baseline"))?;
                theirs
                    .push(broker::lifecycle(enroll_workers(&app, &api, 4).await?, &api, args.tasks, in_flight).await?);
            }
            let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| a / b).collect();
            let (m_ours, m_theirs, m_ratio) = (median(&ours), median(&theirs), median(&ratios));
            rows.push(format!(
                "| (e) lifecycle tasks/s {measure} ({in_flight} in flight) | {m_ours:.0} | {m_theirs:.0} | {m_ratio:.2}× ({}) | {goal} |",
                ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
            ));
            report.insert(
                format!("e_against_baseline_in_flight_{in_flight}"),
                json!({"this": ours, "baseline": theirs, "ratios": ratios, "encryption_only": encryption}),
            );
        }
    }

    if args.wants("f") {
        let (app, api) = fresh("f")?;
        let (per_conn, rounds) = handshake_cpu(&app, &api, args.handshakes, args.rounds).await?;
        let ratios: Vec<f64> = rounds.iter().map(|r| r[0] / r[1]).collect();
        let (ours, bare) = (median(&per_conn[0]), median(&per_conn[1]));
        rows.push(format!(
            "| (f) server CPU per new mTLS connection (handshake, admission, identity, GET /healthz) | {ours:.3} ms | bare rustls {bare:.3} ms | {:.2}× ({}) | ≤ 1.2× |",
            median(&ratios),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
        ));
        report.insert(
            "f_cpu_ms_per_mtls_connection".into(),
            json!({"tether": per_conn[0], "bare_rustls": per_conn[1], "ratios": ratios, "connections": args.handshakes}),
        );
    }
    if args.wants("g") {
        let (app, api) = fresh("g")?;
        let storm = reconnect_storm(&app, &api, args.idle).await?;
        let f = |who: &str, k: &str| storm[who][k].as_f64().unwrap_or(f64::NAN);
        rows.push(format!(
            "| (g) reconnect storm, {} workers at once: all answered in / p99 / server CPU per connection | {:.2} s / {:.0} ms / {:.3} ms ({} failed) | bare rustls {:.2} s / {:.0} ms / {:.3} ms | {:.2}× (wall) | — |",
            args.idle,
            f("tether", "seconds"),
            f("tether", "p99_ms"),
            f("tether", "cpu_ms_per_connection"),
            storm["tether"]["failed"],
            f("bare", "seconds"),
            f("bare", "p99_ms"),
            f("bare", "cpu_ms_per_connection"),
            f("tether", "seconds") / f("bare", "seconds"),
        ));
        report.insert("g_reconnect_storm".into(), storm);
    }

    if args.wants("h") {
        let measured =
            gateway::measure(&args.tether, dir.path(), &args.litellm_venv, args.llm_secs, args.ttft_samples).await?;
        let of = |name: &str| measured.iter().find(|(n, _)| *n == name).map(|(_, f)| f.clone()).unwrap_or_default();
        let (ours, direct, litellm) = (of("tether"), of("direct"), of("litellm"));
        for (i, c) in gateway::CONCURRENCY.iter().enumerate() {
            let (o, d, l) = (ours.load[i], direct.load[i], litellm.load[i]);
            rows.push(format!(
                "| (h) chat requests/s at concurrency {c} (added p50 / p99 ms over direct) | {:.0} (+{:.3} / +{:.3}) | LiteLLM {:.0} (+{:.3} / +{:.3}); direct {:.0} | {:.1}× | ≥ 50×; added p50 ≤ 0.3 ms |",
                o.1, o.2 - d.2, o.3 - d.3, l.1, l.2 - d.2, l.3 - d.3, d.1, o.1 / l.1
            ));
        }
        rows.push(format!(
            "| (h) streamed time to first token p50 (added over direct) | {:.3} ms (+{:.3}) | LiteLLM {:.3} ms (+{:.3}); direct {:.3} ms | {:.2}× | added ≤ 0.5 ms |",
            ours.ttft_p50_ms, ours.ttft_p50_ms - direct.ttft_p50_ms, litellm.ttft_p50_ms,
            litellm.ttft_p50_ms - direct.ttft_p50_ms, direct.ttft_p50_ms, ours.ttft_p50_ms / litellm.ttft_p50_ms
        ));
        rows.push(format!(
            "| (h) RSS idle / peak | {:.1} / {:.1} MiB | LiteLLM {:.1} / {:.1} MiB | {:.3}× (idle) | ≤ 0.1× |",
            ours.idle_rss_kib as f64 / 1024.0,
            ours.peak_rss_kib as f64 / 1024.0,
            litellm.idle_rss_kib as f64 / 1024.0,
            litellm.peak_rss_kib as f64 / 1024.0,
            ours.idle_rss_kib as f64 / litellm.idle_rss_kib as f64
        ));
        rows.push(format!(
            "| (h) start-up, spawn → first answered GET /v1/models | {:.3} s | LiteLLM {:.3} s | {:.3}× | ≤ 0.5 s |",
            ours.startup_s,
            litellm.startup_s,
            ours.startup_s / litellm.startup_s
        ));
        report.insert(
            "h_llm_gateway".into(),
            json!({"tether": ours.json(), "direct": direct.json(), "litellm": litellm.json()}),
        );
    }
    if args.wants("i") {
        eprintln!("(i) a full security check, after {} task lifecycles fill the audit chain…", args.tasks);
        let (app, api) = fresh("i")?;
        broker::lifecycle(enroll_workers(&app, &api, 4).await?, &api, args.tasks, 16).await?;
        let timed = |path: &'static str| {
            let api = api.clone();
            async move {
                let start = Instant::now();
                let answer = api.get(path).await?;
                anyhow::Ok((start.elapsed().as_secs_f64() * 1000.0, answer))
            }
        };
        // The first check after a start walks the whole audit chain; later
        // ones walk what was appended since the last walk. The chain's full
        // verification is what they are judged against (alternating, so
        // noise hits both).
        let (first, _) = timed("/api/v1/security/checks").await?;
        let (mut checks, mut verifies, mut records) = (Vec::new(), Vec::new(), 0);
        for _ in 0..args.rounds.max(1) * 5 {
            let (ms, verified) = timed("/api/v1/audit/verify").await?;
            verifies.push(ms);
            records = verified["records"].as_u64().unwrap_or(0);
            let (ms, graded) = timed("/api/v1/security/checks").await?;
            checks.push(ms);
            anyhow::ensure!(graded["checks"].as_array().is_some_and(|c| c.len() > 30), "no report: {graded}");
        }
        let (check, verify) = (median(&checks), median(&verifies));
        rows.push(format!(
            "| (i) a security check over HTTPS, {records} audit records: the first after start / later ones, median ms | {first:.1} / {check:.1} | the chain's full verification {verify:.1} ms | {:.2}× / {:.2}× | ≤ 1000 ms |",
            first / verify,
            check / verify
        ));
        report.insert(
            "i_security_check_ms".into(),
            json!({"records": records, "first_check_ms": first, "median_check_ms": check,
                   "median_verify_ms": verify, "check_ms": checks, "verify_ms": verifies}),
        );
    }

    if args.wants("j") {
        let queued = args.tasks;
        eprintln!("(j) the console's pages, after {queued} finished and {queued} queued tasks and 500 workers…");
        let (app, api) = fresh("j")?;
        let workers = enroll_workers(&app, &api, 500).await?;
        let (page_rows, measured) = console_pages::measure(&app, workers, &api, queued, args.rounds.max(1) * 7).await?;
        rows.extend(page_rows);
        report.insert("j_console_pages_ms".into(), measured);
    }

    if args.wants("k") {
        eprintln!("(k) the release bundle: verify, install, upgrade…");
        let (shipping_rows, measured) = shipping::measure(&args.tether, &args.work_dir, args.rounds)?;
        rows.extend(shipping_rows);
        report.insert("k_shipping_ms".into(), measured);
    }

    println!("\n| measure | tether | ceiling / peer | ratio | goal |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!("\n{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU time this bench process (the load generator) has used, in seconds.
fn own_cpu_seconds() -> anyhow::Result<f64> {
    appliance::cpu_seconds_of(std::process::id())
}

fn percentiles(mut v: Vec<Duration>) -> Value {
    if v.is_empty() {
        return json!({"samples": 0});
    }
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    json!({"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": at(1.0), "samples": v.len()})
}

/// Enrolls `count` workers at `app` and returns their mTLS clients.
async fn enroll_workers(app: &Appliance, api: &Api, count: usize) -> anyhow::Result<Vec<BrokerClient>> {
    clients_at(&app.gateway, &app.ca_pem, &enroll_many(app, api, count).await?)
}

/// mTLS clients of the worker gateway at `gateway`, one per identity.
fn clients_at(gateway: &str, ca_pem: &str, identities: &[Identity]) -> anyhow::Result<Vec<BrokerClient>> {
    let clients = identities.iter().map(|who| BrokerClient::mtls(gateway, ca_pem, &who.cert_pem, &who.key_pem));
    Ok(clients.collect::<Result<Vec<_>, _>>()?)
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
/// A poll that answers at once (`wait_s` 0), as a worker's first request after reconnecting.
static POLL_NOW: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = r#"{"max_tasks":1,"wait_s":0}"#;
    format!(
        "POST /worker/v1/poll HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// (f): server CPU per connection, the appliance's gateway and the bare
/// server alternately, `rounds` times. Returns per-connection milliseconds
/// for each ([tether, bare]) and each round's pair.
async fn handshake_cpu(
    app: &Appliance,
    api: &Api,
    count: usize,
    rounds: usize,
) -> anyhow::Result<([Vec<f64>; 2], Vec<[f64; 2]>)> {
    let who = appliance::enroll_identity(&app.gateway, &app.ca_pem, api).await?;
    let configs = [handshakes::client_config(&app.ca_pem, &who)?];
    let bare = handshakes::BareServer::start(&app.data)?;
    let gateway: std::net::SocketAddr = app.gateway.trim_start_matches("https://").parse()?;
    let mut per_conn = [Vec::new(), Vec::new()];
    let mut pairs = Vec::new();
    for round in 0..rounds {
        eprintln!("(f) round {round}: {count} new mTLS connections to the gateway, then to bare rustls…");
        let mut pair = [0.0; 2];
        for (i, addr) in [gateway, bare.addr].into_iter().enumerate() {
            let cpu = |i: usize| if i == 0 { app.cpu_seconds() } else { bare.cpu_seconds() };
            handshakes::connections(addr, &configs, HEALTHZ, 100, 4).await;
            let before = cpu(i)?;
            let (_, failed) = handshakes::connections(addr, &configs, HEALTHZ, count, 4).await;
            anyhow::ensure!(failed == 0, "{failed} connections failed");
            pair[i] = (cpu(i)? - before) * 1000.0 / count as f64;
            per_conn[i].push(pair[i]);
        }
        pairs.push(pair);
    }
    Ok((per_conn, pairs))
}

/// (g): `count` enrolled workers connect and poll at the same moment, to the
/// appliance and then to the bare server.
async fn reconnect_storm(app: &Appliance, api: &Api, count: usize) -> anyhow::Result<Value> {
    let identities = enroll_many(app, api, count).await?;
    let configs =
        identities.iter().map(|who| handshakes::client_config(&app.ca_pem, who)).collect::<anyhow::Result<Vec<_>>>()?;
    let bare = handshakes::BareServer::start(&app.data)?;
    let gateway: std::net::SocketAddr = app.gateway.trim_start_matches("https://").parse()?;
    let mut out = serde_json::Map::new();
    for (name, addr) in [("tether", gateway), ("bare", bare.addr)] {
        let cpu = || if name == "tether" { app.cpu_seconds() } else { bare.cpu_seconds() };
        let before = cpu()?;
        let start = Instant::now();
        let (times, failed) = handshakes::connections(addr, &configs, &POLL_NOW, count, count).await;
        let seconds = start.elapsed().as_secs_f64();
        let cpu_ms = (cpu()? - before) * 1000.0 / count as f64;
        let p = percentiles(times);
        eprintln!("    {name}: {seconds:.2} s, p99 {:.0} ms, {failed} failed", p["p99"].as_f64().unwrap_or(f64::NAN));
        out.insert(
            name.into(),
            json!({"seconds": seconds, "p50_ms": p["p50"], "p99_ms": p["p99"], "max_ms": p["max"],
                   "failed": failed, "cpu_ms_per_connection": cpu_ms}),
        );
    }
    Ok(Value::Object(out))
}

/// Enrolls `count` workers, 32 at a time, the way `tether worker` does.
async fn enroll_many(app: &Appliance, api: &Api, count: usize) -> anyhow::Result<Vec<Identity>> {
    let started = Instant::now();
    let mut identities = Vec::with_capacity(count);
    let mut batch = tokio::task::JoinSet::new();
    for _ in 0..count {
        if batch.len() >= 32
            && let Some(w) = batch.join_next().await
        {
            identities.push(w??);
        }
        let (gateway, ca, api) = (app.gateway.clone(), app.ca_pem.clone(), api.clone());
        batch.spawn(async move { appliance::enroll_identity(&gateway, &ca, &api).await });
    }
    while let Some(w) = batch.join_next().await {
        identities.push(w??);
    }
    eprintln!("    enrolled {count} workers in {:.1} s", started.elapsed().as_secs_f64());
    Ok(identities)
}
