//! The disk the machine booted from, as the kernel and udev describe it:
//! which slot runs (the boot entry's `tether.slot=`), the partition of each
//! slot (by GPT name, on the disk that holds the running root), and writing
//! a slot with the bytes read back afterwards.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::boot::Slot;
use tether_domain::release::Progress;
use tether_domain::signed_bundle::Digesting;

/// The kernel command line, `key=value` words (a bare word maps to "").
#[derive(Debug, Clone, Default)]
pub struct Cmdline(HashMap<String, String>);

impl Cmdline {
    pub fn read(path: &Path) -> anyhow::Result<Cmdline> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Cmdline::parse(&text))
    }

    pub fn parse(text: &str) -> Cmdline {
        Cmdline(
            text.split_whitespace()
                .map(|word| match word.split_once('=') {
                    Some((key, value)) => (key.to_owned(), value.to_owned()),
                    None => (word.to_owned(), String::new()),
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The slot the machine booted, or why this is not the firmware image.
    pub fn slot(&self) -> anyhow::Result<Slot> {
        let letter = self.get("tether.slot").context(
            "this machine was not booted from the Tether firmware image (no tether.slot= on the kernel command \
             line); on a host, upgrade with `tether install --upgrade BUNDLE`",
        )?;
        Slot::parse(letter).with_context(|| format!("tether.slot={letter} on the kernel command line is not a or b"))
    }

    /// The running root's partition, as its entry names it (`PARTUUID=…`).
    fn root_partuuid(&self) -> anyhow::Result<&str> {
        self.get("systemd.verity_root_data")
            .and_then(|v| v.strip_prefix("PARTUUID="))
            .context("the kernel command line names no root slot (systemd.verity_root_data=PARTUUID=…)")
    }
}

/// One partition of the boot disk.
#[derive(Debug, Clone)]
pub struct Partition {
    /// The GPT partition name (`esp`, `root-a`, `root-b`, `data`).
    pub name: String,
    /// Its number on the disk (1…; 0 for a whole disk written as one).
    pub number: u32,
    pub device: PathBuf,
    pub partuuid: String,
    pub bytes: u64,
}

/// A disk laid out as the image: the one holding the running root, or one
/// the installer wrote.
#[derive(Debug, Clone)]
pub struct Disk {
    pub device: PathBuf,
    /// Its directory in /sys/class/block.
    pub sys: PathBuf,
    pub partitions: Vec<Partition>,
}

impl Disk {
    /// From the running root's partition (by its PARTUUID) to its disk.
    pub fn booted(cmdline: &Cmdline) -> anyhow::Result<Disk> {
        let partuuid = cmdline.root_partuuid()?;
        let link = Path::new("/dev/disk/by-partuuid").join(partuuid);
        let root =
            std::fs::canonicalize(&link).with_context(|| format!("the root slot {} is not there", link.display()))?;
        let name = root.file_name().and_then(|n| n.to_str()).context("the root slot's device has no name")?;
        let disk_dir = std::fs::canonicalize(Path::new("/sys/class/block").join(name))?
            .parent()
            .context("the root slot is on no disk")?
            .to_owned();
        Disk::at(&disk_dir)
    }

    /// The disk whose sysfs directory is `disk_dir`, each partition read
    /// from there (its PARTUUID from udev's links).
    pub fn at(disk_dir: &Path) -> anyhow::Result<Disk> {
        let uuids = partuuids()?;
        let mut partitions = Vec::new();
        for item in std::fs::read_dir(disk_dir).with_context(|| format!("cannot list {}", disk_dir.display()))? {
            let dir = item?.path();
            if !dir.join("partition").exists() {
                continue;
            }
            let uevent = std::fs::read_to_string(dir.join("uevent"))?;
            let field = |key: &str| uevent.lines().find_map(|l| l.strip_prefix(key)).map(str::to_owned);
            let (Some(dev), Some(name)) = (field("DEVNAME="), field("PARTNAME=")) else { continue };
            let sectors: u64 = std::fs::read_to_string(dir.join("size"))?.trim().parse()?;
            let number: u32 = std::fs::read_to_string(dir.join("partition"))?.trim().parse()?;
            let device = Path::new("/dev").join(&dev);
            let partuuid = uuids.get(&device).cloned().unwrap_or_default();
            partitions.push(Partition { name, number, device, partuuid, bytes: sectors * 512 });
        }
        partitions.sort_by_key(|p| p.number);
        let device = Path::new("/dev").join(disk_dir.file_name().context("the disk has no name")?);
        Ok(Disk { device, sys: disk_dir.to_owned(), partitions })
    }

    /// The partition named `name` (`esp`, `data`, …).
    pub fn partition(&self, name: &str) -> anyhow::Result<&Partition> {
        self.partitions.iter().find(|p| p.name == name).with_context(|| {
            format!("{} has no partition named {name}: it is not laid out as the firmware image", self.device.display())
        })
    }

    pub fn slot(&self, slot: Slot) -> anyhow::Result<&Partition> {
        self.partition(&slot.partition())
    }
}

/// Device → PARTUUID, from udev's links.
fn partuuids() -> anyhow::Result<HashMap<PathBuf, String>> {
    let mut map = HashMap::new();
    for item in std::fs::read_dir("/dev/disk/by-partuuid").context("udev has named no partitions")? {
        let item = item?;
        if let (Ok(device), Some(uuid)) = (std::fs::canonicalize(item.path()), item.file_name().to_str()) {
            map.insert(device, uuid.to_owned());
        }
    }
    Ok(map)
}

/// How much is written between flushes: progress counts bytes on the disk,
/// not in the page cache.
const FLUSH_EVERY: usize = 32 << 20;

/// Writes `bytes` bytes from `source` to the start of `partition` (opened
/// exclusively: a mounted or opened partition is refused by the kernel),
/// flushed to the disk. `tick` hears the bytes flushed. Answers the SHA-256
/// of what was written.
pub fn write(
    partition: &Partition,
    source: impl Read,
    bytes: u64,
    tick: &mut dyn FnMut(u64),
) -> anyhow::Result<String> {
    let mut device = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(&partition.device)
        .with_context(|| format!("cannot open {} ({}) to write it", partition.device.display(), partition.name))?;
    let mut ignore = |_| {};
    let mut reader = Digesting::new(source.take(bytes), &mut ignore);
    let mut buf = vec![0; 1 << 20];
    let (mut copied, mut unflushed) = (0u64, 0usize);
    let writing = || format!("writing {}", partition.name);
    loop {
        let n = reader.read(&mut buf).with_context(writing)?;
        if n > 0 {
            device.write_all(&buf[..n]).with_context(writing)?;
            copied += n as u64;
            unflushed += n;
        }
        if n == 0 || unflushed >= FLUSH_EVERY {
            device.sync_data().with_context(writing)?;
            tick(unflushed as u64);
            unflushed = 0;
        }
        if n == 0 {
            break;
        }
    }
    if copied != bytes {
        bail!("the root image ended after {copied} of {bytes} bytes");
    }
    Ok(reader.finish())
}

/// The two digests of a copy: of what was written, and of what the disk
/// gave back when read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub written: String,
    pub read_back: String,
}

/// [`write`]s `bytes` bytes of `source` to `partition`, then
/// [`read_back`]s them, with progress as `stage` and then "reading back".
pub fn write_and_read_back(
    partition: &Partition,
    source: impl Read,
    bytes: u64,
    stage: &'static str,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Copied> {
    let mut done = 0;
    let written = write(partition, source, bytes, &mut |n| {
        done += n;
        progress(Progress { stage, done, total: bytes });
    })?;
    let mut done = 0;
    let read_back = read_back(partition, bytes, &mut |n| {
        done += n;
        progress(Progress { stage: "reading back", done, total: bytes });
    })?;
    Ok(Copied { written, read_back })
}

/// The SHA-256 of the first `bytes` bytes of `partition`, read from the
/// disk (the page cache dropped first, so the bytes are the disk's).
pub fn read_back(partition: &Partition, bytes: u64, tick: &mut dyn FnMut(u64)) -> anyhow::Result<String> {
    let device =
        File::open(&partition.device).with_context(|| format!("cannot read {}", partition.device.display()))?;
    rustix::fs::fadvise(&device, 0, None, rustix::fs::Advice::DontNeed)?;
    let mut reader = Digesting::new(device.take(bytes), tick);
    io::copy(&mut reader, &mut io::sink()).with_context(|| format!("reading {} back", partition.name))?;
    Ok(reader.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_says_which_slot_runs() {
        let line =
            Cmdline::parse("root=/dev/mapper/root ro tether.slot=b quiet systemd.verity_root_data=PARTUUID=u-1\n");
        assert_eq!(line.slot().unwrap(), Slot::B);
        assert_eq!(line.root_partuuid().unwrap(), "u-1");
        assert_eq!(line.get("quiet"), Some(""));
        let host = Cmdline::parse("root=/dev/sda1 ro");
        assert!(host.slot().unwrap_err().to_string().contains("tether install --upgrade"));
        assert!(Cmdline::parse("tether.slot=c").slot().is_err());
    }
}
