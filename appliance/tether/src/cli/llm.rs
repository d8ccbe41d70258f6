//! `tether llm key create|list|revoke`, `tether llm upstream set|list|remove`,
//! `tether llm prompt set`, `tether llm usage`, `tether llm prompt-log`: the
//! LLM gateway's keys, model servers, enforcement prompts, usage and prompt
//! log, over the API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::ApiClient;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Virtual keys for OpenAI and Ollama clients.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The site's model servers (admin).
    #[command(subcommand)]
    Upstream(UpstreamCommand),
    /// The enforcement levels' system prompts (security officer).
    #[command(subcommand)]
    Prompt(PromptCommand),
    /// Requests and tokens per day, owner, key and model (yours; admins,
    /// security officers and auditors see everyone's), with the totals.
    Usage {
        /// First day, like 2026-12-01 (UTC; default: the first).
        #[arg(long)]
        from: Option<String>,
        /// Last day, inclusive (default: today).
        #[arg(long)]
        to: Option<String>,
        /// Only this person's use.
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Read the prompt log of keys made with --log-prompts (security officer;
    /// the reading is audited).
    PromptLog {
        /// One key's calls only.
        #[arg(long)]
        key: Option<String>,
        /// The newest this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Create a key; the secret is shown once. A developer's keys are their own.
    Create {
        /// Whose use this is (an admin may name anyone; default: you).
        #[arg(long)]
        owner: Option<String>,
        /// The models it may call (comma separated; default: any).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u32>,
        /// Requests in flight at once.
        #[arg(long)]
        max_parallel: Option<u32>,
        /// A model's own limits beside the key's, like
        /// `llama3:rpm=10,tpm=20000,max-parallel=1` (repeat for more models).
        #[arg(long = "model-limit", value_parser = parse_model_limit)]
        model_limits: Vec<(String, Value)>,
        /// Keep each call's prompt and answer, sealed in the vault, for
        /// security officers to read; fixed for the key's life.
        #[arg(long)]
        log_prompts: bool,
        /// unrestricted, standard (default) or design-first; fixed for the key's life.
        #[arg(long)]
        enforcement: Option<String>,
        /// Lifetime, like 90d (the default).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (yours; an admin sees all).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum UpstreamCommand {
    /// Add or replace a model server.
    Set {
        name: String,
        /// openai (vLLM and other OpenAI-compatible servers) or ollama.
        #[arg(long)]
        kind: String,
        /// Base URL, e.g. http://10.0.0.5:8000.
        #[arg(long)]
        url: String,
        /// The models it serves (comma separated).
        #[arg(long, value_delimiter = ',', required = true)]
        models: Vec<String>,
        /// The CA (PEM file) that signs an https server's certificate.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A file (mode 0600) holding the bearer credential the server wants.
        #[arg(long)]
        credential_file: Option<PathBuf>,
    },
    /// List model servers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a model server.
    Remove { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum PromptCommand {
    /// Replace a level's system prompt with the text of FILE.
    Set {
        /// standard or design-first.
        level: String,
        file: PathBuf,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let client = ApiClient::from_env(Duration::from_secs(30))?;
    match cmd {
        Command::Key(cmd) => key(&client, cmd).await,
        Command::Upstream(cmd) => upstream(&client, cmd).await,
        Command::Prompt(PromptCommand::Set { level, file }) => {
            let prompt = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            client
                .call(Method::PUT, &format!("/api/v1/llm/prompts/{level}"), Some(&json!({"prompt": prompt})), &[])
                .await?;
            println!("the {level} prompt is replaced; it applies to the next request");
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage { from, to, owner, json } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (name, value) in [("from", from), ("to", to), ("owner", owner)] {
                if let Some(value) = value {
                    query.append_pair(name, &value);
                }
            }
            let rows = client.call(Method::GET, &format!("/api/v1/llm/usage?{}", query.finish()), None, &[]).await?;
            if json {
                super::print_json(&rows)?;
            } else {
                print_usage(rows.as_array().map(Vec::as_slice).unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::PromptLog { key, limit } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &limit.to_string());
            if let Some(key) = &key {
                query.append_pair("key", key);
            }
            let entries =
                client.call(Method::GET, &format!("/api/v1/llm/prompt-log?{}", query.finish()), None, &[]).await?;
            super::print_json(&entries)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The usage report as a table, one row per day, owner, key and model, and
/// the totals under it.
fn print_usage(rows: &[Value]) {
    let count = |row: &Value, field: &str| row[field].as_u64().unwrap_or(0);
    let fields = ["requests", "failed", "prompt_tokens", "completion_tokens"];
    println!(
        "{:<10}  {:<16} {:<14} {:<20} {:>9} {:>7} {:>12} {:>12}",
        "DAY", "OWNER", "KEY", "MODEL", "REQUESTS", "FAILED", "PROMPT", "COMPLETION"
    );
    let mut totals = [0u64; 4];
    for row in rows {
        let text = |field: &str| row[field].as_str().unwrap_or_default().to_owned();
        let counts = fields.map(|f| count(row, f));
        for (total, n) in totals.iter_mut().zip(counts) {
            *total += n;
        }
        println!(
            "{:<10}  {:<16} {:<14} {:<20} {:>9} {:>7} {:>12} {:>12}",
            text("day"),
            text("owner"),
            text("key_id"),
            text("model"),
            counts[0],
            counts[1],
            counts[2],
            counts[3]
        );
    }
    let [requests, failed, prompt, completion] = totals;
    println!("{:<63} {requests:>9} {failed:>7} {prompt:>12} {completion:>12}", "TOTAL");
}

/// `MODEL:rpm=N,tpm=N,max-parallel=N` (any of the three) → the model and its limits.
fn parse_model_limit(s: &str) -> Result<(String, Value), String> {
    let usage = || format!("{s:?}: give MODEL:rpm=N,tpm=N,max-parallel=N (any of the three)");
    let (model, limits) = s.rsplit_once(':').ok_or_else(usage)?;
    let mut out = serde_json::Map::new();
    for part in limits.split(',') {
        let (name, n) = part.split_once('=').ok_or_else(usage)?;
        let n: u32 = n.trim().parse().map_err(|_| usage())?;
        let field = match name.trim() {
            "rpm" => "rpm",
            "tpm" => "tpm",
            "max-parallel" | "max_parallel" => "max_parallel",
            _ => return Err(usage()),
        };
        out.insert(field.into(), n.into());
    }
    if model.is_empty() {
        return Err(usage());
    }
    Ok((model.to_owned(), Value::Object(out)))
}

async fn key(client: &ApiClient, cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Create {
            owner,
            models,
            rpm,
            tpm,
            max_parallel,
            model_limits,
            log_prompts,
            enforcement,
            ttl,
            json,
        } => {
            let model_limits: serde_json::Map<String, Value> = model_limits.into_iter().collect();
            let body = json!({
                "owner": owner, "models": models, "rpm": rpm, "tpm": tpm, "max_parallel": max_parallel,
                "model_limits": model_limits, "log_prompts": log_prompts, "enforcement": enforcement, "ttl": ttl,
            });
            let created = client.call(Method::POST, "/api/v1/llm/keys", Some(&body), &[]).await?;
            if json {
                super::print_json(&created)?;
            } else {
                println!("{}", created["key"].as_str().unwrap_or_default());
                eprintln!(
                    "key {} for {} ({}), expires {}; shown once: give it to the client as its API key",
                    created["id"].as_str().unwrap_or_default(),
                    created["owner"].as_str().unwrap_or_default(),
                    created["enforcement"].as_str().unwrap_or_default(),
                    created["expires_at"].as_str().unwrap_or_default(),
                );
            }
        }
        KeyCommand::List { json } => {
            let keys = client.call(Method::GET, "/api/v1/llm/keys", None, &[]).await?;
            if json {
                super::print_json(&keys)?;
            } else {
                for k in keys.as_array().into_iter().flatten() {
                    let models: Vec<&str> =
                        k["models"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!(
                        "{}  {:<16} {:<13} models={} expires {}",
                        k["id"].as_str().unwrap_or_default(),
                        k["owner"].as_str().unwrap_or_default(),
                        k["enforcement"].as_str().unwrap_or_default(),
                        if models.is_empty() { "any".to_owned() } else { models.join(",") },
                        k["expires_at"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        KeyCommand::Revoke { id } => {
            client.call(Method::DELETE, &format!("/api/v1/llm/keys/{id}"), None, &[]).await?;
            println!("key {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn upstream(client: &ApiClient, cmd: UpstreamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UpstreamCommand::Set { name, kind, url, models, ca_file, credential_file } => {
            let ca_pem = match ca_file {
                Some(path) => {
                    Some(std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?)
                }
                None => None,
            };
            let credential = match credential_file {
                Some(path) => Some(tether_base::files::read_secret(&path)?),
                None => None,
            };
            let body = json!({"kind": kind, "url": url, "models": models, "ca_pem": ca_pem,
                              "credential": credential.as_deref().map(String::as_str)});
            client.call(Method::PUT, &format!("/api/v1/llm/upstreams/{name}"), Some(&body), &[]).await?;
            println!("upstream {name} set");
        }
        UpstreamCommand::List { json } => {
            let upstreams = client.call(Method::GET, "/api/v1/llm/upstreams", None, &[]).await?;
            if json {
                super::print_json(&upstreams)?;
            } else {
                for u in upstreams.as_array().into_iter().flatten() {
                    let models: Vec<&str> =
                        u["models"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    let health = match (u["health"]["healthy"].as_bool(), u["health"]["problem"].as_str()) {
                        (Some(true), _) => "healthy".to_owned(),
                        (Some(false), problem) => format!("DOWN ({})", problem.unwrap_or("failed its check")),
                        (None, _) => "not checked yet".to_owned(),
                    };
                    println!(
                        "{:<16} {:<7} {:<40} {:<24} {}",
                        u["name"].as_str().unwrap_or_default(),
                        u["kind"].as_str().unwrap_or_default(),
                        u["url"].as_str().unwrap_or_default(),
                        models.join(","),
                        health,
                    );
                }
            }
        }
        UpstreamCommand::Remove { name } => {
            client.call(Method::DELETE, &format!("/api/v1/llm/upstreams/{name}"), None, &[]).await?;
            println!("upstream {name} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
