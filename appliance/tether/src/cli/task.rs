//! `tether task submit|get|list|cancel|watch`.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::ApiClient;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Submit a task.
    Submit {
        /// The handler to run (e.g. echo, command).
        #[arg(long)]
        kind: String,
        /// The input as JSON; `-` reads it from stdin.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Labels a worker must have (comma separated).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Secrets the worker running it receives (comma separated names).
        #[arg(long, value_delimiter = ',')]
        secrets: Vec<String>,
        /// 0-9, higher runs first (default 5).
        #[arg(long)]
        priority: Option<u8>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// How long the handler may run, in seconds.
        #[arg(long)]
        timeout_s: Option<u64>,
        /// Makes retrying this submission safe: the same key returns the same task.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait up to this many seconds for the task to finish.
        #[arg(long)]
        wait: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Show one task.
    Get {
        id: String,
        /// Wait up to this many seconds for the task to finish.
        #[arg(long)]
        wait: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Follow a task live until it ends: its output on stdout, its state
    /// and progress on stderr (exit 0 when it succeeded, 3 when not).
    Watch {
        id: String,
        /// Every event as a JSON line on stdout instead.
        #[arg(long)]
        json: bool,
    },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn client_for(wait: Option<u64>) -> anyhow::Result<ApiClient> {
    ApiClient::from_env(Duration::from_secs(wait.unwrap_or(0) + 30))
}

fn show(task: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(task);
    }
    let s = |k: &str| task[k].as_str().unwrap_or("-").to_owned();
    println!("{}  {}  {}  attempts {}", s("id"), s("kind"), s("state"), task["attempts"]);
    if let Some(r) = task.get("result") {
        println!("result: {r}");
    }
    if let Some(e) = task.get("error") {
        println!("error: {e}");
    }
    Ok(())
}

/// Exit status for a task shown to a script: non-zero if it failed or was cancelled.
fn exit_for(task: &Value) -> ExitCode {
    match task["state"].as_str() {
        Some("failed" | "cancelled") => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    }
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Submit {
            kind,
            input,
            labels,
            secrets,
            priority,
            max_attempts,
            timeout_s,
            idempotency_key,
            wait,
            json,
        } => {
            let input = if input == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                input
            };
            let input: Value =
                serde_json::from_str(&input).context("--input must be JSON (e.g. '{\"text\":\"hi\"}')")?;
            let mut body = json!({ "kind": kind, "input": input, "labels": labels, "secrets": secrets });
            for (k, v) in [
                ("priority", priority.map(u64::from)),
                ("max_attempts", max_attempts.map(u64::from)),
                ("timeout_s", timeout_s),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let client = client_for(wait)?;
            let headers: Vec<(&str, &str)> = idempotency_key.iter().map(|k| ("idempotency-key", k.as_str())).collect();
            let mut task = client.call(Method::POST, "/api/v1/tasks", Some(&body), &headers).await?;
            if let (Some(w), Some(id)) = (wait, task["id"].as_str()) {
                task = client.call(Method::GET, &format!("/api/v1/tasks/{id}?wait={w}"), None, &[]).await?;
            }
            show(&task, json)?;
            Ok(if wait.is_some() { exit_for(&task) } else { ExitCode::SUCCESS })
        }
        Command::Get { id, wait, json } => {
            let path = match wait {
                Some(w) => format!("/api/v1/tasks/{id}?wait={w}"),
                None => format!("/api/v1/tasks/{id}"),
            };
            let task = client_for(wait)?.call(Method::GET, &path, None, &[]).await?;
            show(&task, json)?;
            Ok(exit_for(&task))
        }
        Command::Watch { id, json } => super::task_watch::watch(&id, json).await,
        Command::List { state, limit, json } => {
            let mut path = format!("/api/v1/tasks?limit={limit}");
            if let Some(s) = state {
                path.push_str(&format!("&state={s}"));
            }
            let list = client_for(None)?.call(Method::GET, &path, None, &[]).await?;
            if json {
                super::print_json(&list)?;
            } else {
                for t in list["tasks"].as_array().into_iter().flatten() {
                    show(t, false)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { id, json } => {
            let task = client_for(None)?.call(Method::POST, &format!("/api/v1/tasks/{id}/cancel"), None, &[]).await?;
            show(&task, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
