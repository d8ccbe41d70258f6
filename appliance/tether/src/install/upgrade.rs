//! Upgrading in place: stop, record, back up, switch, prove the new release
//! on the data — and going back by itself when it does not come up,
//! restoring the backup if the failed release changed the store's schema.
//! An upgrade under way is written down first, so an installer cut off
//! mid-way is undone by its next run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::health::{self, Health};
use super::layout::{Layout, MANIFEST, SERVICE};
use super::{
    Options, Outcome, Variant, accounts, place, prune, say, stamp, start_service, supervised, systemctl, tree,
};
use tether_base::clock::{Clock, SystemClock};
use tether_domain::release::{self, BINARY, Manifest, Progress};
use tether_store::Store;

pub(super) fn upgrade_to(
    layout: &Layout,
    old: Manifest,
    new: Manifest,
    variant: Variant,
    options: &Options,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Outcome> {
    if supervised(layout) {
        say("stopping the appliance");
        systemctl(&["stop", SERVICE])?;
    }
    let data = layout.data();
    let owner = accounts::lookup(&layout.root)?.appliance;
    tree::ensure_dir(&data, 0o700, owner)?;
    let before = Schema::of(&data)?;
    let backup = layout.backups().join(format!("{}-before-{}-{}", old.id(), new.id(), stamp()));
    let mut pending =
        Pending { from: old.id(), to: new.id(), backup: backup.clone(), before: before.clone(), backed_up: false };
    pending.write(layout)?;
    let (o, n, b) = (old.clone(), new.clone(), backup.clone());
    record(&data, &before, move |tx, now| release::record_upgrade_started(tx, now, &o, &n, &b))?;
    // The service user owns its data, whoever made it (and the store the installer just opened).
    tree::own(&data, owner)?;
    say(&format!("backing up {} to {}", data.display(), backup.display()));
    tree::ensure_dir(&layout.backups(), 0o700, (0, 0))?;
    let total = tree::size_of(&data)?;
    tree::copy(&data, &backup, &mut |done| progress(Progress { stage: "backing up", done, total }))?;
    pending.backed_up = true;
    pending.write(layout)?;

    let reason = match switch_and_check(layout, &old, &new, owner, options) {
        Ok(status) => {
            Pending::clear(layout)?;
            prune(layout, &new)?;
            return Ok(Outcome::Upgraded { from: old, to: new, variant, status, backup });
        }
        Err(reason) => reason,
    };
    say(&format!("tether {} did not come up; going back to {}", new.version, old.version));
    let restored = roll_back(layout, &old, &new, &before, Some(&backup), &reason, progress)?;
    Ok(Outcome::RolledBack { from: old, to: new, reason, backup: Some(backup), restored })
}

/// Makes `new` current and proves it comes up on the data; then records
/// the upgrade and, on a host, has systemd start it. Answers its status, or
/// why it is not up (whatever failed: the check, or a step around it).
fn switch_and_check(
    layout: &Layout,
    old: &Manifest,
    new: &Manifest,
    owner: (u32, u32),
    options: &Options,
) -> Result<String, String> {
    let data = layout.data();
    let attempt = || -> anyhow::Result<Result<String, String>> {
        place(layout, new)?;
        say("checking that it comes up on this data");
        let binary = layout.version(&new.id()).join(BINARY);
        let status = match health::check(&binary, &data, owner, options.health_timeout)? {
            Health::Ready { status } => status,
            Health::Failed { reason } => return Ok(Err(reason)),
        };
        let (o, n, s) = (old.clone(), new.clone(), status.clone());
        record_if_set_up(&data, move |tx, now| release::record_upgraded(tx, now, &o, &n, &s))?;
        tree::own(&data, owner)?;
        if supervised(layout) {
            start_service().context("systemd could not start it")?;
        }
        Ok(Ok(status))
    };
    attempt().unwrap_or_else(|e| Err(format!("{e:#}")))
}

/// Makes `old` current again; restores the backup if the failed release
/// changed the store's schema (keeping what it left, beside the backups).
/// `backup` is `None` when it was never finished (the new release never
/// ran then, so the data is as it was). Answers whether it restored.
fn roll_back(
    layout: &Layout,
    old: &Manifest,
    new: &Manifest,
    before: &Schema,
    backup: Option<&Path>,
    reason: &str,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<bool> {
    if supervised(layout) {
        let _ = systemctl(&["stop", SERVICE]);
    }
    let owner = place(layout, old)?.appliance;
    let data = layout.data();
    let after = Schema::of(&data)?;
    let restore = after != *before;
    if restore {
        let Some(backup) = backup else {
            bail!(
                "the data changed ({before} before, {after} now) and no whole backup of it was taken; nothing was \
                 restored, and {} is left as it is",
                data.display()
            );
        };
        let left = layout.backups().join(format!("{}-failed-{}", new.id(), stamp()));
        say(&format!(
            "the store's schema changed ({before} before, {after} now): restoring the backup; what {} left is kept at {}",
            new.version,
            left.display()
        ));
        std::fs::rename(&data, &left).with_context(|| format!("cannot move {} aside", data.display()))?;
        let total = tree::size_of(backup)?;
        tree::copy(backup, &data, &mut |done| progress(Progress { stage: "restoring", done, total }))?;
    }
    let (o, n, why) = (old.clone(), new.clone(), reason.to_owned());
    let schema = if restore { Schema::of(&data)? } else { after };
    record(&data, &schema, move |tx, now| release::record_rolled_back(tx, now, &o, &n, &why, restore))?;
    tree::own(&data, owner)?;
    Pending::clear(layout)?;
    if supervised(layout) {
        start_service().context("the old release is current again, but systemd could not start it")?;
    }
    Ok(restore)
}

/// An upgrade under way, kept in `/opt/tether/upgrading.json` from before
/// the appliance's data is touched until the upgrade is done or undone: if
/// the installer is cut off (power, a closed terminal), its next run
/// finishes undoing it before anything else.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Pending {
    from: String,
    to: String,
    backup: PathBuf,
    before: Schema,
    /// Whether the backup is whole (the new release runs only after it is).
    backed_up: bool,
}

impl Pending {
    fn path(layout: &Layout) -> PathBuf {
        layout.opt().join("upgrading.json")
    }

    pub(super) fn read(layout: &Layout) -> anyhow::Result<Option<Pending>> {
        match std::fs::read(Pending::path(layout)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", Pending::path(layout).display())),
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is damaged: remove it once the install is as it should be", Pending::path(layout).display())
            })?)),
        }
    }

    fn write(&self, layout: &Layout) -> anyhow::Result<()> {
        tree::write_file(&Pending::path(layout), &serde_json::to_vec_pretty(self)?, 0o600)
    }

    fn clear(layout: &Layout) -> anyhow::Result<()> {
        tree::remove(&Pending::path(layout)).map(drop)
    }
}

