//! Installing the image onto a machine's internal disk, from the USB stick
//! the machine started from (the same image, written by `tether image
//! write`). Started from a USB stick, the initramfs leaves [`MARKER`] and
//! the machine runs the installer instead of the appliance; the stick's
//! data partition is never mounted, so the stick stays as written.
//!
//! An install copies the image from the stick byte for byte (its extent
//! is the stick's GPT's: the backup header ends it), reads it back and
//! compares, then makes the copy a machine of its own: a new disk GUID and
//! new partition GUIDs, the boot entries repointed at them (they pin their
//! root by PARTUUID; a stick left plugged in must never be booted or
//! written in the disk's place), the site's settings on the data partition
//! ([`super::site`], in the appliance's data directory there), and the
//! firmware told to boot the disk first.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::boot::Esp;
use super::disk::{self, Cmdline, Disk};
use super::site::{Site, StaticNetwork};
use super::writer::{self, Target};
use tether_domain::release::Progress;

/// Left by the initramfs when the machine started from a USB stick.
pub const MARKER: &str = "/run/tether-installer";
/// Held while an install runs: one at a time, whichever console starts it.
const LOCK: &str = "/run/tether-installer.lock";
/// The answer file's name, on the stick's EFI system partition (the one
/// part of the stick any computer can open and write), mounted at /boot.
const ANSWERS_NAME: &str = "tether-install.toml";
pub const ANSWERS_FILE: &str = "/boot/tether-install.toml";
/// The name of the firmware's boot entry for the installed disk.
const BOOT_LABEL: &str = "Tether";
/// systemd-boot, as the image's ESP has it.
const LOADER: &str = r"\EFI\BOOT\BOOTX64.EFI";
/// Where the installed disk's partitions are mounted while they are finished.
const MOUNTS: &str = "/run/tether-install";

/// Whether this machine runs the installer (it started from a USB stick).
pub fn running() -> bool {
    Path::new(MARKER).exists()
}

/// What an unattended install is told, in `tether-install.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// The disk to install to, as `/dev/sda`, or `auto`: the one internal
    /// disk there is (refused when there are several).
    pub disk: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub network: Option<StaticNetwork>,
    #[serde(default)]
    pub ntp: Vec<String>,
}

impl Answers {
    pub fn read(path: &Path) -> anyhow::Result<Option<Answers>> {
        let Some(text) = tether_base::files::read_if_present(path)? else { return Ok(None) };
        let answers: Answers = toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        answers.site().check().with_context(|| format!("{} is not valid", path.display()))?;
        Ok(Some(answers))
    }

    pub fn site(&self) -> Site {
        Site { hostname: self.hostname.clone(), network: self.network.clone(), ntp: self.ntp.clone() }
    }
}

/// The USB stick the machine runs from, and how much of it is the image.
#[derive(Debug, Clone)]
pub struct Stick {
    pub disk: Disk,
    pub image_bytes: u64,
}

impl Stick {
    pub fn this() -> anyhow::Result<Stick> {
        let disk = Disk::booted(&Cmdline::read(Path::new("/proc/cmdline"))?)?;
        let image_bytes = image_extent(&disk.device)?;
        Ok(Stick { disk, image_bytes })
    }
}

/// The bytes of the image at the start of `device`: up to the end of its
/// GPT's backup header, which the primary header locates (the stick's is
/// the image's own: nothing grows the stick's partitions).
fn image_extent(device: &Path) -> anyhow::Result<u64> {
    let mut header = [0u8; 92];
    File::open(device)
        .and_then(|f| f.read_exact_at(&mut header, 512))
        .with_context(|| format!("cannot read the partition table of {}", device.display()))?;
    if &header[..8] != b"EFI PART" {
        bail!("{} has no GPT partition table: it is not the firmware image", device.display());
    }
    let mut backup_lba = [0u8; 8];
    backup_lba.copy_from_slice(&header[32..40]);
    let backup_lba = u64::from_le_bytes(backup_lba);
    Ok((backup_lba + 1) * 512)
}

/// A disk of the machine, and why it is not offered, if it is not.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub device: PathBuf,
    pub model: String,
    pub bytes: u64,
    pub refused: Option<String>,
}

/// Every disk of the machine (not loop, RAM, optical or device-mapper ones),
/// offered or not.
pub fn candidates(stick: &Stick) -> anyhow::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .context("cannot list the disks (/sys/block)")?
        .filter_map(|item| item.ok()?.file_name().into_string().ok())
        .filter(|name| !["loop", "ram", "zram", "sr", "dm-", "md", "fd"].iter().any(|p| name.starts_with(p)))
        .collect();
    names.sort();
    for name in names {
        let device = Path::new("/dev").join(&name);
        let sys = Path::new("/sys/block").join(&name);
        let bytes = writer::read(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
        let model = writer::read(&sys.join("device/model"));
        if bytes == 0 {
            continue;
        }
        let refused = match check(stick, &device) {
            Ok(_) => None,
            Err(e) => Some(format!("{e:#}")),
        };
        out.push(Candidate { device, model, bytes, refused });
    }
    Ok(out)
}

