//! `tether audit verify|export|public-key`: on a stopped appliance's data
//! directory, or (`verify --file`) on an export, anywhere, offline.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use tether_domain::audit;
use tether_domain::evidence;
use tether_store::{self as store, Store};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the whole hash chain of a stopped appliance's data directory,
    /// or (with --public-key and --file or --checkpoint) an export from
    /// `GET /api/v1/audit/export` or a checkpoint from
    /// `GET /api/v1/audit/checkpoint`; exits non-zero on any break and
    /// names the first bad record.
    #[command(group(clap::ArgGroup::new("offline").multiple(true).args(["file", "checkpoint"])))]
    Verify {
        #[command(flatten)]
        dir: super::DataDir,
        /// An exported log (JSON lines ending with its seal). Repeat it for
        /// archive segments in order, then the current export: each must
        /// continue the one before.
        #[arg(long, requires = "public_key")]
        file: Vec<std::path::PathBuf>,
        /// A signed checkpoint downloaded earlier: its signature is checked,
        /// and with --file the exports must hold the record it vouches for,
        /// unchanged (the log was not rewritten since it was downloaded).
        #[arg(long, requires = "public_key")]
        checkpoint: Option<std::path::PathBuf>,
        /// The appliance's audit public key (PEM; `tether audit public-key`).
        #[arg(long, requires = "offline")]
        public_key: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the audit public key (PEM), which verifies exports offline.
    PublicKey {
        #[command(flatten)]
        dir: super::DataDir,
    },
    /// SIEM sinks, over the API (changes: a security officer).
    #[command(subcommand)]
    Sink(SinkCommand),
    /// Write the log as JSON lines (each record with its hash).
    Export {
        #[command(flatten)]
        dir: super::DataDir,
        /// Only jsonl for now.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
        /// First sequence number to export.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SinkCommand {
    /// The sinks, each with its cursor and state.
    List,
    /// Add or replace a sink: syslog over TLS (--syslog-tls HOST:PORT
    /// --ca-file CA.pem [--format cef]) or a JSON-lines file (--jsonl-file PATH).
    Add {
        name: String,
        #[arg(long, conflicts_with = "jsonl_file", requires = "ca_file")]
        syslog_tls: Option<String>,
        /// The CA that signed the receiver's certificate.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// The name in the receiver's certificate, if not the host of the address.
        #[arg(long)]
        server_name: Option<String>,
        #[arg(long, default_value = "rfc5424", value_parser = ["rfc5424", "cef"])]
        format: String,
        #[arg(long)]
        jsonl_file: Option<std::path::PathBuf>,
    },
    /// Remove a sink.
    Remove { name: String },
}

async fn sink(cmd: SinkCommand) -> anyhow::Result<ExitCode> {
    use serde_json::json;
    let client = super::client::ApiClient::from_env(std::time::Duration::from_secs(30))?;
    match cmd {
        SinkCommand::List => {
            let sinks = client.call(reqwest::Method::GET, "/api/v1/audit/sinks", None, &[]).await?;
            super::print_json(&sinks)?;
        }
        SinkCommand::Add { name, syslog_tls, ca_file, server_name, format, jsonl_file } => {
            let body = match (syslog_tls, jsonl_file) {
                (Some(address), None) => {
                    let path = ca_file.context("--syslog-tls needs --ca-file")?;
                    let ca_pem =
                        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    json!({"syslog_tls": {"address": address, "ca_pem": ca_pem, "server_name": server_name, "format": format}})
                }
                (None, Some(path)) => json!({"jsonl_file": {"path": path}}),
                _ => anyhow::bail!("give --syslog-tls HOST:PORT (with --ca-file) or --jsonl-file PATH"),
            };
            client.call(reqwest::Method::PUT, &format!("/api/v1/audit/sinks/{name}"), Some(&body), &[]).await?;
            println!("sink {name} delivers from the start of the log");
        }
        SinkCommand::Remove { name } => {
            client.call(reqwest::Method::DELETE, &format!("/api/v1/audit/sinks/{name}"), None, &[]).await?;
            println!("sink {name} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open(dir: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(dir).map_err(|e| match e {
        store::Error::AlreadyOpen => anyhow::anyhow!(
            "the appliance is running on {}; stop it first, or use GET /api/v1/audit/verify",
            dir.display()
        ),
        other => anyhow::Error::new(other).context(format!("opening {}", dir.display())),
    })
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Verify { file, checkpoint, public_key: Some(key), json, .. } => {
            verify_offline(&file, checkpoint.as_deref(), &key, json)
        }
        Command::Sink(cmd) => sink(cmd).await,
        Command::PublicKey { dir } => {
            let store = open(&dir.data_dir)?;
            let pem = store
                .read(evidence::signing::public_key_pem)
                .context("no audit key yet: it is made at the first unseal of a running appliance")?;
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir, json, .. } => {
            let store = open(&dir.data_dir)?;
            let verdict = store.read(audit::verify);
            let (ok, line) = match &verdict {
                Ok(v) => (
                    true,
                    serde_json::json!({"ok": true, "records": v.records, "head_seq": v.head.map(|h| h.seq),
                        "head_hash": v.head.map(|h| hex::encode(h.hash))}),
                ),
                Err(audit::VerifyError::Store(e)) => anyhow::bail!("cannot read the audit log: {e}"),
                Err(e) => (false, serde_json::json!({"ok": false, "problem": e.to_string()})),
            };
            if json {
                super::print_json(&line)?;
            } else if ok {
                println!("audit chain OK: {} records, head {}", line["records"], line["head_hash"]);
            } else {
                println!("audit chain BROKEN: {}", line["problem"].as_str().unwrap_or_default());
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Export { dir, format: _, from } => {
            let store = open(&dir.data_dir)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            store.read(|tx| audit::export_jsonl(tx, from, &mut out)).context("exporting")?;
            out.flush()?;
            eprintln!(
                "note: an export from a stopped appliance carries no seal (the key is sealed); \
                 GET /api/v1/audit/export gives one that `verify --file` can vouch for to its end"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_offline(
    files: &[PathBuf],
    checkpoint: Option<&std::path::Path>,
    key: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let read = |f: &std::path::Path| std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()));
    let texts = files.iter().map(|f| read(f)).collect::<anyhow::Result<Vec<_>>>()?;
    let key = evidence::signing::PublicKey::from_pem(&read(key)?).with_context(|| key.display().to_string())?;
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut report = serde_json::json!({"ok": true});
    // The first problem ends the check: said, and kept for --json.
    let broken = |report: &mut serde_json::Value, what: &str, file: String, problem: String| {
        if !json {
            println!("{what} BROKEN in {file} at {problem}");
        }
        *report = serde_json::json!({"ok": false, "file": file, "problem": problem});
    };
    if !texts.is_empty() {
        match evidence::offline::verify_files(&texts, &key) {
            Ok(summaries) => {
                if !json {
                    for (file, summary) in files.iter().zip(&summaries) {
                        println!(
                            "export OK: {}: {} records (seq {}..={}), {} signed checkpoints, sealed by key {}",
                            file.display(),
                            summary.records,
                            summary.first_seq.unwrap_or(0),
                            summary.last_seq.unwrap_or(0),
                            summary.checkpoints,
                            summary.key_id
                        );
                    }
                }
                report["files"] = serde_json::json!(summaries);
            }
            Err((n, bad)) => {
                let file = files.get(n - 1).map(|f| f.display().to_string()).unwrap_or_default();
                broken(&mut report, "export", file, bad.to_string());
            }
        }
    }
    if let (Some(path), true) = (checkpoint, report["ok"] == true) {
        let signed: evidence::checkpoints::Signed = serde_json::from_str(&read(path)?)
            .with_context(|| format!("{} is not a checkpoint from GET /api/v1/audit/checkpoint", path.display()))?;
        let file = path.display().to_string();
        let disagreement = if texts.is_empty() { None } else { evidence::offline::agrees_with(&texts, &signed).err() };
        if !signed.verifies(&key) {
            let problem = format!(
                "its signature: it does not verify with this public key (key {}; the checkpoint names key {})",
                key.id(),
                signed.key_id
            );
            broken(&mut report, "checkpoint", file, problem);
        } else if let Some(problem) = disagreement {
            broken(&mut report, "checkpoint", file, problem);
        } else {
            if !json {
                println!(
                    "checkpoint OK: {file}: signed by key {}, vouches for records up to seq {} (hash {}), written {}{}",
                    signed.key_id,
                    signed.covers_seq,
                    signed.covers_hash,
                    signed.written_at,
                    if texts.is_empty() { "" } else { "; the exports agree with it" }
                );
            }
            report["checkpoint"] = serde_json::json!(signed);
        }
    }
    if json {
        super::print_json(&report)?;
    }
    Ok(if report["ok"] == true { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
