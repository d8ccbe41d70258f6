//! The update uploaded in the console, applied as root by
//! `tether-firmware-upload.service` (started by its path unit when the
//! appliance hands a bundle over; see [`tether_domain::firmware::upload`]).
//! It is applied exactly as one from a USB stick — every check again —
//! with its progress and outcome kept in the upload directory's status
//! file, which the console shows. The bundle is removed afterwards,
//! whatever came of it, so the path unit does not start again.

use std::path::Path;

use anyhow::{Context, bail};

use super::Applied;
use tether_base::crypto::p256::PublicKey;
use tether_base::files::write_with_mode;
use tether_domain::firmware::upload::{HANDOFF, STATUS, Status};
use tether_domain::release::{Manifest, Progress, Version};
use tether_domain::signed_bundle::peek_manifest;

/// Applies the bundle handed over in `dir`; answers what was written.
pub fn apply(dir: &Path, trusted: &[PublicKey]) -> anyhow::Result<Applied> {
    let bundle = dir.join(HANDOFF);
    // The version the appliance checked, until the bundle itself is read.
    let version = Status::read(dir).map_or(Version(0, 0, 0), |s| s.version);
    let mut status = Status { state: Status::HANDED_OVER.into(), version, done: 0, total: 0, error: None };
    let mut applied = plain_file(&bundle).and_then(|()| {
        status.version = peek_manifest::<Manifest>(&bundle)
            .with_context(|| format!("{} is not a release bundle", bundle.display()))?
            .version;
        super::apply(&bundle, trusted, &mut |p| show(dir, &mut status, p))
    });
    match &applied {
        Ok(_) => status.state = Status::RESTARTING.into(),
        Err(e) => (status.state, status.error) = (Status::FAILED.into(), Some(format!("{e:#}"))),
    }
    if let Err(e) = keep(dir, &status) {
        applied = applied.and(Err(e));
    }
    let _ = std::fs::remove_file(&bundle);
    applied
}

/// At boot: an upload that was under way is over (its update's course is
/// in the audit log), and one handed over but not yet applied is dropped
/// rather than applied unasked after the restart.
pub fn clear_at_boot(dir: &Path) -> anyhow::Result<()> {
    if Status::read(dir).is_some_and(|s| s.under_way()) {
        std::fs::remove_file(dir.join(STATUS)).context("cannot clear the upload's status")?;
    }
    match std::fs::remove_file(dir.join(HANDOFF)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("cannot remove the uploaded bundle"),
        _ => Ok(()),
    }
}

/// The directory is the appliance's: the bundle must be a plain file, not
/// a link, a pipe or a device.
fn plain_file(bundle: &Path) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(bundle).with_context(|| format!("no update at {}", bundle.display()))?;
    if !meta.is_file() {
        bail!("{} is not a plain file", bundle.display());
    }
    Ok(())
}

/// Keeps progress for the console, each stage's every whole percent.
fn show(dir: &Path, status: &mut Status, p: Progress) {
    let percent = |done: u64, total: u64| done * 100 / total.max(1);
    if status.state == p.stage && percent(status.done, status.total) == percent(p.done, p.total) {
        return;
    }
    (status.state, status.done, status.total) = (p.stage.to_owned(), p.done, p.total);
    // Progress that cannot be kept does not stop the update.
    let _ = keep(dir, status);
}

fn keep(dir: &Path, status: &Status) -> anyhow::Result<()> {
    Ok(write_with_mode(&dir.join(STATUS), &serde_json::to_vec(status)?, 0o644)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str) -> Status {
        Status { state: state.into(), version: Version(0, 1, 2), done: 0, total: 0, error: None }
    }

    #[test]
    fn the_bundle_must_be_a_plain_file_and_a_boot_ends_an_upload_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join(HANDOFF);
        std::os::unix::fs::symlink("/etc/hostname", &bundle).unwrap();
        assert!(plain_file(&bundle).unwrap_err().to_string().contains("not a plain file"));
        // What the appliance planted, and a status under way: both gone at boot.
        keep(dir.path(), &status(Status::RESTARTING)).unwrap();
        clear_at_boot(dir.path()).unwrap();
        assert!(!bundle.exists() && !bundle.is_symlink() && Status::read(dir.path()).is_none());
        // A failed one stays for the console to show.
        keep(dir.path(), &status(Status::FAILED)).unwrap();
        clear_at_boot(dir.path()).unwrap();
        assert_eq!(Status::read(dir.path()).map(|s| s.state), Some(Status::FAILED.to_owned()));
    }

    #[test]
    fn progress_is_kept_at_each_stage_and_whole_percent() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = status(Status::HANDED_OVER);
        let at = |stage, done| Progress { stage, done, total: 1000 };
        show(dir.path(), &mut kept, at("verifying", 5));
        assert_eq!(Status::read(dir.path()).map(|s| (s.state, s.done)), Some(("verifying".into(), 5)));
        show(dir.path(), &mut kept, at("verifying", 9));
        assert_eq!(Status::read(dir.path()).unwrap().done, 5, "the same percent: not written again");
        show(dir.path(), &mut kept, at("verifying", 10));
        show(dir.path(), &mut kept, at("writing the slot", 10));
        assert_eq!(Status::read(dir.path()).map(|s| (s.state, s.done)), Some(("writing the slot".into(), 10)));
    }
}