/// The disk `wanted` names (or, for `auto`, the one offered), checked.
pub fn choose(stick: &Stick, wanted: &str) -> anyhow::Result<Target> {
    if wanted != "auto" {
        return check(stick, Path::new(wanted));
    }
    let all = candidates(stick)?;
    let offered: Vec<&Candidate> = all.iter().filter(|c| c.refused.is_none()).collect();
    match offered.as_slice() {
        [one] => check(stick, &one.device),
        [] => bail!("disk = \"auto\", and no disk here can take the appliance: {}", list(&all)),
        _ => bail!("disk = \"auto\", and there are several disks: name one ({})", list(&all)),
    }
}

fn list(all: &[Candidate]) -> String {
    all.iter()
        .map(|c| match &c.refused {
            None => format!("{} offered", c.device.display()),
            Some(why) => format!("{}: {why}", c.device.display()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether the image may be installed on `device`: not the stick, not
/// another USB disk (it would start the installer again), and as the USB
/// writer checks any disk (whole, writable, large enough, nothing in use).
fn check(stick: &Stick, device: &Path) -> anyhow::Result<Target> {
    let (sys, _, _) = writer::sys_dir(device)?;
    if std::fs::canonicalize(&stick.disk.sys).is_ok_and(|stick| stick == sys) {
        bail!("{} is the USB stick this installer runs from", device.display());
    }
    let target = writer::target(device, stick.image_bytes)?;
    if sys.components().any(|c| c.as_os_str().to_string_lossy().starts_with("usb")) {
        bail!(
            "{} is a USB disk: started from it, the machine would run the installer again; install to an internal \
             disk",
            device.display()
        );
    }
    Ok(target)
}

/// One install at a time, from whichever console or the answer file.
pub fn lock() -> anyhow::Result<File> {
    let file = File::options().create(true).truncate(false).write(true).open(LOCK)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        anyhow::anyhow!("an install is already running (on another console, or unattended from tether-install.toml)")
    })?;
    Ok(file)
}

/// What an install came to.
#[derive(Debug, Clone)]
pub struct Installed {
    pub sha256: String,
    pub bytes: u64,
    /// Whether the firmware was told to boot the disk first (it boots the
    /// stick again otherwise, until the stick is taken out).
    pub boot_entry: Result<(), String>,
}

/// Installs the image from `stick` onto `target`, with `site`'s settings.
pub fn install(
    stick: &Stick,
    target: &Target,
    site: &Site,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Installed> {
    site.check()?;
    let total = stick.image_bytes;
    let source = File::open(&stick.disk.device)
        .with_context(|| format!("cannot read the stick {}", stick.disk.device.display()))?;
    rustix::fs::fadvise(&source, 0, None, rustix::fs::Advice::DontNeed)?;
    let copied = disk::write_and_read_back(&target.whole(), source, total, "copying", progress)?;
    if copied.read_back != copied.written {
        bail!("{} does not read back as written: the disk may be failing", target.device.display());
    }

    let installed = give_identity(stick, target)?;
    {
        let esp = Mounted::new(installed.partition("esp")?, "vfat", "esp")?;
        let esp_dir = Esp { dir: esp.0.clone() };
        for old in &stick.disk.partitions {
            let new = installed.partition(&old.name)?;
            if !old.partuuid.is_empty() {
                esp_dir.repoint(&old.partuuid, &new.partuuid)?;
            }
        }
        // The answers stay on the stick: the machine has what it needs.
        let answers = esp.0.join(ANSWERS_NAME);
        if answers.exists() {
            std::fs::remove_file(&answers).with_context(|| format!("cannot remove {}", answers.display()))?;
        }
        esp_dir.flush()?;
    }
    if *site != Site::default() {
        let data = Mounted::new(installed.partition("data")?, "ext4", "data")?;
        // The appliance's data directory there (its dir, /var/lib/tether).
        site.write(&data.0.join("tether"))?;
        let dir = File::open(&data.0)?;
        rustix::fs::syncfs(&dir).context("cannot flush the data partition")?;
    }
    let boot_entry = boot_first(&installed).map_err(|e| format!("{e:#}"));
    Ok(Installed { sha256: copied.written, bytes: total, boot_entry })
}

/// New GUIDs for the disk and each partition (the backup table moved to
/// the disk's end first), the kernel told, and the disk read again.
fn give_identity(stick: &Stick, target: &Target) -> anyhow::Result<Disk> {
    let device = target.device.as_os_str();
    sfdisk(&["--relocate".as_ref(), "gpt-bak-std".as_ref(), device])?;
    sfdisk(&["--disk-id".as_ref(), device, uuid::Uuid::now_v7().to_string().as_ref()])?;
    for part in &stick.disk.partitions {
        let number = part.number.to_string();
        sfdisk(&["--part-uuid".as_ref(), device, number.as_ref(), uuid::Uuid::now_v7().to_string().as_ref()])?;
    }
    let _ = Command::new("udevadm").arg("settle").status();
    let installed = Disk::at(&target.sys)?;
    for part in &installed.partitions {
        if part.partuuid.is_empty() || stick.disk.partitions.iter().any(|p| p.partuuid == part.partuuid) {
            bail!("{} did not get a partition GUID of its own", part.device.display());
        }
    }
    Ok(installed)
}

fn sfdisk(args: &[&OsStr]) -> anyhow::Result<()> {
    let mut all: Vec<&OsStr> = vec!["--quiet".as_ref(), "--lock".as_ref()];
    all.extend_from_slice(args);
    run("sfdisk", &all)
}

/// The firmware's boot entry for the disk's ESP, first in its order (any
/// earlier one of the same name removed).
fn boot_first(disk: &Disk) -> anyhow::Result<()> {
    let listed = Command::new("efibootmgr").output().context("cannot run efibootmgr")?;
    if !listed.status.success() {
        bail!("efibootmgr cannot read the firmware's boot entries: {}", String::from_utf8_lossy(&listed.stderr).trim());
    }
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        // Boot0003* Tether	HD(…)
        let Some((number, label)) = line.strip_prefix("Boot").and_then(|l| l.split_once(' ')) else { continue };
        let number = number.trim_end_matches('*');
        if number.len() == 4 && label.split('\t').next() == Some(BOOT_LABEL) {
            efibootmgr(&["--bootnum", number, "--delete-bootnum"])?;
        }
    }
    let esp = disk.partition("esp")?;
    efibootmgr(&[
        "--create",
        "--disk",
        &disk.device.to_string_lossy(),
        "--part",
        &esp.number.to_string(),
        "--label",
        BOOT_LABEL,
        "--loader",
        LOADER,
    ])
}

fn efibootmgr(args: &[&str]) -> anyhow::Result<()> {
    let mut all: Vec<&OsStr> = vec!["--quiet".as_ref()];
    all.extend(args.iter().map(OsStr::new));
    run("efibootmgr", &all)
}

/// Runs `program` with `args`; a failure says what it wrote on stderr.
fn run(program: &str, args: &[&OsStr]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        bail!("{program} {} failed: {}", shown.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A partition of the installed disk mounted while it is finished.
struct Mounted(PathBuf);

impl Mounted {
    fn new(part: &disk::Partition, fstype: &str, name: &str) -> anyhow::Result<Mounted> {
        let at = Path::new(MOUNTS).join(name);
        std::fs::create_dir_all(&at).with_context(|| format!("cannot create {}", at.display()))?;
        let out = Command::new("mount")
            .args(["-t", fstype, "-o", "nosuid,nodev,noexec"])
            .arg(&part.device)
            .arg(&at)
            .output()
            .context("cannot run mount")?;
        if !out.status.success() {
            bail!("cannot mount {}: {}", part.device.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(Mounted(at))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_file_is_on_the_esp_as_mounted() {
        assert_eq!(Path::new(ANSWERS_FILE), Path::new("/boot").join(ANSWERS_NAME));
    }

    #[test]
    fn the_answer_file_names_a_disk_and_the_sites_settings_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether-install.toml");
        assert!(Answers::read(&path).unwrap().is_none(), "no file: no unattended install");
        std::fs::write(&path, "disk = \"auto\"\nhostname = \"tether-01\"\n[network]\naddress = \"10.0.2.15/24\"\n")
            .unwrap();
        let answers = Answers::read(&path).unwrap().unwrap();
        assert_eq!(answers.disk, "auto");
        assert_eq!(answers.site().hostname.as_deref(), Some("tether-01"));
        for (text, says) in [
            ("hostname = \"x\"", "missing field `disk`"),
            ("disk = \"/dev/vda\"\nhostnme = \"x\"", "unknown field `hostnme`"),
            ("disk = \"/dev/vda\"\nhostname = \"no_underscores\"", "not a host name"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Answers::read(&path).unwrap_err());
            assert!(err.contains(says) && err.contains("tether-install.toml"), "{text}: {err}");
        }
    }

    #[test]
    fn the_image_ends_where_its_backup_table_does() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let file = File::create(&image).unwrap();
        file.set_len(8 << 20).unwrap();
        assert!(
            Command::new("sfdisk")
                .arg("-q")
                .arg(&image)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(b"label: gpt\nsize=2048, name=esp\n")?;
                    c.wait()
                })
                .is_ok_and(|s| s.success())
        );
        // A larger stick: the image's extent stays the image's.
        file.set_len(64 << 20).unwrap();
        assert_eq!(image_extent(&image).unwrap(), 8 << 20);
        std::fs::write(&image, vec![0; 4096]).unwrap();
        assert!(image_extent(&image).unwrap_err().to_string().contains("no GPT"));
    }
}
