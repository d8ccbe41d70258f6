//! A firmware update on a USB stick, offered on the status screen: when a
//! stick's file system appears (`tether-usb@.service`, from a udev rule),
//! it is mounted read-only and the newest release bundle on it that
//! carries the firmware image is offered. Nothing is checked or written
//! until someone at the machine asks for it there; then `tether update
//! apply` checks it as every update is checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use tether_domain::firmware;
use tether_domain::release::{Manifest, Version};
use tether_domain::signed_bundle::peek_manifest;

/// Where sticks are mounted, and the offer kept.
pub const OFFERS_DIR: &str = "/run/tether-usb";
const OFFER: &str = "offer.json";

/// What the screen offers: a bundle on a stick, by what its manifest says
/// (not yet verified: that is the update's first step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub device: PathBuf,
    pub bundle: PathBuf,
    pub version: Version,
}

impl Offer {
    /// The offer on the screen now, if any.
    pub fn current(dir: &Path) -> Option<Offer> {
        serde_json::from_slice(&std::fs::read(dir.join(OFFER)).ok()?).ok()
    }
}

/// Mounts the stick at `device` read-only and offers its newest firmware
/// update; a stick without one is unmounted again.
pub fn offer(dir: &Path, device: &Path) -> anyhow::Result<Option<Offer>> {
    let mount = mount_point(dir, device)?;
    std::fs::create_dir_all(&mount)?;
    let mounted = Command::new("mount")
        .args(["-o", "ro,nosuid,nodev,noexec"])
        .arg(device)
        .arg(&mount)
        .status()
        .context("cannot run mount")?;
    if !mounted.success() {
        bail!("cannot mount {} read-only", device.display());
    }
    let mut newest: Option<Offer> = None;
    for item in std::fs::read_dir(&mount)? {
        let path = item?.path();
        if path.extension().is_none_or(|e| e != "bundle") {
            continue;
        }
        let Ok(manifest) = peek_manifest::<Manifest>(&path) else { continue };
        if !firmware::FILES.iter().all(|f| manifest.has(f)) {
            continue;
        }
        if newest.as_ref().is_none_or(|o| manifest.version > o.version) {
            newest = Some(Offer { device: device.to_owned(), bundle: path, version: manifest.version });
        }
    }
    match &newest {
        Some(offer) => super::boot::write_synced(&dir.join(OFFER), &serde_json::to_vec(offer)?)?,
        None => unmount(&mount),
    }
    Ok(newest)
}

/// The stick went: its offer goes, and its mount.
pub fn withdraw(dir: &Path, device: &Path) -> anyhow::Result<()> {
    if Offer::current(dir).is_some_and(|o| o.device == device) {
        std::fs::remove_file(dir.join(OFFER))?;
    }
    unmount(&mount_point(dir, device)?);
    Ok(())
}

fn mount_point(dir: &Path, device: &Path) -> anyhow::Result<PathBuf> {
    let name = device.file_name().and_then(|n| n.to_str()).context("the stick's device has no name")?;
    Ok(dir.join(name))
}

fn unmount(mount: &Path) {
    let _ = Command::new("umount").arg("--lazy").arg(mount).status();
    let _ = std::fs::remove_dir(mount);
}
