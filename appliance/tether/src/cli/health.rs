//! `tether health`: whether the appliance on this machine came up — its
//! status file says it is ready, and its own `/healthz` answers over TLS
//! with a status that is not degraded. In setup mode the TLS is pinned to
//! the self-signed certificate the status file names; serving, it trusts
//! the appliance CA in the data directory (the console's certificate does
//! not carry the CA in its chain, so the status file's CA fingerprint
//! cannot be pinned on its own). The firmware image's
//! `tether-health.service` runs it before `boot-complete.target`: a slot on
//! trial is kept only if it passes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

use super::client::ApiClient;
use tether_base::tls::Trust;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The status file `tether serve --status-file` keeps.
    #[arg(long, value_name = "FILE", default_value = "/run/tether/status.json")]
    status_file: PathBuf,
    /// The appliance's data directory (its CA, ca.pem, once set up).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/tether")]
    data_dir: PathBuf,
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
    let ca_file = args.data_dir.join("ca.pem");
    let ca_pem;
    let (trust, what) = if field("mode")? == "setup" {
        (Trust::Certificate(field("certificate_fingerprint")?), "setup mode")
    } else {
        ca_pem = std::fs::read_to_string(&ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
        (Trust::Ca(&ca_pem), "serving")
    };
    let api = ApiClient::pinned(&format!("https://{at}"), trust, Duration::from_secs(args.timeout))?;
    let health = api.call(Method::GET, "/healthz", None, &[]).await.context("/healthz did not answer")?;
    let condition = health["status"].as_str().unwrap_or_default();
    if !HEALTHY.contains(&condition) {
        bail!("the appliance answers but is not healthy: /healthz says {health}");
    }
    println!("healthy: {what} at https://{at}, /healthz says {condition}");
    Ok(ExitCode::SUCCESS)
}
