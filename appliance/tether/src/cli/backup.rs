//! `tether backup` (over the API, from a running appliance) and
//! `tether restore` (into a data directory, with the appliance stopped).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::json;

use super::client::ApiClient;
use super::vault::Credentials;
use tether_base::clock::{Clock, SystemClock};
use tether_base::files::write_private;
use tether_domain::backup::{self, Consent};

/// Large appliances take a while to snapshot and send.
const TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (mode 600; an existing file is refused).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The data directory to restore into: new, or one whose appliance is stopped.
    #[command(flatten)]
    data_dir: super::DataDir,
    /// The backup's unseal credentials (a quorum of shares, the passphrase or
    /// the key file): the backup is opened and checked before anything is written.
    #[command(flatten)]
    credentials: Credentials,
    /// Restore a backup older than the directory it replaces. Needs
    /// TETHER_TOKEN: a security officer's token on the appliance being replaced.
    #[arg(long)]
    allow_rollback: bool,
    #[arg(long)]
    json: bool,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    if args.out.exists() {
        anyhow::bail!("{} already exists; choose a new file", args.out.display());
    }
    let api = ApiClient::from_env(TIMEOUT)?;
    let file = api.send(Method::POST, "/api/v1/sys/backup", None, &[]).await?;
    let header = backup::inspect(&file).context("the appliance sent a backup that does not check out")?;
    write_private(&args.out, &file)?;
    if args.json {
        super::print_json(&json!({"file": args.out, "bytes": file.len(), "header": header}))?;
    } else {
        eprintln!(
            "backup written to {} ({} bytes, epoch {}, {} records); it opens only with this appliance's unseal credentials",
            args.out.display(),
            file.len(),
            header.epoch,
            header.records
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let credentials = args.credentials.read()?;
    if credentials.is_empty() {
        anyhow::bail!("give the backup's unseal credentials: --share-file (a quorum), --passphrase-file or --key-file");
    }
    let verified = backup::verify(&file, credentials).await?;
    let token = std::env::var("TETHER_TOKEN").ok();
    let consent = if args.allow_rollback { Consent::Rollback { token: token.as_deref() } } else { Consent::None };
    let restored = backup::restore_into(&verified, &args.data_dir.data_dir, consent, SystemClock.now()).await?;
    if args.json {
        super::print_json(&restored)?;
    } else {
        eprintln!(
            "restored epoch {} into {} ({} records){}; start it with `tether serve --data-dir {}` and unseal",
            restored.backup_epoch,
            args.data_dir.data_dir.display(),
            restored.records,
            if restored.rollback { ", rolled back by officer consent" } else { "" },
            args.data_dir.data_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
