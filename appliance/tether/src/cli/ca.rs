//! `tether ca status|rotate STEP`: a CA rotation, step by step, over the
//! API (TETHER_URL, TETHER_TOKEN as admin or security officer, TETHER_CA_FILE).

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::ApiClient;

const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Where a CA rotation stands: its phase, the CAs, and each worker's progress.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Take one step of a CA rotation.
    #[command(after_help = "Steps, in order: add (a new CA, trusted beside the current one; workers receive both), \
        issue (new certificates come from the new CA; workers renew at once), retire (the old CA is no longer \
        trusted; refused while an active worker still depends on it). rollback undoes the last step until \
        retirement. Every step is audited.")]
    Rotate {
        #[arg(value_parser = ["add", "issue", "retire", "rollback"])]
        step: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let api = ApiClient::from_env(TIMEOUT)?;
    let (status, json) = match cmd {
        Command::Status { json } => (api.call(Method::GET, "/api/v1/pki/ca/rotation", None, &[]).await?, json),
        Command::Rotate { step, json } => {
            let path = format!("/api/v1/pki/ca/rotation/{step}");
            (api.call(Method::POST, &path, None, &[]).await?, json)
        }
    };
    if json {
        super::print_json(&status)?;
    } else {
        print!("{}", describe(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &Value) -> String {
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let which = |fp: &Value| if *fp == s["next_ca"] { " (new)" } else { " (current)" };
    let mut out = format!("{:<14}{}\n{:<14}{}\n", "Phase", text(&s["phase"]), "Current CA", text(&s["current_ca"]));
    if !s["next_ca"].is_null() {
        out.push_str(&format!("{:<14}{}\n", "New CA", text(&s["next_ca"])));
    }
    out.push_str(&format!("{:<14}{}{}\n", "Issuing CA", text(&s["issuing_ca"]), which(&s["issuing_ca"])));
    out.push_str(&format!(
        "{:<14}from {}{}\n",
        "Server cert",
        text(&s["server_cert_issuer"]),
        which(&s["server_cert_issuer"])
    ));
    if !s["next_ca"].is_null() {
        out.push_str(&format!(
            "{:<14}{} of {} active on the new CA\n",
            "Workers", s["workers_on_new_ca"], s["workers_active"]
        ));
        for w in s["workers"].as_array().into_iter().flatten() {
            if w["active"] == true && w["on_new_ca"] == false {
                out.push_str(&format!("  {} still on the old CA\n", text(&w["worker"])));
            }
        }
    }
    out
}
