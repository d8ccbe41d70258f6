//! `tether install` and `tether uninstall`: the operator's commands, run as
//! root from the USB stick. The work is [`crate::install`]'s; this file
//! reads the flags, shows progress and says what happened and what to do.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::progress::{Meter, size};
use super::release::TrustArgs;
use crate::install::layout::Layout;
use crate::install::{self, Options, Outcome};
use tether_domain::pki;

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The release bundle (from `scripts/make-bundle.sh`).
    bundle: PathBuf,
    /// Replace the installed release: back up the data, switch, and go back
    /// by itself if the new release does not come up.
    #[arg(long)]
    upgrade: bool,
    #[command(flatten)]
    root: RootArg,
    #[command(flatten)]
    trust: TrustArgs,
    /// Run the bundle's FIPS build (tether-fips). An upgrade keeps the
    /// build the installed release runs.
    #[arg(long)]
    fips: bool,
    /// This host runs a worker, not the appliance: the worker's unit is
    /// enabled (and started once /etc/tether/worker.env holds its join
    /// string). An upgrade keeps the host's role.
    #[arg(long)]
    worker: bool,
    /// How long the release has to report ready, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    health_timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    root: RootArg,
    /// Also delete the data (vault, tasks, audit log), the worker's
    /// identity, /etc/tether and the upgrade backups. Cannot be undone.
    #[arg(long)]
    purge: bool,
}

#[derive(Debug, clap::Args)]
struct RootArg {
    /// Install into this directory instead of the running system (tests,
    /// building an image): nothing is started, units are only enabled.
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
}

pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        root: args.root.root.clone(),
        trusted: args.trust.keys()?,
        health_timeout: Duration::from_secs(args.health_timeout),
        fips: args.fips,
        worker: args.worker,
    };
    let mut meter = Meter::new();
    let outcome =
        install::install(&args.bundle, args.upgrade, &options, &mut |p| meter.show(p.stage, p.done, p.total))?;
    let layout = Layout::new(&options.root);
    match outcome {
        Outcome::AlreadyInstalled { release } => {
            println!("tether {} (commit {}) is already installed; nothing to do", release.version, release.commit);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Installed { release, variant, status } => {
            println!(
                "installed tether {} (commit {}, {variant}, {})",
                release.version,
                &release.commit[..12],
                size(release.total_bytes())
            );
            println!("  checked: it came up ({status})");
            next_steps(&layout);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Upgraded { from, to, variant, status, backup } => {
            println!("upgraded tether {} → {} ({variant}); it came up on the data: {status}", from.version, to.version);
            println!("  the data as it was before is backed up at {}", backup.display());
            println!("  the vault is sealed after the restart: unseal it (console, or `tether unseal`)");
            Ok(ExitCode::SUCCESS)
        }
        Outcome::RolledBack { from, to, reason, backup, restored } => {
            eprintln!("UPGRADE FAILED: tether {} did not come up: {reason}", to.version);
            eprintln!("tether {} is current again.", from.version);
            match &backup {
                Some(backup) if restored => eprintln!("Its data was restored from the backup at {}.", backup.display()),
                Some(backup) => {
                    eprintln!("Its data was not changed by the new release (the backup is at {}).", backup.display());
                }
                // A worker host: its identity was never touched.
                None => {}
            }
            if backup.is_some() {
                eprintln!("Both are in the audit log (release.upgrade_rolled_back).");
            }
            Ok(ExitCode::FAILURE)
        }
        Outcome::Worker { release, from, variant, started } => {
            match from {
                Some(from) => {
                    println!("upgraded this worker host: tether {} → {} ({variant})", from.version, release.version)
                }
                None => println!(
                    "installed tether {} for a worker host ({variant}); tether-worker.service is enabled",
                    release.version
                ),
            }
            if started {
                println!("  the worker is started (systemctl status tether-worker)");
            } else {
                let env = layout.config().join("worker.env");
                println!("  it starts once {} holds the join string the console shows (Workers → Add):", env.display());
                println!("    TETHER_JOIN=tether://…");
                println!("  then: systemctl start tether-worker (or reboot)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where the operator goes next: the console, its certificate, setup.
fn next_steps(layout: &Layout) {
    let ca = layout.data().join(pki::CA_CERT);
    if let Some(fingerprint) = std::fs::read_to_string(&ca).ok().and_then(|pem| pki::fingerprint_pem(&pem).ok()) {
        println!("  CA certificate SHA-256 {fingerprint}");
    }
    if layout.root == std::path::Path::new("/") {
        println!("  console        https://<this host's address>:8443/");
        println!("  On first start the appliance is in setup mode; its setup code and certificate fingerprint:");
        let journal = std::process::Command::new("journalctl")
            .args(["-u", "tether.service", "-o", "cat", "-n", "40", "--no-pager"])
            .output();
        let lines = journal.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()).unwrap_or_default();
        let shown: Vec<_> = lines.lines().filter(|l| l.contains("setup code") || l.contains("certificate")).collect();
        match shown.as_slice() {
            [] => println!("    journalctl -u tether.service   (or the status screen on tty1)"),
            lines => lines.iter().for_each(|l| println!("  {l}")),
        }
    } else {
        println!("  installed into {} and enabled: it starts at boot, in setup mode;", layout.root.display());
        println!("  the setup code is then on tty1 and in the journal (journalctl -u tether.service)");
    }
}

pub fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let removed = install::uninstall(&args.root.root, args.purge)?;
    if removed.is_empty() {
        println!("nothing of tether is installed under {}", args.root.root.display());
    }
    for path in &removed {
        println!("removed {}", path.display());
    }
    if !args.purge {
        let layout = Layout::new(&args.root.root);
        let kept: Vec<_> = layout.data_files().into_iter().filter(|p| p.exists()).collect();
        if !kept.is_empty() {
            println!("kept the data (remove it with `tether uninstall --purge`):");
            kept.iter().for_each(|p| println!("  {}", p.display()));
        }
    }
    println!("the service users tether and tether-worker stay (their ids are never reused)");
    Ok(ExitCode::SUCCESS)
}
