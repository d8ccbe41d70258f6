//! `tether worker`: the worker agent.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::sync::watch;

use crate::worker::config::RawWorkerConfig;
use crate::worker::{self, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The broker's worker gateway, e.g. https://tether.local:9443.
    #[arg(long, env = "TETHER_BROKER")]
    broker: String,
    /// Single-use enrollment token (needed only the first time).
    #[arg(long, env = "TETHER_ENROLL_TOKEN")]
    enroll_token: Option<String>,
    /// The appliance CA certificate (needed only the first time).
    #[arg(long, env = "TETHER_CA_FILE")]
    ca_file: Option<PathBuf>,
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

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
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
        broker: args.broker,
        enroll_token: args.enroll_token,
        ca_file: args.ca_file,
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