/// Undoes an upgrade an earlier run did not finish: the old release
/// current again, its data as it was.
pub(super) fn finish_undoing(
    layout: &Layout,
    pending: Pending,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<()> {
    let manifest = |id: &str| -> anyhow::Result<Manifest> {
        let path = layout.version(id).join(MANIFEST);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    };
    let (old, new) = (manifest(&pending.from)?, manifest(&pending.to)?);
    say(&format!(
        "an upgrade from tether {} to {} did not finish (the installer was stopped); going back to {} first",
        old.version, new.version, old.version
    ));
    let backup = pending.backed_up.then_some(pending.backup.as_path());
    let reason = "the installer was stopped before the upgrade finished";
    roll_back(layout, &old, &new, &pending.before, backup, reason, progress)?;
    say(&format!("tether {} is current again", old.version));
    Ok(())
}

/// What a data directory's store says its schema is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Schema {
    /// No store yet: the appliance was never set up.
    None,
    Version(u64),
    /// It does not open (the reason): counted as changed.
    Unreadable(String),
}

impl Schema {
    fn of(data: &Path) -> anyhow::Result<Schema> {
        if !data.join(tether_store::DB_FILE).exists() {
            return Ok(Schema::None);
        }
        match Store::open(data).and_then(|store| store.schema_version()) {
            Ok(version) => Ok(Schema::Version(version)),
            Err(tether_store::Error::AlreadyOpen) => {
                bail!("the appliance is running on {}; stop it first (systemctl stop tether)", data.display())
            }
            Err(tether_store::Error::SchemaTooNew { found, .. }) => Ok(Schema::Version(found)),
            Err(other) => Ok(Schema::Unreadable(other.to_string())),
        }
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schema::None => f.write_str("no store"),
            Schema::Version(v) => write!(f, "schema {v}"),
            Schema::Unreadable(why) => write!(f, "unreadable: {why}"),
        }
    }
}

/// Appends one audit record to the stopped appliance's log, if it was set
/// up (its store opens).
pub fn record_if_set_up(
    data: &Path,
    event: impl FnOnce(&mut tether_store::WriteTx<'_>, tether_base::clock::Timestamp) -> Result<u64, tether_store::Error>
    + Send
    + 'static,
) -> anyhow::Result<()> {
    record(data, &Schema::of(data)?, event)
}

/// Appends one audit record to the stopped appliance's log, when it has a
/// store that opens (`schema` says so).
fn record(
    data: &Path,
    schema: &Schema,
    event: impl FnOnce(&mut tether_store::WriteTx<'_>, tether_base::clock::Timestamp) -> Result<u64, tether_store::Error>
    + Send
    + 'static,
) -> anyhow::Result<()> {
    if !matches!(schema, Schema::Version(_)) {
        return Ok(());
    }
    let store = Store::open(data).with_context(|| format!("opening {} to record in its audit log", data.display()))?;
    let now = SystemClock.now();
    store.write_blocking(move |tx| event(tx, now)).context("recording in the audit log")?;
    Ok(())
}
