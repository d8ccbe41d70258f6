//! `tether install`, `tether install --upgrade`, `tether uninstall`: putting
//! a verified release bundle on a host (or into a root directory), and
//! taking it off.
//!
//! Everything is checked before a byte is written: the bundle's signature
//! and every file's digest, whether it may go over what is installed
//! ([`release::decide`]), the tools and the room it needs. A refused bundle
//! leaves the tree as it was. Then:
//!
//! - **install** copies the release into its own directory (digests checked
//!   again on the way, so a bundle swapped after verifying is caught), makes
//!   the service users, places the units and the `current` link, and proves
//!   the release comes up ([`health`]) before systemd is asked to run it;
//! - **upgrade** also stops the appliance, records the upgrade in its audit
//!   log, backs the data directory up, switches `current`, and proves the
//!   new release comes up on that data. If it does not, `current` goes back,
//!   the backup is restored when the new release changed the store's schema,
//!   and the rollback is recorded too;
//! - **uninstall** removes the program and keeps the data unless purging.
//!
//! Where things go is [`layout`].

mod accounts;
pub mod health;
pub mod layout;
mod tree;
mod upgrade;

pub use upgrade::record_if_set_up;
use upgrade::{Pending, finish_undoing, upgrade_to};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use accounts::Accounts;
use health::Health;
use layout::{Layout, MANIFEST, ROLE, SERVICE, VARIANT, WORKER_SERVICE};
use tether_base::clock::{Clock, SystemClock};
use tether_base::crypto::p256::PublicKey;
use tether_domain::release::{self, BINARY, Decision, FIPS_BINARY, Manifest, Progress, Verified};
use tether_domain::signed_bundle::Digesting;

/// Older releases kept beside the current one, to go back to by hand.
const KEPT_RELEASES: usize = 1;

/// What the operator chose.
#[derive(Debug, Clone)]
pub struct Options {
    /// `/` on a host; a directory to install into otherwise.
    pub root: PathBuf,
    /// The keys a bundle may be signed by: the pinned release key, and any named with `--trust`.
    pub trusted: Vec<PublicKey>,
    /// How long a release has to report ready.
    pub health_timeout: Duration,
    /// Run the bundle's FIPS build. An upgrade keeps the build that runs
    /// unless this asks for FIPS.
    pub fips: bool,
    /// This host runs a worker, not the appliance. An upgrade keeps the
    /// role the host has.
    pub worker: bool,
}

/// What a host runs: the appliance, or a worker that pulls from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Appliance,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Appliance => "appliance",
            Role::Worker => "worker",
        }
    }

    /// The role of the current release (the appliance if it does not say).
    fn installed(layout: &Layout) -> Role {
        match std::fs::read_to_string(layout.current().join(ROLE)) {
            Ok(text) if text.trim() == Role::Worker.name() => Role::Worker,
            _ => Role::Appliance,
        }
    }
}

/// Which of the bundle's builds runs (installed as `tether`; the other is
/// left out, so a FIPS host holds only the FIPS build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Standard,
    Fips,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Standard => "standard",
            Variant::Fips => "fips",
        }
    }

    /// The bundle file that is installed as `tether`.
    fn source(self) -> &'static str {
        match self {
            Variant::Standard => BINARY,
            Variant::Fips => FIPS_BINARY,
        }
    }

    /// The build the current release runs (standard if it does not say).
    fn installed(layout: &Layout) -> Variant {
        match std::fs::read_to_string(layout.current().join(VARIANT)) {
            Ok(text) if text.trim() == Variant::Fips.name() => Variant::Fips,
            _ => Variant::Standard,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Standard => "the standard build",
            Variant::Fips => "the FIPS build",
        })
    }
}

/// How an install or upgrade ended.
#[derive(Debug)]
pub enum Outcome {
    Installed {
        release: Manifest,
        variant: Variant,
        status: String,
    },
    Upgraded {
        from: Manifest,
        to: Manifest,
        variant: Variant,
        status: String,
        backup: PathBuf,
    },
    AlreadyInstalled {
        release: Manifest,
    },
    /// The new release did not come up; the old one is current again.
    RolledBack {
        from: Manifest,
        to: Manifest,
        reason: String,
        /// The data's backup (a worker host's upgrade takes none).
        backup: Option<PathBuf>,
        restored: bool,
    },
    /// A worker host installed or upgraded (`from`); `started` if its join
    /// settings were there and systemd started it.
    Worker {
        release: Manifest,
        from: Option<Manifest>,
        variant: Variant,
        started: bool,
    },
}

