//! (h) The LLM gateway against LiteLLM's proxy, in one run, both in front
//! of the same fake vLLM server (`tests/e2e/fake_llm.rs`, the one
//! the e2e tests use, run here as a process of its own), and the fake
//! called directly, which gives the latency each gateway adds.
//!
//! Each gateway runs alone on CPU 1 (`taskset`); the fake and the load
//! generator share CPU 0. Measured per gateway: requests/s and latency at
//! concurrency 1, 16 and 64 (non-streamed chat completions); time to first
//! token of a streamed chat (to the first event carrying text); RSS idle
//! after start and at its peak under load (VmHWM); start-up time (spawn to
//! the first answered `GET /v1/models`). Tether runs with an `unrestricted`
//! key (no prompt added) and its full audit: one durable record per request.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::appliance::Reaped;
use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::appliance::Appliance;

const MODEL: &str = "bench-model";
const LITELLM_KEY: &str = "sk-bench-master";
const GATEWAY_CPU: &str = "1";
const LOAD_CPU: &str = "0";
pub const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// One gateway (or the fake itself) as the load generator sees it.
struct Target {
    name: &'static str,
    /// Base URL ending before `/v1`.
    base: String,
    key: String,
    pid: Option<u32>,
}

/// What one target measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Per concurrency: requests/s, p50 ms, p99 ms.
    pub load: Vec<(usize, f64, f64, f64)>,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub idle_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub startup_s: f64,
}

impl Figures {
    pub fn json(&self) -> Value {
        json!({
            "load": self.load.iter().map(|(c, rps, p50, p99)| json!({"concurrency": c, "rps": rps, "p50_ms": p50, "p99_ms": p99})).collect::<Vec<_>>(),
            "ttft_p50_ms": self.ttft_p50_ms, "ttft_p99_ms": self.ttft_p99_ms,
            "idle_rss_kib": self.idle_rss_kib, "peak_rss_kib": self.peak_rss_kib, "startup_s": self.startup_s,
        })
    }
}

/// The fake model server, in its own process on the load generator's CPU.
pub struct FakeServer {
    _process: Reaped,
    pub url: String,
}

impl FakeServer {
    pub fn start() -> anyhow::Result<FakeServer> {
        let me = std::env::current_exe()?;
        let mut child = Command::new("taskset")
            .args(["-c", LOAD_CPU])
            .arg(me)
            .arg("--fake-llm")
            .stdout(Stdio::piped())
            .spawn()
            .context("taskset (util-linux) runs the fake model server")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().context("stdout")?), &mut line)?;
        Ok(FakeServer { _process: Reaped(child), url: line.trim().to_owned() })
    }
}

/// Runs the fake model server until killed (the `--fake-llm` mode).
pub fn serve_fake() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async {
        let fake = crate::fake_llm::FakeLlm::start().await;
        println!("{}", fake.url());
        // The fake keeps what it received, for tests; a benchmark sends
        // millions of requests, so it forgets them as they come.
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut seen = fake.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.requests.clear();
            seen.paths.clear();
            seen.authorizations.clear();
        }
    })
}

/// Pins this process (all its threads) to the load generator's CPU.
fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("taskset -p failed");
    }
    Ok(())
}

fn rss_of(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| field.to_owned())?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn client(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    let config = tether_base::tls::client(ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN)?;
    Ok(tether_base::tls::https_client(config, Duration::from_secs(60))?)
}

fn chat_body(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "max_tokens": 16,
           "messages": [{"role": "user", "content": "say hello to the site"}]})
}

