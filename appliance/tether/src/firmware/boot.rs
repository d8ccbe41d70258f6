//! The boot entries on the EFI system partition, one per root slot, each
//! pinning its own slot (by the slot's PARTUUID and its dm-verity root
//! hash), named so that systemd-boot's order is the update's order:
//!
//! ```text
//! loader/entries/tether-<generation>-<slot>[+<left>[-<done>]].conf
//! tether/<slot>/vmlinuz, tether/<slot>/initrd.img
//! ```
//!
//! systemd-boot sorts entries with no tries left last and the others by
//! name, newest version first: the highest generation boots. A new entry is
//! written with `+3`; systemd-boot counts each try down (`+2-1`, …) and
//! systemd-bless-boot drops the counter once the boot is good
//! (boot-complete.target, which waits for the appliance's health). After
//! three failed tries (`+0-3`) the entry sorts last and the other slot's,
//! which pins the old root, boots again. An entry that names a slot is
//! removed before that slot is written, so no entry ever points at a slot
//! being changed.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use tether_domain::firmware::RootImage;
use tether_domain::release::Version;

/// How many boots a new slot gets to prove itself.
pub const TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The GPT partition name of the slot.
    pub fn partition(self) -> String {
        format!("root-{}", self.letter())
    }

    pub fn parse(letter: &str) -> Option<Slot> {
        match letter {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.letter().to_uppercase())
    }
}

/// An entry's standing, from its boot counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No counter: a good boot kept it.
    Blessed,
    /// On trial: `left` more tries, `done` made.
    Trial { left: u32, done: u32 },
    /// No tries left: systemd-boot boots it only when nothing else is there.
    Bad { done: u32 },
}

/// A boot entry, by its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub generation: u32,
    pub slot: Slot,
    pub standing: Standing,
}

impl Entry {
    /// A new entry for `slot`, on trial.
    pub fn new(generation: u32, slot: Slot) -> Entry {
        Entry { generation, slot, standing: Standing::Trial { left: TRIES, done: 0 } }
    }

    /// `tether-7-b+2-1.conf` and the like; `None` for any other file.
    pub fn parse(file_name: &str) -> Option<Entry> {
        let stem = file_name.strip_prefix("tether-")?.strip_suffix(".conf")?;
        let (name, counter) = match stem.split_once('+') {
            Some((name, counter)) => (name, Some(counter)),
            None => (stem, None),
        };
        let (generation, slot) = name.split_once('-')?;
        let generation = generation.parse().ok()?;
        let slot = Slot::parse(slot)?;
        let standing = match counter {
            None => Standing::Blessed,
            Some(counter) => {
                let (left, done) = match counter.split_once('-') {
                    Some((left, done)) => (left.parse().ok()?, done.parse().ok()?),
                    None => (counter.parse().ok()?, 0),
                };
                if left == 0 { Standing::Bad { done } } else { Standing::Trial { left, done } }
            }
        };
        Some(Entry { generation, slot, standing })
    }

    pub fn file_name(&self) -> String {
        let counter = match self.standing {
            Standing::Blessed => String::new(),
            Standing::Trial { left, done: 0 } => format!("+{left}"),
            Standing::Trial { left, done } => format!("+{left}-{done}"),
            Standing::Bad { done } => format!("+0-{done}"),
        };
        format!("tether-{}-{}{counter}.conf", self.generation, self.slot.letter())
    }
}

/// The EFI system partition, where it is mounted.
#[derive(Debug, Clone)]
pub struct Esp {
    pub dir: PathBuf,
}

impl Esp {
    fn entries_dir(&self) -> PathBuf {
        self.dir.join("loader/entries")
    }

    /// Where the slot's kernel and initramfs go, as the entry names them.
    pub fn slot_dir(&self, slot: Slot) -> (PathBuf, String) {
        let name = format!("/tether/{}", slot.letter());
        (self.dir.join(name.trim_start_matches('/')), name)
    }