/// Verifies the bundle at `bundle` fully, then installs or upgrades.
/// `progress` hears the long steps (verifying, copying, backing up).
pub fn install(
    bundle: &Path,
    upgrade: bool,
    options: &Options,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Outcome> {
    must_be_root("installing")?;
    let layout = Layout::new(&absolute_root(&options.root)?);
    if let Some(pending) = Pending::read(&layout)? {
        let _lock = lock(&layout.root, "a tether install or uninstall")?;
        finish_undoing(&layout, pending, progress)?;
    }
    let verified = release::verify(bundle, &options.trusted, progress)
        .with_context(|| format!("{} does not verify, so nothing was installed", bundle.display()))?;
    let installed = installed(&layout)?;
    let decision = release::decide(&verified.manifest, installed.as_ref(), upgrade)?;
    let new = verified.manifest.clone();
    if decision == Decision::AlreadyInstalled {
        return Ok(Outcome::AlreadyInstalled { release: new });
    }
    let role = match (installed.is_some().then(|| Role::installed(&layout)), options.worker) {
        (Some(Role::Appliance), true) => bail!(
            "this host runs the appliance; to make it a worker host, uninstall first (`tether uninstall`; the \
             appliance's data stays unless --purge)"
        ),
        (Some(role), _) => role,
        (None, true) => Role::Worker,
        (None, false) => Role::Appliance,
    };
    let variant = if options.fips { Variant::Fips } else { Variant::installed(&layout) };
    if variant == Variant::Fips && !new.has(FIPS_BINARY) {
        bail!(
            "this bundle carries no FIPS build ({FIPS_BINARY}){}; make one with `scripts/make-bundle.sh --fips`",
            if options.fips { "" } else { ", and the installed release runs the FIPS build" }
        );
    }
    accounts::check_tools()?;
    let backup_bytes = if upgrade && layout.data().exists() { tree::size_of(&layout.data())? } else { 0 };
    check_room(&layout, new.total_bytes() + backup_bytes)?;
    let _lock = lock(&layout.root, "a tether install or uninstall")?;

    say(&format!("installing tether {} into {}", new.version, layout.version(&new.id()).display()));
    write_release(&layout, bundle, &verified, variant, role, progress)?;
    match (role, decision, installed) {
        (Role::Worker, _, old) => worker_host(&layout, old, new, variant),
        (Role::Appliance, Decision::Upgrade { .. }, Some(old)) => {
            upgrade_to(&layout, old, new, variant, options, progress)
        }
        (Role::Appliance, _, _) => install_fresh(&layout, new, variant, options),
    }
}

/// The release `current` points at, by the manifest it keeps.
pub fn installed(layout: &Layout) -> anyhow::Result<Option<Manifest>> {
    let current = layout.current();
    if std::fs::symlink_metadata(&current).is_err() {
        return Ok(None);
    }
    let path = current.join(MANIFEST);
    let bytes = std::fs::read(&path).with_context(|| {
        format!("{} is there but {} is not readable: the install is damaged", current.display(), path.display())
    })?;
    Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is not a release manifest", path.display()))?))
}

fn install_fresh(layout: &Layout, new: Manifest, variant: Variant, options: &Options) -> anyhow::Result<Outcome> {
    let accounts = place(layout, &new)?;
    let binary = layout.version(&new.id()).join(BINARY);
    say("checking that it comes up");
    let status = match health::check(&binary, &layout.data(), accounts.appliance, options.health_timeout)? {
        Health::Ready { status } => status,
        Health::Failed { reason } => {
            for path in layout.program_files() {
                tree::remove(&path)?;
            }
            bail!("tether {} did not come up, so it was not installed: {reason}", new.version);
        }
    };
    enable(layout, SERVICE)?;
    if supervised(layout) {
        start_service()?;
    }
    prune(layout, &new)?;
    Ok(Outcome::Installed { release: new, variant, status })
}

/// A worker host: the release placed and its build proven to run as the
/// worker's user, the worker's unit enabled, and started when its join
/// settings (`/etc/tether/worker.env`) are there. The worker's state
/// directory is its own identity: an upgrade switches the program only, and
/// goes back if the new one does not run.
fn worker_host(layout: &Layout, old: Option<Manifest>, new: Manifest, variant: Variant) -> anyhow::Result<Outcome> {
    if old.is_some() && supervised(layout) {
        systemctl(&["stop", WORKER_SERVICE])?;
    }
    let accounts = place(layout, &new)?;
    say("checking that it runs");
    let binary = layout.version(&new.id()).join(BINARY);
    if let Health::Failed { reason } = health::runs(&binary, accounts.worker)? {
        let Some(old) = old else {
            for path in layout.program_files() {
                tree::remove(&path)?;
            }
            bail!("tether {} does not run here, so it was not installed: {reason}", new.version);
        };
        place(layout, &old)?;
        start_worker(layout)?;
        return Ok(Outcome::RolledBack { from: old, to: new, reason, backup: None, restored: false });
    }
    enable(layout, WORKER_SERVICE)?;
    let started = start_worker(layout)?;
    prune(layout, &new)?;
    Ok(Outcome::Worker { release: new, from: old, variant, started })
}

/// Starts the worker under systemd if it can enrol or has: its join
/// settings are there. Answers whether it started.
fn start_worker(layout: &Layout) -> anyhow::Result<bool> {
    if !supervised(layout) || !layout.config().join("worker.env").exists() {
        return Ok(false);
    }
    systemctl(&["start", WORKER_SERVICE])?;
    Ok(true)
}

/// Copies the verified release into `versions/<id>`, checking every file's
/// digest again as it is written, with `variant`'s build as `tether`; the
/// directory appears whole or not at all.
fn write_release(
    layout: &Layout,
    bundle: &Path,
    verified: &Verified,
    variant: Variant,
    role: Role,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<()> {
    let manifest = &verified.manifest;
    let dir = layout.version(&manifest.id());
    let partial = dir.with_extension("partial");
    tree::remove(&partial)?;
    tree::remove(&dir)?;
    tree::ensure_dir(&layout.opt(), 0o755, (0, 0))?;
    tree::ensure_dir(&layout.versions(), 0o755, (0, 0))?;
    tree::ensure_dir(&partial, 0o755, (0, 0))?;
    // The variant's build goes in as `tether`; the other build stays out.
    let placed: Vec<_> = verified
        .sections
        .iter()
        .filter_map(|section| match section.entry.path.as_str() {
            p if p == variant.source() => Some((section, partial.join(BINARY))),
            BINARY | FIPS_BINARY => None,
            p => Some((section, partial.join(p))),
        })
        .collect();
    let total = placed.iter().map(|(section, _)| section.entry.size).sum();
    let mut done = 0;
    for (section, target) in placed {
        let path = section.entry.path.as_str();
        if let Some(parent) = target.parent() {
            tree::ensure_dir(parent, 0o755, (0, 0))?;
        }
        let mut tick = |n| {
            done += n;
            progress(Progress { stage: "copying", done, total });
        };
        let mut reader = Digesting::new(release::open_section(bundle, section)?, &mut tick);
        let executable = path == variant.source();
        tree::write_from(&target, &mut reader, if executable { 0o755 } else { 0o644 })?;
        // The bytes written are the bytes hashed: a bundle changed since it
        // was verified is caught here, before the release can become current.
        if reader.finish() != section.entry.sha256 {
            tree::remove(&partial)?;
            bail!("{} changed after it was verified ({path}): nothing was installed", bundle.display());
        }
    }
    tree::write_file(&partial.join(MANIFEST), &serde_json::to_vec_pretty(manifest)?, 0o644)?;
    tree::write_file(&partial.join(VARIANT), format!("{}\n", variant.name()).as_bytes(), 0o644)?;
    tree::write_file(&partial.join(ROLE), format!("{}\n", role.name()).as_bytes(), 0o644)?;
    std::fs::rename(&partial, &dir).with_context(|| format!("cannot move {} into place", dir.display()))?;
    tree::sync_parent(&dir)
}

/// Makes `release` the current one: its sysusers and tmpfiles files, the
/// users, the directories, its units, and the links. Answers the users.
fn place(layout: &Layout, release: &Manifest) -> anyhow::Result<Accounts> {
    let dir = layout.version(&release.id());
    let from_release = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = dir.join("systemd").join(name);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    for (target, name) in [
        (layout.sysusers(), "tether.sysusers"),
        (layout.tmpfiles(), "tether.tmpfiles"),
        (layout.unit(SERVICE), SERVICE),
        (layout.unit(WORKER_SERVICE), WORKER_SERVICE),
    ] {
        tree::ensure_dir(target.parent().unwrap_or(&layout.root), 0o755, (0, 0))?;
        tree::write_file(&target, &from_release(name)?, 0o644)?;
    }
    let accounts = accounts::ensure(&layout.root, &layout.sysusers())?;
    tree::ensure_dir(&layout.data(), 0o700, accounts.appliance)?;
    tree::ensure_dir(&layout.worker_data(), 0o700, accounts.worker)?;
    tree::ensure_dir(&layout.config(), 0o750, (0, accounts.worker.1))?;
    tree::ensure_dir(&layout.backups(), 0o700, (0, 0))?;
    tree::switch_link(&layout.current(), Path::new("versions").join(release.id()).as_path())?;
    tree::ensure_dir(layout.bin_link().parent().unwrap_or(&layout.root), 0o755, (0, 0))?;
    tree::switch_link(&layout.bin_link(), Path::new("/opt/tether/current/tether"))?;
    if supervised(layout) {
        systemctl(&["daemon-reload"])?;
    }
    Ok(accounts)
}

/// Removes releases other than `current` and the [`KEPT_RELEASES`] newest before it.
fn prune(layout: &Layout, current: &Manifest) -> anyhow::Result<()> {
    let mut others = Vec::new();
    for entry in std::fs::read_dir(layout.versions())? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n != current.id().as_str()) {
            let manifest =
                std::fs::read(path.join(MANIFEST)).ok().and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
            others.push((manifest.map(|m| m.version), path));
        }
    }
    others.sort();
    let stale = others.len().saturating_sub(KEPT_RELEASES);
    for (_, path) in others.into_iter().take(stale) {
        tree::remove(&path)?;
    }
    Ok(())
}

