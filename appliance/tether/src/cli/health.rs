//! `tether health`: whether the appliance on this machine came up — its
//! status file says it is ready, and its own `/healthz` answers over TLS
//! with a status that is not degraded. The TLS is pinned to the
//! certificate the status file says the console serves: setup mode's
//! self-signed one, then the appliance's own or a console certificate of
//! the site's (which the appliance CA did not issue), kept current through
//! renewals and replacements. The firmware image's `tether-health.service`
//! runs it before `boot-complete.target`: a slot on trial is kept only if
//! it passes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

use super::client::ApiClient;
use tether_api::app::supervisor::CONSOLE_CERTIFICATE;
use tether_base::tls::Trust;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The status file `tether serve --status-file` keeps.
    #[arg(long, value_name = "FILE", default_value = "/run/tether/status.json")]
    status_file: PathBuf,
    /// How long /healthz has to answer, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
}

/// The statuses of an appliance that came up (sealed waits for its officers).
const HEALTHY: [&str; 4] = ["setup", "sealed", "ok", "disk low"];

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(&args.status_file).with_context(|| {
        format!("the appliance is not running: it has written no status to {}", args.status_file.display())
    })?;
    let status: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not the appliance's status file", args.status_file.display()))?;
    let field = |key: &str| status[key].as_str().with_context(|| format!("the status file has no {key}"));
    let listen: SocketAddr = field("listen")?.parse().context("the status file's listen address")?;
    let at = if listen.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], listen.port())) } else { listen };
    let what = if field("mode")? == "setup" { "setup mode" } else { "serving" };
    let trust = Trust::Certificate(field(CONSOLE_CERTIFICATE)?);
    let api = ApiClient::pinned(&format!("https://{at}"), trust, Duration::from_secs(args.timeout))?;
    let health = api.call(Method::GET, "/healthz", None, &[]).await.context("/healthz did not answer")?;
    let condition = health["status"].as_str().unwrap_or_default();
    if !HEALTHY.contains(&condition) {
        bail!("the appliance answers but is not healthy: /healthz says {health}");
    }
    println!("healthy: {what} at https://{at}, /healthz says {condition}");
    Ok(ExitCode::SUCCESS)
}
