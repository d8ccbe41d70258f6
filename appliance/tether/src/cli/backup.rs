//! `tether backup` (over the API, from a running appliance), `tether
//! restore` (into a data directory, with the appliance stopped) and `tether
//! restore-test` (into a scratch directory, recorded on the appliance).

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

#[derive(Debug, clap::Args)]
#[command(after_help = "The backup is opened with its unseal credentials, restored into a private scratch \
    directory (removed afterwards) and its audit chain checked there. The test is then recorded on the appliance \
    that took it (TETHER_URL, TETHER_TOKEN of an admin), which checks that the backup is one of its own; \
    `tether security-check` reports backups.restore-untested until one is.")]
pub struct RestoreTestArgs {
    /// The backup file.
    file: PathBuf,
    /// The backup's unseal credentials (a quorum of shares, the passphrase or the key file).
    #[command(flatten)]
    credentials: Credentials,
    /// Test it here only; record nothing on the appliance.
    #[arg(long)]
    offline: bool,
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

pub async fn restore_test(args: RestoreTestArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let credentials = args.credentials.read()?;
    if credentials.is_empty() {
        anyhow::bail!("give the backup's unseal credentials: --share-file (a quorum), --passphrase-file or --key-file");
    }
    // Reach the appliance before the work, so a wrong URL or token fails fast.
    let api = if args.offline { None } else { Some(ApiClient::from_env(TIMEOUT)?) };
    let verified = backup::verify(&file, credentials).await?;
    let scratch = Scratch::new()?;
    let restored = backup::restore_into(&verified, &scratch.0, Consent::None, SystemClock.now()).await?;
    let checked = {
        let store = tether_store::Store::open(&scratch.0)?;
        store.read(tether_domain::audit::verify).context("the restored audit chain does not verify")?
    };
    drop(scratch);
    let proof = verified.proof();
    if let Some(api) = &api {
        api.call(Method::POST, "/api/v1/sys/backup/restore-tests", Some(&serde_json::to_value(&proof)?), &[]).await?;
    }
    if args.json {
        super::print_json(&json!({
            "epoch": proof.epoch,
            "records": restored.records,
            "audit_records": checked.records,
            "recorded": api.is_some(),
        }))?;
    } else {
        eprintln!(
            "backup epoch {} restores: {} records written to a scratch directory, its audit chain verifies ({} records){}",
            proof.epoch,
            restored.records,
            checked.records,
            if api.is_some() { "; recorded on the appliance" } else { "; not recorded (--offline)" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let dir =
            std::env::temp_dir().join(format!("tether-restore-test-{}-{:016x}", std::process::id(), fastrand::u64(..)));
        tether_base::files::fresh_private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = tether_base::files::remove_dir_if_present(&self.0);
    }
}
