//! `tether audit verify|export`, on a stopped appliance's data directory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use crate::audit;
use crate::store::{self, Store};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the whole hash chain; exits non-zero on any break.
    Verify {
        #[command(flatten)]
        dir: super::DataDir,
        #[arg(long)]
        json: bool,
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
        Command::Verify { dir, json } => {
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
            Ok(ExitCode::SUCCESS)
        }
    }
}