/// Takes the program off; with `purge`, the data, settings and backups too.
/// Answers what it removed.
pub fn uninstall(root: &Path, purge: bool) -> anyhow::Result<Vec<PathBuf>> {
    must_be_root("uninstalling")?;
    let layout = Layout::new(&absolute_root(root)?);
    let _lock = lock(&layout.root, "a tether install or uninstall")?;
    if supervised(&layout) {
        let _ = systemctl(&["disable", "--now", SERVICE, WORKER_SERVICE]);
    } else if layout.unit(SERVICE).exists() {
        let _ = systemctl_in(&layout, &["disable", SERVICE, WORKER_SERVICE]);
    }
    let mut removed = Vec::new();
    let mut paths = layout.program_files();
    if purge {
        paths.extend(layout.data_files());
    }
    for path in paths {
        if tree::remove(&path)? {
            removed.push(path);
        }
    }
    if supervised(&layout) {
        let _ = systemctl(&["daemon-reload"]);
    }
    Ok(removed)
}

/// Whether systemd runs this host's services and the root is this host:
/// then units are started and stopped; otherwise only placed.
fn supervised(layout: &Layout) -> bool {
    layout.root == Path::new("/") && Path::new("/run/systemd/system").exists()
}

/// Enables `unit` at boot (in the root: systemd reads the link then).
fn enable(layout: &Layout, unit: &str) -> anyhow::Result<()> {
    if supervised(layout) { systemctl(&["enable", unit]) } else { systemctl_in(layout, &["enable", unit]) }
}