    /// The appliance's entries, highest generation first.
    pub fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        let dir = self.entries_dir();
        let listing = std::fs::read_dir(&dir).with_context(|| {
            format!("cannot read the boot entries in {} (is the EFI system partition mounted?)", dir.display())
        })?;
        let mut entries = Vec::new();
        for item in listing {
            if let Some(entry) = item?.file_name().to_str().and_then(Entry::parse) {
                entries.push(entry);
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.generation));
        Ok(entries)
    }

    /// The entry that boots `slot`, if any.
    pub fn entry_of(&self, slot: Slot) -> anyhow::Result<Option<Entry>> {
        Ok(self.entries()?.into_iter().find(|e| e.slot == slot))
    }

    /// The release an entry boots, as its `version` line says.
    pub fn version_of(&self, entry: &Entry) -> anyhow::Result<Option<Version>> {
        let path = self.entries_dir().join(entry.file_name());
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(text.lines().find_map(|l| l.strip_prefix("version ")).and_then(|v| v.trim().parse().ok()))
    }

    /// Removes every entry that boots `slot`, and makes that stick.
    pub fn remove_entries_of(&self, slot: Slot) -> anyhow::Result<()> {
        for entry in self.entries()?.into_iter().filter(|e| e.slot == slot) {
            let path = self.entries_dir().join(entry.file_name());
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
        self.flush()
    }

    /// Writes `entry` (the last step of writing a slot: until it exists the
    /// slot does not boot). Written aside, flushed, then renamed in.
    pub fn write_entry(&self, entry: &Entry, text: &str) -> anyhow::Result<()> {
        let dir = self.entries_dir();
        let aside = dir.join(format!(".{}.new", entry.file_name()));
        write_synced(&aside, text.as_bytes())?;
        let path = dir.join(entry.file_name());
        std::fs::rename(&aside, &path).with_context(|| format!("cannot write {}", path.display()))?;
        self.flush()
    }

    /// Makes what was changed on the ESP stick. FAT keeps a file's size and
    /// first cluster in its directory entry, and a rename writes that
    /// entry only with the renamed file's inode, which neither the file's
    /// earlier fsync nor the directory's writes: an entry renamed in and
    /// the directory flushed was still the old one after a power cut (the
    /// update test's). So the whole file system is flushed.
    pub fn flush(&self) -> anyhow::Result<()> {
        let dir = std::fs::File::open(&self.dir).with_context(|| format!("cannot open {}", self.dir.display()))?;
        rustix::fs::syncfs(&dir).with_context(|| format!("cannot flush {} to the disk", self.dir.display()))
    }
}

/// What the boot entry of a slot says: the kernel and initramfs in the
/// slot's directory on the ESP, the root opened through dm-verity from the
/// slot's partition, the slot's letter for the running system to read, and
/// the machine's id once it has one ([`Esp::pin_machine_id`]).
pub fn entry_text(
    version: Version,
    slot: Slot,
    partuuid: &str,
    root: &RootImage,
    kernel_dir: &str,
    machine_id: Option<&str>,
) -> String {
    let part = format!("PARTUUID={partuuid}");
    let machine_id = machine_id.map(|id| format!(" {MACHINE_ID}={id}")).unwrap_or_default();
    [
        format!("title Tether {version} (slot {slot})"),
        format!("version {version}"),
        format!("linux {kernel_dir}/vmlinuz"),
        format!("initrd {kernel_dir}/initrd.img"),
        format!(
            "options root=/dev/mapper/root rootfstype=squashfs ro roothash={} systemd.verity_root_data={part} \
             systemd.verity_root_hash={part} systemd.verity_root_options=hash-offset={} tether.slot={} panic=10 \
             console=tty0 console=ttyS0 quiet{machine_id}",
            root.roothash,
            root.hash_offset,
            slot.letter()
        ),
    ]
    .join("\n")
        + "\n"
}

/// The kernel command line's word that gives systemd the machine's id: the
/// read-only root has none of its own, so without it each boot would be a
/// new machine (its journal a directory of its own).
pub const MACHINE_ID: &str = "systemd.machine_id";

impl Esp {
    /// Points every entry that names the partition `from` (`PARTUUID=…`)
    /// at `to` instead: the installer gives the disk it wrote partitions of
    /// its own, so that the USB stick it came from, still plugged in, is
    /// never booted or written in its place.
    pub fn repoint(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (from, to) = (format!("PARTUUID={from}"), format!("PARTUUID={to}"));
        for entry in self.entries()? {
            let path = self.entries_dir().join(entry.file_name());
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if text.contains(&from) {
                self.write_entry(&entry, &text.replace(&from, &to))?;
            }
        }
        Ok(())
    }

