//! `tether token create|enroll`.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::client::ApiClient;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an API token (admin). The secret is shown once.
    Create {
        /// admin, security_officer, auditor, developer, viewer or worker.
        #[arg(long)]
        role: String,
        /// Whom the token acts for; tasks it creates belong to this name.
        #[arg(long)]
        name: String,
        /// Lifetime, like 90d (the default) or 12h.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create a single-use worker enrollment token (admin).
    Enroll {
        /// Fix the enrolling worker's labels (comma separated).
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        /// Lifetime, like 15m (the default).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let client = ApiClient::from_env(Duration::from_secs(30))?;
    let (path, body, json_out) = match cmd {
        Command::Create { role, name, ttl, json } => {
            ("/api/v1/tokens", json!({"role": role, "name": name, "ttl": ttl}), json)
        }
        Command::Enroll { labels, ttl, json } => {
            ("/api/v1/workers/enrollment-tokens", json!({"labels": labels, "ttl": ttl}), json)
        }
    };
    let created = client.call(Method::POST, path, Some(&body), &[]).await?;
    if json_out {
        super::print_json(&created)?;
    } else {
        println!("{}", created["token"].as_str().unwrap_or_default());
        eprintln!("(expires {}; shown once)", created["expires_at"].as_str().unwrap_or("never"));
        if let Some(join) = created["join"].as_str() {
            eprintln!("on the worker host: tether worker --join '{join}'");
        }
    }
    Ok(ExitCode::SUCCESS)
}