/// Polls `GET /v1/models` until it answers 200; the time since `since`.
async fn ready(http: &reqwest::Client, target: &Target, since: Instant) -> anyhow::Result<f64> {
    let deadline = since + Duration::from_secs(120);
    loop {
        let answer = http.get(format!("{}/v1/models", target.base)).bearer_auth(&target.key).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Ok(since.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!("{} did not become ready in 120 s", target.name);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `concurrency` clients send chats back to back for `secs` (after a
/// warm-up): requests/s and latency p50/p99 in ms.
async fn load(
    http: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    secs: f64,
) -> anyhow::Result<(f64, f64, f64)> {
    let url = Arc::new(format!("{}/v1/chat/completions", target.base));
    let body = Arc::new(serde_json::to_vec(&chat_body(false))?);
    let one = |http: reqwest::Client, url: Arc<String>, body: Arc<Vec<u8>>, key: String| async move {
        let started = Instant::now();
        let response = http
            .post(url.as_str())
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await?;
        let ok = response.status().is_success();
        let _ = response.bytes().await?;
        anyhow::ensure!(ok, "a request failed");
        Ok::<Duration, anyhow::Error>(started.elapsed())
    };
    // Warm-up: connections made, caches filled.
    let warm_until = Instant::now() + Duration::from_millis(500);
    let measure_until = warm_until + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, body, key) = (http.clone(), url.clone(), body.clone(), target.key.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= measure_until {
                    break;
                }
                let took = one(http.clone(), url.clone(), body.clone(), key.clone()).await?;
                if sent >= warm_until {
                    latencies.push(took);
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let rps = all.len() as f64 / secs;
    all.sort();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    Ok((rps, ms(at(0.50)), ms(at(0.99))))
}

/// Time to first token of a streamed chat, over `samples` sequential requests: p50, p99 ms.
async fn time_to_first_token(http: &reqwest::Client, target: &Target, samples: usize) -> anyhow::Result<(f64, f64)> {
    let body = chat_body(true);
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + 20 {
        let started = Instant::now();
        let mut response = http
            .post(format!("{}/v1/chat/completions", target.base))
            .bearer_auth(&target.key)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "{}: streamed chat failed: {}", target.name, response.status());
        let mut seen = Vec::new();
        let mut first = None;
        while let Some(chunk) = response.chunk().await? {
            seen.extend_from_slice(&chunk);
            // The fake's first word; events before it carry only the role.
            if first.is_none() && seen.windows(5).any(|w| w == b"echo:") {
                first = Some(started.elapsed());
            }
        }
        if i >= 20 {
            times.push(first.context("no text in the stream")?);
        }
    }
    times.sort();
    let ms = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1000.0;
    Ok((ms(0.50), ms(0.99)))
}

/// Everything for one target already running.
async fn figures(
    http: &reqwest::Client,
    target: &Target,
    secs: f64,
    samples: usize,
    startup_s: f64,
) -> anyhow::Result<Figures> {
    let mut f = Figures { startup_s, ..Figures::default() };
    if let Some(pid) = target.pid {
        tokio::time::sleep(Duration::from_secs(1)).await;
        f.idle_rss_kib = rss_of(pid, "VmRSS:")?;
    }
    for c in CONCURRENCY {
        eprintln!("(h) {}: concurrency {c}…", target.name);
        let (rps, p50, p99) = load(http, target, c, secs).await?;
        f.load.push((c, rps, p50, p99));
    }
    eprintln!("(h) {}: time to first token…", target.name);
    (f.ttft_p50_ms, f.ttft_p99_ms) = time_to_first_token(http, target, samples).await?;
    if let Some(pid) = target.pid {
        f.peak_rss_kib = rss_of(pid, "VmHWM:")?;
    }
    Ok(f)
}

/// LiteLLM's proxy from `venv`, one worker, on the gateway CPU.
struct LiteLlm {
    child: Reaped,
    _config: tempfile::NamedTempFile,
}

fn start_litellm(venv: &Path, upstream: &str, port: u16) -> anyhow::Result<LiteLlm> {
    let config = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::fs::write(
        config.path(),
        format!(
            "model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n      \
             api_base: {upstream}/v1\n      api_key: none\ngeneral_settings:\n  master_key: {LITELLM_KEY}\n\
             litellm_settings:\n  telemetry: false\n"
        ),
    )?;
    let child = Command::new("taskset")
        .args(["-c", GATEWAY_CPU])
        .arg(venv.join("bin/litellm"))
        .args(["--config"])
        .arg(config.path())
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", "1"])
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", venv.join("bin/litellm").display()))?;
    Ok(LiteLlm { child: Reaped(child), _config: config })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The whole measurement: the fake direct, Tether, LiteLLM.
pub async fn measure(
    tether: &Path,
    dir: &Path,
    venv: &Path,
    secs: f64,
    samples: usize,
) -> anyhow::Result<Vec<(&'static str, Figures)>> {
    let fake = FakeServer::start()?;
    pin_self(LOAD_CPU)?;
    let mut out = Vec::new();

    // Tether: initialised and configured once (the upstream, a key), then
    // started again as a site would, timed from spawn to an answered
    // `GET /v1/models`.
    let home = dir.join("h");
    let app = Appliance::start_pinned(tether, &home, Some(GATEWAY_CPU))?;
    let api = app.api()?;
    api.put("/api/v1/llm/upstreams/fake", &json!({"kind": "openai", "url": fake.url, "models": [MODEL]})).await?;
    let key = api.post("/api/v1/llm/keys", &json!({"owner": "admin", "enforcement": "unrestricted"})).await?;
    let key = key["key"].as_str().context("key")?.to_owned();
    let admin_token = app.admin_token.clone();
    drop(app);
    let started = Instant::now();
    let app = Appliance::serve(tether, &home, &admin_token, Some(GATEWAY_CPU))?;
    let http = client(&app.ca_pem)?;
    let target = Target { name: "tether", base: app.console.clone(), key, pid: Some(app.pid()) };
    let startup = ready(&http, &target, started).await?;
    out.push(("tether", figures(&http, &target, secs, samples, startup).await?));
    drop(app);

    let direct = Target { name: "direct", base: fake.url.clone(), key: "none".into(), pid: None };
    out.push(("direct", figures(&http, &direct, secs, samples, 0.0).await?));

    let port = free_port()?;
    let started = Instant::now();
    let litellm = start_litellm(venv, &fake.url, port)?;
    let target = Target {
        name: "litellm",
        base: format!("http://127.0.0.1:{port}"),
        key: LITELLM_KEY.into(),
        pid: Some(litellm.child.id()),
    };
    let startup = ready(&http, &target, started).await?;
    // taskset execs litellm, so the pid is the proxy's own.
    out.push(("litellm", figures(&http, &target, secs, samples, startup).await?));
    drop(litellm);
    pin_self("0-1023")?;
    Ok(out)
}

/// Where `bench/run.sh` puts LiteLLM.
pub fn default_venv() -> PathBuf {
    PathBuf::from("target/litellm-venv")
}
