//! `tether image write`: the firmware image onto a USB stick (or a disk),
//! from its signed image bundle. The bundle is verified first — signature
//! and the image's digest — and the device checked: a whole disk, not
//! read-only, large enough, and nothing on it in use (no mounted file
//! system, swap or device-mapper holder on it or its partitions: so never
//! the disk the running system is on). Then the image is written with
//! progress, flushed, read back and compared.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::disk::{self, Partition};
use tether_base::crypto::p256::PublicKey;
use tether_domain::firmware::{self, ImageManifest};
use tether_domain::release::Progress;
use tether_domain::signed_bundle::{self, Verified};

/// A whole disk that may be written.
#[derive(Debug, Clone)]
pub struct Target {
    pub device: PathBuf,
    /// The kernel's name for it (`sdb`).
    pub name: String,
    /// The disk's model, as the kernel has it, for the operator to recognise.
    pub model: String,
    pub bytes: u64,
    /// Its directory in /sys/class/block.
    pub sys: PathBuf,
}

impl Target {
    /// The disk as one partition, to write from its first byte.
    pub fn whole(&self) -> Partition {
        Partition {
            name: self.name.clone(),
            number: 0,
            device: self.device.clone(),
            partuuid: String::new(),
            bytes: self.bytes,
        }
    }
}

/// Checks that `device` is a whole disk nothing uses, and at least `needed` bytes.
pub fn target(device: &Path, needed: u64) -> anyhow::Result<Target> {
    let (sys, major, minor) = sys_dir(device)?;
    let name = sys.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    if sys.join("partition").exists() {
        bail!("{} is a partition; name the whole stick (the disk it is on)", device.display());
    }
    if read(&sys.join("ro")) == "1" {
        bail!("{} is read-only (a write-protect switch?)", device.display());
    }
    let bytes = read(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
    if bytes < needed {
        bail!("{} holds {bytes} bytes and the image is {needed}: use a larger stick", device.display());
    }
    // The disk and its partitions, by device number and by name.
    let mut parts = vec![(format!("{major}:{minor}"), name.clone(), sys.clone())];
    for item in std::fs::read_dir(&sys)? {
        let dir = item?.path();
        if dir.join("partition").exists() {
            let part = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            parts.push((read(&dir.join("dev")), part, dir));
        }
    }
    let mounted = mounted_devices()?;
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    for (number, part, dir) in &parts {
        if let Some(at) = mounted.iter().find(|(n, _)| n == number).map(|(_, at)| at) {
            bail!(
                "{} holds a mounted file system (/dev/{part} on {at}): refusing to write over it; unmount it first, \
                 and make sure it is the stick you mean",
                device.display()
            );
        }
        if swaps.lines().skip(1).any(|l| l.split_whitespace().next() == Some(&format!("/dev/{part}"))) {
            bail!("/dev/{part} on {} is in use as swap: refusing to write over it", device.display());
        }
        if std::fs::read_dir(dir.join("holders")).is_ok_and(|mut h| h.next().is_some()) {
            bail!("/dev/{part} on {} is in use (device-mapper, RAID): refusing to write over it", device.display());
        }
    }
    let model = read(&sys.join("device/model"));
    Ok(Target { device: device.to_owned(), name, model, bytes, sys })
}

/// The sysfs directory of the block device at `device`, and its numbers.
pub fn sys_dir(device: &Path) -> anyhow::Result<(PathBuf, u32, u32)> {
    let meta = std::fs::metadata(device).with_context(|| format!("{} is not there", device.display()))?;
    if !meta.file_type().is_block_device() {
        bail!("{} is not a disk (a block device); name the disk, e.g. /dev/sdb", device.display());
    }
    let (major, minor) = (rustix::fs::major(meta.rdev()), rustix::fs::minor(meta.rdev()));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))?;
    Ok((sys, major, minor))
}

/// What the write came to.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: ImageManifest,
    pub sha256: String,
}

/// Verifies `bundle` (signature, the image's digest), checks `device`,
/// asks `confirm` (shown the target), then writes, flushes and reads back.
pub fn write(
    bundle: &Path,
    device: &Path,
    trusted: &[PublicKey],
    confirm: &mut dyn FnMut(&Target) -> anyhow::Result<bool>,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Option<Written>> {
    let verified: Verified<ImageManifest> = firmware::verify_image(bundle, trusted, progress)
        .with_context(|| format!("{} does not verify, so nothing was written", bundle.display()))?;
    let section = &verified.sections[0];
    let (total, sha256) = (section.entry.size, section.entry.sha256.clone());
    let target = target(device, total)?;
    if !confirm(&target)? {
        return Ok(None);
    }
    let source = signed_bundle::open_section(bundle, section)?;
    let copied = disk::write_and_read_back(&target.whole(), source, total, "writing", progress)?;
    if copied.written != sha256 {
        bail!("{} changed after it was verified: write it again", bundle.display());
    }
    if copied.read_back != sha256 {
        bail!("{} does not read back as written: the stick may be failing; use another", device.display());
    }
    Ok(Some(Written { manifest: verified.manifest, sha256 }))
}

/// A sysfs attribute's text, trimmed ("" if it cannot be read).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// (major:minor, mount point) of every mounted file system.
fn mounted_devices() -> anyhow::Result<Vec<(String, String)>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let mut seen = HashSet::new();
    Ok(info
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            Some((fields.get(2)?.to_string(), fields.get(4)?.to_string()))
        })
        .filter(|(number, _)| seen.insert(number.clone()))
        .collect())
}
