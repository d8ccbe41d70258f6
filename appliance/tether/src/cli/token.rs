//! `tether token create|list|rotate|revoke|enroll`.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::client::ApiClient;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an API token with at most your own rights. The secret is shown once.
    Create {
        /// admin, security_officer, auditor, developer or viewer.
        #[arg(long)]
        role: String,
        /// Whom the token acts for: yourself (the default) or, as an admin,
        /// a service name; tasks it creates belong to this name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, like 90d (the default) or 12h; at most token_max_ttl.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (yours; an admin sees all): id, owner, role, expiry, last use.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace a token's secret (owner, role and expiry stay); the old one stops at once.
    Rotate {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once.
    Revoke { id: String },
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
            ("/api/v1/tokens".to_owned(), json!({"role": role, "name": name, "ttl": ttl}), json)
        }
        Command::Rotate { id, json } => (format!("/api/v1/tokens/{id}/rotate"), json!({}), json),
        Command::List { json } => {
            let tokens = client.call(Method::GET, "/api/v1/tokens", None, &[]).await?;
            if json {
                super::print_json(&tokens)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<18} {:<20} {:<18} {:<26} LAST USED", "ID", "OWNER", "ROLE", "EXPIRES");
            for t in tokens.as_array().into_iter().flatten() {
                let when = |v: &serde_json::Value| v.as_str().unwrap_or("never").to_owned();
                println!(
                    "{:<18} {:<20} {:<18} {:<26} {}",
                    t["id"].as_str().unwrap_or_default(),
                    t["owner"].as_str().unwrap_or_default(),
                    t["role"].as_str().unwrap_or_default(),
                    when(&t["expires_at"]),
                    when(&t["last_used"])
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Revoke { id } => {
            client.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None, &[]).await?;
            println!("token {id} revoked");
            return Ok(ExitCode::SUCCESS);
        }
        Command::Enroll { labels, ttl, json } => {
            ("/api/v1/workers/enrollment-tokens".to_owned(), json!({"labels": labels, "ttl": ttl}), json)
        }
    };
    let created = client.call(Method::POST, &path, Some(&body), &[]).await?;
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
