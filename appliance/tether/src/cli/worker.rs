//! `tether worker`: the worker agent, and `tether worker revoke` to manage one.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::sync::watch;

use crate::worker::config::RawWorkerConfig;
use crate::worker::{self, Options};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(flatten)]
    pub log: super::logging::LogArgs,
    /// Manage enrolled workers over the API instead of running one
    /// (uses TETHER_URL, TETHER_TOKEN, TETHER_CA_FILE).
    #[command(subcommand)]
    manage: Option<Manage>,
    /// Everything needed to enroll, in one string from the console or
    /// `tether token enroll`: tether://HOST:PORT?token=…&ca=sha256:…
    /// The broker must prove its CA matches the pin before the token is sent.
    #[arg(long, env = "TETHER_JOIN", conflicts_with_all = ["broker", "enroll_token", "ca_pin"])]
    join: Option<String>,
    /// The broker's worker gateway, e.g. https://tether.local:9443 (needed
    /// only to enroll: an enrolled worker keeps it in --state-dir).
    #[arg(long, env = "TETHER_BROKER")]
    broker: Option<String>,
    /// Single-use enrollment token (needed only the first time).
    #[arg(long, env = "TETHER_ENROLL_TOKEN")]
    enroll_token: Option<String>,
    /// The appliance CA certificate (needed only the first time).
    #[arg(long, env = "TETHER_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Instead of (or to check) --ca-file: the CA's fingerprint, sha256:….
    #[arg(long, env = "TETHER_CA_PIN")]
    ca_pin: Option<String>,
    /// Where the worker keeps its key, certificate and identity.
    #[arg(long, env = "TETHER_STATE_DIR", default_value = "./tether-worker")]
    state_dir: PathBuf,
    /// Labels to request at enrollment (comma separated).
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// How many tasks to run at once.
    #[arg(long)]
    concurrency: Option<usize>,
    /// worker.toml: handlers and commands this worker allows.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print one JSON event per line on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Manage {
    /// Revoke a worker (admin or security officer): its certificates are
    /// refused from now on, its open connections close, its tasks go back
    /// in line. It must enroll again, with a new token, to return.
    Revoke {
        /// The worker's id (see `GET /api/v1/workers`).
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(manage) = args.manage {
        return run_manage(manage).await;
    }
    let (broker, enroll_token, ca_pin) = match &args.join {
        Some(join) => {
            let join = worker::Join::parse(join)?;
            (Some(join.broker), Some(join.token), Some(join.ca_pin))
        }
        None => (args.broker, args.enroll_token, args.ca_pin.map(|pin| worker::parse_pin(&pin)).transpose()?),
    };
    let mut raw = match &args.config {
        Some(path) => RawWorkerConfig::from_file(path)?,
        None => RawWorkerConfig::default(),
    };
    if args.labels.is_some() {
        raw.labels = args.labels;
    }
    if args.concurrency.is_some() {
        raw.concurrency = args.concurrency;
    }
    let opts = Options {
        broker,
        enroll_token,
        ca_file: args.ca_file,
        ca_pin,
        state_dir: args.state_dir,
        config: raw.validate()?,
        json_events: args.json,
    };
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    worker::run(opts, stop).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_manage(manage: Manage) -> anyhow::Result<ExitCode> {
    let client = super::client::ApiClient::from_env(std::time::Duration::from_secs(30))?;
    match manage {
        Manage::Revoke { id, json } => {
            let path = format!("/api/v1/workers/{id}/revoke");
            let revoked = client.call(reqwest::Method::POST, &path, Some(&serde_json::json!({})), &[]).await?;
            if json {
                super::print_json(&revoked)?;
            } else {
                let serials = revoked["serials"].as_array().map_or(0, Vec::len);
                println!(
                    "revoked worker {id}: {serials} certificate(s) refused from now on, {} task(s) released",
                    revoked["tasks_released"]
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
