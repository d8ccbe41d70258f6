//! `tether user add|passwd|disable|list|role|approve|logout`: people's
//! accounts, over the API (admin; `approve` is a security officer's).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::client::ApiClient;
use tether_base::files::read_secret;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an account. The person chooses their own password (and, as
    /// admin or security_officer, sets up TOTP) at their first login.
    Add {
        name: String,
        /// admin, security_officer, auditor, developer or viewer. Granting
        /// security_officer waits for a second officer's approval once one exists.
        #[arg(long)]
        role: String,
        /// A file (mode 600) or `-` (stdin) holding the first password;
        /// without it one is generated and printed once.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Reset someone's password (they must change it at their next login;
    /// their sessions end).
    Passwd {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Disable an account: its sessions and tokens stop working at once.
    Disable { name: String },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change someone's role (a re-authenticated session or a token).
    Role { name: String, role: String },
    /// Approve a pending role change (a security officer other than the
    /// one who asked and the person concerned).
    Approve { name: String },
    /// End every console session of an account at once.
    Logout { name: String },
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let client = ApiClient::from_env(Duration::from_secs(30))?;
    match cmd {
        Command::Add { name, role, password_file } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(path) = password_file {
                body["password"] = json!(read_secret(&path)?.as_str());
            }
            let made = client.call(Method::POST, "/api/v1/users", Some(&body), &[]).await?;
            let user = &made["user"];
            println!(
                "created {} as {}",
                user["name"].as_str().unwrap_or_default(),
                user["role"].as_str().unwrap_or_default()
            );
            if let Some(pending) = user["pending_role"].as_str() {
                println!("{pending} awaits a security officer's approval: tether user approve {name}");
            }
            print_initial_password(&made);
        }
        Command::Passwd { name, password_file } => {
            let mut body = json!({});
            if let Some(path) = password_file {
                body["password"] = json!(read_secret(&path)?.as_str());
            }
            let reset = client.call(Method::POST, &format!("/api/v1/users/{name}/password"), Some(&body), &[]).await?;
            println!("password of {name} reset; they choose their own at the next login");
            print_initial_password(&reset);
        }
        Command::Disable { name } => {
            client.call(Method::POST, &format!("/api/v1/users/{name}/disable"), Some(&json!({})), &[]).await?;
            println!("{name} disabled; their sessions and tokens no longer work");
        }
        Command::List { json } => {
            let users = client.call(Method::GET, "/api/v1/users", None, &[]).await?;
            if json {
                super::print_json(&users)?;
            } else {
                println!("{:<24} {:<18} {:<8} {:<6} PENDING", "NAME", "ROLE", "STATE", "2FA");
                for u in users.as_array().into_iter().flatten() {
                    let state = if u["disabled"] == true {
                        "disabled"
                    } else if u["must_change_password"] == true {
                        "new"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<24} {:<18} {:<8} {:<6} {}",
                        u["name"].as_str().unwrap_or_default(),
                        u["role"].as_str().unwrap_or_default(),
                        state,
                        if u["second_factor"] == true { "totp" } else { "-" },
                        u["pending_role"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        Command::Role { name, role } => {
            let body = json!({"role": role});
            let changed = client.call(Method::PUT, &format!("/api/v1/users/{name}/role"), Some(&body), &[]).await?;
            match changed["result"].as_str() {
                Some("awaiting_approval") => {
                    println!("{role} for {name} awaits a second security officer: tether user approve {name}")
                }
                _ => println!("{name} is now {role}"),
            }
        }
        Command::Approve { name } => {
            let done =
                client.call(Method::POST, &format!("/api/v1/users/{name}/role/approve"), Some(&json!({})), &[]).await?;
            println!("{name} is now {}", done["role"].as_str().unwrap_or_default());
        }
        Command::Logout { name } => {
            let ended = client.call(Method::DELETE, &format!("/api/v1/users/{name}/sessions"), None, &[]).await?;
            println!("{} session(s) of {name} ended", ended["sessions_ended"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_initial_password(reply: &Value) {
    if let Some(p) = reply["initial_password"].as_str() {
        println!("first password (shown once; hand it over in person): {p}");
    }
}
