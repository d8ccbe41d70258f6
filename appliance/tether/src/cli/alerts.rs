//! `tether alerts`: what needs a person, newest first, over the API.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;

use super::client::ApiClient;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = ApiClient::from_env(Duration::from_secs(30))?;
    let alerts = client.call(Method::GET, &format!("/api/v1/alerts?limit={}", args.limit), None, &[]).await?;
    if args.json {
        super::print_json(&alerts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let alerts = alerts.as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("no alerts");
    }
    for a in alerts {
        let details: Vec<String> = a["details"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "subject")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!(
            "{}  {:<16} {:<40} {}",
            a["raised_at"].as_str().unwrap_or_default(),
            a["kind"].as_str().unwrap_or_default(),
            a["subject"].as_str().unwrap_or_default(),
            details.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