    /// Gives every entry that lacks one the machine id `id` (an `options`
    /// line of its own, which systemd-boot adds to the others). Answers
    /// whether any entry changed.
    pub fn pin_machine_id(&self, id: &str) -> anyhow::Result<bool> {
        let mut changed = false;
        for entry in self.entries()? {
            let path = self.entries_dir().join(entry.file_name());
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if text.contains(&format!("{MACHINE_ID}=")) {
                continue;
            }
            self.write_entry(&entry, &format!("{}\noptions {MACHINE_ID}={id}\n", text.trim_end()))?;
            changed = true;
        }
        Ok(changed)
    }
}

/// Writes `bytes` to `path` and flushes them to the disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush {} to the disk", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_carry_generation_slot_and_boot_counter() {
        let cases = [
            ("tether-1-a.conf", Entry { generation: 1, slot: Slot::A, standing: Standing::Blessed }),
            ("tether-2-b+3.conf", Entry::new(2, Slot::B)),
            (
                "tether-2-b+2-1.conf",
                Entry { generation: 2, slot: Slot::B, standing: Standing::Trial { left: 2, done: 1 } },
            ),
            ("tether-12-a+0-3.conf", Entry { generation: 12, slot: Slot::A, standing: Standing::Bad { done: 3 } }),
        ];
        for (name, entry) in cases {
            assert_eq!(Entry::parse(name), Some(entry), "{name}");
            assert_eq!(entry.file_name(), name);
        }
        for other in
            ["a.conf", "tether-1-c.conf", "tether-x-a.conf", "tether-1-a+.conf", "tether-1-a.conf~", "loader.conf"]
        {
            assert_eq!(Entry::parse(other), None, "{other}");
        }
    }

    #[test]
    fn entries_are_listed_newest_first_and_a_slot_s_are_removed_together() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp { dir: dir.path().to_owned() };
        std::fs::create_dir_all(esp.entries_dir()).unwrap();
        for name in ["tether-1-a.conf", "tether-2-b+0-3.conf", "tether-3-b+3.conf", "other.conf"] {
            std::fs::write(esp.entries_dir().join(name), "title x\n").unwrap();
        }
        let generations: Vec<_> = esp.entries().unwrap().iter().map(|e| e.generation).collect();
        assert_eq!(generations, [3, 2, 1]);
        assert_eq!(esp.entry_of(Slot::B).unwrap().unwrap().generation, 3);
        esp.remove_entries_of(Slot::B).unwrap();
        assert_eq!(esp.entries().unwrap(), [Entry { generation: 1, slot: Slot::A, standing: Standing::Blessed }]);
        assert!(esp.entries_dir().join("other.conf").exists());
        esp.write_entry(&Entry::new(4, Slot::B), "title y\n").unwrap();
        assert_eq!(std::fs::read_to_string(esp.entries_dir().join("tether-4-b+3.conf")).unwrap(), "title y\n");
        assert_eq!(std::fs::read_dir(esp.entries_dir()).unwrap().count(), 3, "nothing left aside");

        // The machine's id goes into every entry once, under its own name.
        assert!(esp.pin_machine_id("0123abcd").unwrap());
        assert!(!esp.pin_machine_id("ffffffff").unwrap(), "an entry keeps the id it has");
        let pinned = std::fs::read_to_string(esp.entries_dir().join("tether-4-b+3.conf")).unwrap();
        assert_eq!(pinned, "title y\noptions systemd.machine_id=0123abcd\n");
        assert_eq!(esp.entries().unwrap().len(), 2);
    }

    #[test]
    fn an_entry_pins_its_own_slot_by_partuuid_and_root_hash() {
        let root = RootImage { format: "squashfs+verity".into(), roothash: "ab".repeat(32), hash_offset: 8192 };
        let text = entry_text(Version(1, 2, 3), Slot::B, "uuid-b", &root, "/tether/b", Some("0123abcd"));
        assert!(text.starts_with("title Tether 1.2.3 (slot B)\nversion 1.2.3\nlinux /tether/b/vmlinuz\n"));
        let options = text.lines().find_map(|l| l.strip_prefix("options ")).unwrap();
        for want in [
            &format!("roothash={}", "ab".repeat(32)),
            "systemd.verity_root_data=PARTUUID=uuid-b",
            "systemd.verity_root_hash=PARTUUID=uuid-b",
            "systemd.verity_root_options=hash-offset=8192",
            "tether.slot=b",
            "root=/dev/mapper/root",
            "systemd.machine_id=0123abcd",
        ] {
            assert!(options.split(' ').any(|o| o == want), "{want} in {options}");
        }
    }
}
