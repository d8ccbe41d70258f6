//! `tether upgrade`: seal a data directory the broker core made (before the
//! vault). The steps and why they are safe to interrupt are in
//! [`tether_domain::upgrade`]; this file asks for the unseal method, hands out its
//! material, and shows progress.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::init::{UnsealChoice, hand_out, print_unseal_material};
use super::vault::Credentials;
use tether_base::clock::{Clock, SystemClock};
use tether_domain::upgrade::{self, Needed, Progress};
use tether_domain::vault::{self, Keys};
use tether_store::Store;

/// How often progress is reported while tasks are sealed.
const REPORT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    dir: super::DataDir,
    /// The unseal method for the upgraded directory. When resuming an
    /// interrupted upgrade, --passphrase-file and --key-file name the
    /// current passphrase and key file instead.
    #[command(flatten)]
    unseal: UnsealChoice,
    /// When resuming an upgrade of a directory that unseals with shares: a
    /// file holding one officer's share (repeatable; `-` reads them from stdin).
    #[arg(long = "share-file")]
    share_files: Vec<std::path::PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Keys will be in memory: no core dumps, no ptrace by others.
    vault::memory::harden_process();
    let dir = args.dir.data_dir.canonicalize().with_context(|| {
        format!("{} does not exist; `tether init` makes a new data directory", args.dir.data_dir.display())
    })?;
    let store =
        Store::open(&dir).map_err(upgrade::Error::from).with_context(|| format!("opening {}", dir.display()))?;
    let keys = match upgrade::needed(&store)? {
        Needed::Nothing => {
            upgrade::tidy(&dir)?;
            println!("{} is up to date; nothing to upgrade", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        Needed::Begin => begin(&args, &dir, &store)?,
        Needed::Resume(progress) => {
            eprintln!(
                "resuming the upgrade started at {}: {} of {} tasks sealed",
                progress.started_at, progress.sealed, progress.total
            );
            resume(&args, &store)?
        }
    };
    let mut last_report = None::<Instant>;
    let progress = upgrade::seal_tasks(&store, &keys, |p: &Progress| {
        if last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            eprintln!("sealed {} of {} tasks", p.sealed, p.total);
            last_report = Some(Instant::now());
        }
    })?;
    drop(keys);
    eprintln!("sealed {} of {} tasks; writing the store afresh", progress.sealed, progress.total);
    let done = upgrade::finish(store, &dir, SystemClock.now())?;
    println!(
        "upgraded {}: {} tasks and the CA key sealed. Start it with `tether serve --data-dir {0}` and unseal.",
        dir.display(),
        done.sealed
    );
    Ok(ExitCode::SUCCESS)
}

/// Chooses the unseal method, hands out its material, then starts the
/// upgrade. The material is handed out first: if this run stops before the
/// vault is recorded, nothing was sealed with it, and the next run makes new.
fn begin(args: &Args, dir: &Path, store: &Store) -> anyhow::Result<Keys> {
    let ca_key = upgrade::plaintext_ca_key(dir)?;
    let (choice, key_file) = args.unseal.read()?;
    let (method, unseal_key, material) = vault::unseal::prepare(tether_base::crypto::CryptoPolicy::STANDARD, choice)?;
    let unseal = hand_out(&method, &material, key_file.as_deref())?;
    println!("Upgrading {}: it was made before the vault.", dir.display());
    print_unseal_material(&unseal);
    println!("(If this run stops before it says \"vault recorded\", these are void: run it again.)");
    let keys = upgrade::begin(store, dir, method, unseal_key, ca_key, SystemClock.now())?;
    eprintln!("vault recorded; the CA key is sealed");
    Ok(keys)
}

/// Opens the vault an interrupted upgrade recorded, with its credentials.
fn resume(args: &Args, store: &Store) -> anyhow::Result<Keys> {
    let credentials = Credentials {
        share_files: args.share_files.clone(),
        passphrase_file: args.unseal.passphrase_file.clone(),
        key_file: args.unseal.key_file.clone(),
    }
    .read()?;
    if credentials.is_empty() {
        anyhow::bail!(
            "an upgrade was interrupted here; run it again with the unseal credentials it was given: \
             --share-file (a quorum), --passphrase-file or --key-file"
        );
    }
    Ok(super::runtime()?.block_on(vault::open_offline(store, credentials))?)
}
