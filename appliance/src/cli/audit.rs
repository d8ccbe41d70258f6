//! `tether audit verify|export|public-key`: on a stopped appliance's data
//! directory, or (`verify --file`) on an export, anywhere, offline.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use crate::audit;
use crate::store::{self, Store};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the whole hash chain of a stopped appliance's data directory,
    /// or (with --file and --public-key) an export from
    /// `GET /api/v1/audit/export`; exits non-zero on any break and names
    /// the first bad record.
    Verify {
        #[command(flatten)]
        dir: super::DataDir,
        /// An exported log (JSON lines ending with its seal). Repeat it for
        /// archive segments in order, then the current export: each must
        /// continue the one before.
        #[arg(long, requires = "public_key")]
        file: Vec<std::path::PathBuf>,
        /// The appliance's audit public key (PEM; `tether audit public-key`).
        #[arg(long, requires = "file")]
        public_key: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the audit public key (PEM), which verifies exports offline.
    PublicKey {
        #[command(flatten)]
        dir: super::DataDir,
    },
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
        Command::Verify { file, public_key: Some(key), json, .. } if !file.is_empty() => {
            verify_export(&file, &key, json)
        }
        Command::PublicKey { dir } => {
            let store = open(&dir.data_dir)?;
            let pem = store
                .read(|tx| Ok(audit::signing::public_key_pem(tx)))?
                .context("no audit key yet: it is made at the first unseal of a running appliance")?;
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir, json, .. } => {
            let store = open(&dir.data_dir)?;
            let verdict = store.read(|tx| Ok(audit::verify(tx)))?;
            let (ok, line) = match &verdict {
                Ok(v) => (
                    true,
                    serde_json::json!({"ok": true, "records": v.records, "head_seq": v.head.map(|h| h.seq),
                        "head_hash": v.head.map(|h| hex::encode(h.hash))}),
                ),
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

fn verify_export(files: &[std::path::PathBuf], key: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let texts = files
        .iter()
        .map(|f| std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pem = std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let key = audit::signing::PublicKey::from_pem(&pem).with_context(|| key.display().to_string())?;
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    match audit::offline::verify_files(&texts, &key) {
        Ok(summaries) => {
            if json {
                super::print_json(&serde_json::json!({"ok": true, "files": summaries}))?;
            } else {
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
            Ok(ExitCode::SUCCESS)
        }
        Err((n, bad)) => {
            let file = files.get(n - 1).map(|f| f.display().to_string()).unwrap_or_default();
            if json {
                super::print_json(&serde_json::json!({"ok": false, "file": file, "problem": bad}))?;
            } else {
                println!("export BROKEN in {file} at {bad}");
            }
            Ok(ExitCode::from(2))
        }
    }
}