/// Starts the appliance under systemd and waits for it: the unit is
/// `Type=notify`, so `systemctl start` returns once it said `READY=1`.
fn start_service() -> anyhow::Result<()> {
    systemctl(&["start", SERVICE])
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    run_systemctl(Command::new("systemctl").args(args))
}

fn systemctl_in(layout: &Layout, args: &[&str]) -> anyhow::Result<()> {
    run_systemctl(Command::new("systemctl").arg(format!("--root={}", layout.root.display())).args(args))
}

fn run_systemctl(command: &mut Command) -> anyhow::Result<()> {
    let out = command.output().context("cannot run systemctl")?;
    if !out.status.success() {
        bail!("{:?} failed ({}): {}", command, out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The root as an absolute path (the release is started from inside it,
/// with `/` as its working directory).
fn absolute_root(root: &Path) -> anyhow::Result<PathBuf> {
    let absolute =
        root.canonicalize().with_context(|| format!("{} is not a directory to install into", root.display()))?;
    if !absolute.is_dir() {
        bail!("{} is not a directory to install into", root.display());
    }
    Ok(absolute)
}

/// Installing (and updating the firmware) writes users, units, files and
/// disks only root may.
pub(crate) fn must_be_root(doing: &str) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("{doing} needs root (run it with sudo, or as root at the console)");
    }
    Ok(())
}

/// One `what` at a time: an exclusive lock on the directory `dir` itself
/// (an install's root), so taking it writes nothing.
pub(crate) fn lock(dir: &Path, what: &str) -> anyhow::Result<std::fs::File> {
    let handle = std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    rustix::fs::flock(&handle, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| anyhow::anyhow!("another {what} is running on {}", dir.display()))?;
    Ok(handle)
}

/// Room for the release (and the backup) where `/opt` lives, with a margin.
fn check_room(layout: &Layout, bytes: u64) -> anyhow::Result<()> {
    let mut probe = layout.opt();
    while !probe.exists() {
        if !probe.pop() {
            return Ok(());
        }
    }
    let stat =
        rustix::fs::statvfs(&probe).with_context(|| format!("cannot read the free space of {}", probe.display()))?;
    let free = stat.f_bavail * stat.f_frsize;
    let needed = bytes + bytes / 10 + (64 << 20);
    if free < needed {
        bail!(
            "{} has {} free; installing needs {} (the release, the backup of the data, and a margin)",
            probe.display(),
            crate::cli::progress::size(free),
            crate::cli::progress::size(needed)
        );
    }
    Ok(())
}

/// Now, for names of backups: `20261204T213000Z`.
fn stamp() -> String {
    let t = SystemClock.now().to_offset_date_time();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn say(line: &str) {
    eprintln!("{line}");
}
