//! `tether secret put|list|get|delete`: secrets for tasks. Values go in
//! from stdin, a file or a hidden prompt, never from the command line, and
//! never come back out.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::ApiClient;
use tether_base::files;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Store a new version of a secret. The value comes from --from-file,
    /// from stdin, or from a prompt that does not echo.
    Put {
        name: String,
        /// Read the value from this file (mode 600 or stricter); `-` is stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// Task kinds that may receive it (repeat or comma separate).
        /// Required for a new secret; given again, replaces the policy.
        #[arg(long = "kind", value_delimiter = ',')]
        kinds: Vec<String>,
        /// Labels a worker must hold to receive it.
        #[arg(long = "label", value_delimiter = ',')]
        labels: Vec<String>,
        /// Keep a trailing newline (dropped by default, as `echo` adds one).
        #[arg(long)]
        keep_newline: bool,
        #[arg(long)]
        json: bool,
    },
    /// List secrets (names, versions, policies; never values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one secret's metadata.
    Get {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret and every version of its value.
    Delete { name: String },
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn read_value(
    from_file: Option<PathBuf>,
    name: &str,
    keep_newline: bool,
) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut value = match from_file {
        Some(path) => files::read_secret_bytes(&path)?,
        None if std::io::stdin().is_terminal() => {
            let text = super::vault::prompt_hidden(&format!("Value for {name}: "))?;
            zeroize::Zeroizing::new(text.as_bytes().to_vec())
        }
        None => files::read_secret_bytes(std::path::Path::new("-"))?,
    };
    if !keep_newline {
        let keep = value.iter().rposition(|b| !matches!(b, b'\n' | b'\r')).map_or(0, |i| i + 1);
        value.truncate(keep);
    }
    if value.is_empty() {
        anyhow::bail!("the value for {name} is empty; nothing was stored");
    }
    Ok(value)
}

fn show(secret: &Value) {
    let list = |k: &str| {
        let items: Vec<&str> = secret["policy"][k].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if items.is_empty() { "-".to_owned() } else { items.join(",") }
    };
    println!(
        "{}  version {}  kinds {}  labels {}",
        secret["name"].as_str().unwrap_or("-"),
        secret["version"],
        list("kinds"),
        list("labels")
    );
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let api = ApiClient::from_env(TIMEOUT)?;
    match cmd {
        Command::Put { name, from_file, kinds, labels, keep_newline, json } => {
            tether_domain::vault::secrets::check_name(&name).map_err(anyhow::Error::msg)?;
            let value = read_value(from_file, &name, keep_newline)?;
            let mut body = json!({ "value_base64": base64::engine::general_purpose::STANDARD.encode(&*value) });
            if !kinds.is_empty() || !labels.is_empty() {
                body["policy"] = json!({ "kinds": kinds, "labels": labels });
            }
            let secret = api.call(Method::PUT, &format!("/api/v1/secrets/{name}"), Some(&body), &[]).await?;
            if json {
                super::print_json(&secret)?;
            } else {
                show(&secret);
            }
        }
        Command::List { json } => {
            let list = api.call(Method::GET, "/api/v1/secrets", None, &[]).await?;
            if json {
                super::print_json(&list)?;
            } else {
                list.as_array().into_iter().flatten().for_each(show);
            }
        }
        Command::Get { name, json } => {
            let secret = api.call(Method::GET, &format!("/api/v1/secrets/{name}"), None, &[]).await?;
            if json {
                super::print_json(&secret)?;
            } else {
                show(&secret);
                for v in secret["versions"].as_array().into_iter().flatten() {
                    println!(
                        "  v{}  {}  by {}",
                        v["version"],
                        v["created_at"].as_str().unwrap_or("-"),
                        v["created_by"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        Command::Delete { name } => {
            api.call(Method::DELETE, &format!("/api/v1/secrets/{name}"), None, &[]).await?;
            eprintln!("deleted {name} and every version of its value");
        }
    }
    Ok(ExitCode::SUCCESS)
}
