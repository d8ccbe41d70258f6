//! `tether update`: the firmware image's A/B update, on the machine the
//! image runs on. A release bundle that carries the firmware files
//! ([`tether_domain::firmware`]) is checked exactly as `tether install`
//! checks it — the signature and every file's digest, then whether its
//! version may replace the running one (no downgrade) — before anything is
//! written. Then, in this order, so that a stop at any point leaves the
//! running slot booting:
//!
//! 1. the update is noted as being written ([`Pending`], on the data
//!    partition), and the inactive slot's boot entry is removed;
//! 2. its kernel and initramfs go to the ESP, its root image to the slot's
//!    partition, and the partition is read back and compared;
//! 3. a new boot entry on trial ([`boot`]) makes the slot the next boot.
//!
//! What came of it — kept after a healthy boot, or fallen back after three
//! failed ones, or interrupted — is found by the next boot ([`settle`]),
//! which records it in the audit log before the appliance starts. A USB
//! stick's update is offered on the status screen ([`offer`]). The image
//! itself reaches a USB stick through [`writer`], and a machine's disk from
//! the stick through [`installer`], with the site's settings ([`site`]).

pub mod boot;
pub mod disk;
pub mod installer;
pub mod offer;
pub mod settle;
pub mod site;
pub mod uploaded;
pub mod writer;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::install::{self, layout::Layout};
use boot::{Entry, Esp, Slot, entry_text};
use disk::{Cmdline, Disk};
use tether_base::clock::{Clock, SystemClock};
use tether_base::crypto::p256::PublicKey;
use tether_domain::firmware::upload::{self, OnTheImage};
use tether_domain::firmware::{self, RootImage, Update};
use tether_domain::release::{self, Manifest, Progress, Section, Verified};
use tether_domain::signed_bundle::Digesting;

/// Public keys the image itself trusts to sign its updates, beside the
/// release key every tether pins: the key its own bundle was signed with
/// (a site that re-signs releases builds its image with its key). Part of
/// the verity-checked root, like the binary; only the image has it.
pub const IMAGE_KEYS_DIR: &str = "/usr/share/tether/release-keys";

/// The keys updates must be signed with on this machine: `keys` (the
/// release key, any named with --trust) and those in [`IMAGE_KEYS_DIR`].
/// The console's uploads and `tether update apply` trust the same.
pub fn trusted_keys(mut keys: Vec<PublicKey>) -> anyhow::Result<Vec<PublicKey>> {
    if let Ok(listing) = std::fs::read_dir(IMAGE_KEYS_DIR) {
        for item in listing {
            let path = item?.path();
            let pem = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            keys.push(PublicKey::from_pem(&pem).with_context(|| path.display().to_string())?);
        }
    }
    Ok(keys)
}

/// What the appliance needs for the console's uploads when this machine
/// runs the image; none elsewhere. The image is known by its keys
/// directory, which only the image's root holds (the appliance's sandbox
/// shows it no /proc/cmdline, where the slot is named).
pub fn on_the_image(release_key: PublicKey) -> anyhow::Result<Option<OnTheImage>> {
    if !Path::new(IMAGE_KEYS_DIR).is_dir() {
        return Ok(None);
    }
    let running =
        install::installed(&Layout::new(Path::new("/")))?.context("no release is installed in the running slot")?;
    Ok(Some(OnTheImage { trusted: trusted_keys(vec![release_key])?, running }))
}

/// Where things are on the running image.
#[derive(Debug, Clone)]
pub struct Machine {
    pub esp: Esp,
    /// The update's own state, on the data partition (root's).
    pub state_dir: PathBuf,
    /// The appliance's data directory, whose audit log hears of updates.
    pub data_dir: PathBuf,
    pub cmdline: Cmdline,
}

impl Machine {
    pub fn this() -> anyhow::Result<Machine> {
        Ok(Machine {
            esp: Esp { dir: PathBuf::from("/boot") },
            state_dir: PathBuf::from("/data/firmware"),
            data_dir: PathBuf::from("/var/lib/tether"),
            cmdline: Cmdline::read(Path::new("/proc/cmdline"))?,
        })
    }
}

/// How far an update has come, as the data partition keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The slot is being written: it has no boot entry.
    Writing,
    /// Written, read back and given its entry: the next boot tries it.
    Staged,
    /// Booted on trial at least once.
    Trial,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub stage: Stage,
    /// The new slot's boot entry's generation.
    pub generation: u32,
    pub update: Update,
}

const PENDING: &str = "update.json";

impl Pending {
    pub fn read(state_dir: &Path) -> anyhow::Result<Option<Pending>> {
        let path = state_dir.join(PENDING);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn write(&self, state_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("cannot make {}", state_dir.display()))?;
        let aside = state_dir.join(format!(".{PENDING}.new"));
        boot::write_synced(&aside, &serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&aside, state_dir.join(PENDING))?;
        boot::sync_dir(state_dir)
    }

    pub fn clear(state_dir: &Path) -> anyhow::Result<()> {
        match std::fs::remove_file(state_dir.join(PENDING)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => boot::sync_dir(state_dir),
        }
    }
}

/// An update written to the inactive slot, waiting for the reboot.
#[derive(Debug, Clone)]
pub struct Applied {
    pub from: Manifest,
    pub to: Manifest,
    pub slot: Slot,
    pub entry: Entry,
}

/// Checks `bundle` fully, then writes it to the slot that is not running
/// and makes that slot the next boot (on trial). `progress` hears the long
/// steps: verifying, writing the slot, reading it back.
pub fn apply(bundle: &Path, trusted: &[PublicKey], progress: &mut dyn FnMut(Progress)) -> anyhow::Result<Applied> {
    install::must_be_root("updating the firmware")?;
    let machine = Machine::this()?;
    let running = machine.cmdline.slot()?;
    let target = running.other();
    let partition = Disk::booted(&machine.cmdline)?.slot(target)?.clone();
    std::fs::create_dir_all(&machine.state_dir)?;
    let _lock = install::lock(&machine.state_dir, "a firmware update")?;
    // The running slot is the way back: it must be one a good boot kept.
    match machine.esp.entry_of(running)?.map(|e| e.standing) {
        Some(boot::Standing::Blessed) => {}
        Some(_) => bail!(
            "slot {running} runs on trial (kept only once its boot is healthy); update again after that, or the \
             machine would have no slot known to be good"
        ),
        None => bail!("slot {running} has no boot entry on {}: is the ESP mounted?", machine.esp.dir.display()),
    }
    let checked = check(bundle, trusted, running, &partition, progress)?;

    let generation = machine.esp.entries()?.first().map_or(0, |e| e.generation) + 1;
    let update = Update {
        from: checked.from.version,
        to: checked.to.version,
        slot: target.letter().into(),
        staged_at: SystemClock.now().to_rfc3339(),
    };
    let mut pending = Pending { stage: Stage::Writing, generation, update };
    pending.write(&machine.state_dir)?;
    machine.esp.remove_entries_of(target)?;
    let kernel_dir = write_slot(bundle, &checked, &machine.esp, target, &partition, progress)
        .map_err(|e| e.context(format!("slot {target} has no boot entry; slot {running} stays")))?;
    let entry = Entry::new(generation, target);
    let machine_id = machine.cmdline.get(boot::MACHINE_ID);
    let text = entry_text(checked.to.version, target, &partition.partuuid, &checked.root, &kernel_dir, machine_id);
    machine.esp.write_entry(&entry, &text)?;
    pending.stage = Stage::Staged;
    pending.write(&machine.state_dir)?;
    Ok(Applied { from: checked.from, to: checked.to, slot: target, entry })
}

/// A bundle that may go to the inactive slot: what runs, what it brings.
struct Checked {
    from: Manifest,
    to: Manifest,
    root: RootImage,
    /// The bundle's sections, as [`firmware::FILES`] names them.
    image: Section,
    kernel: Section,
    initrd: Section,
}

/// Everything `tether install` checks (signature, digests, no downgrade),
/// and that its root image fits and can boot here. Writes nothing.
fn check(
    bundle: &Path,
    trusted: &[PublicKey],
    running: Slot,
    partition: &disk::Partition,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Checked> {
    let target = running.other();
    let verified = release::verify(bundle, trusted, progress)
        .with_context(|| format!("{} does not verify, so slot {target} was not touched", bundle.display()))?;
    let to = verified.manifest.clone();
    let from =
        install::installed(&Layout::new(Path::new("/")))?.context("no release is installed in the running slot")?;
    upload::check_update(&to, &from)
        .map_err(|why| anyhow::anyhow!("{} is refused, so slot {target} was not touched: {why}", bundle.display()))?;
    let [image, description, kernel, initrd] = firmware::FILES.map(|path| section(&verified, path));
    let (Some(image), Some(description), Some(kernel), Some(initrd)) = (image, description, kernel, initrd) else {
        bail!("{} lists the firmware image's files but does not hold them all", bundle.display());
    };
    let root: RootImage = serde_json::from_slice(&read_checked(bundle, description)?)
        .with_context(|| format!("{} in the bundle is not a root image description", firmware::ROOT_DESCRIPTION))?;
    root.check(image.entry.size).map_err(|e| anyhow::anyhow!("the bundle's root image cannot boot here: {e}"))?;
    if image.entry.size > partition.bytes {
        bail!(
            "the root image is {} bytes and slot {target} ({}) holds {}: this update needs a newer disk layout",
            image.entry.size,
            partition.device.display(),
            partition.bytes
        );
    }
    Ok(Checked { from, to, root, image: image.clone(), kernel: kernel.clone(), initrd: initrd.clone() })
}

/// The slot's kernel and initramfs to the ESP, its root image to its
/// partition, read back and compared. Answers the kernel's directory as
/// the boot entry names it.
fn write_slot(
    bundle: &Path,
    checked: &Checked,
    esp: &Esp,
    target: Slot,
    partition: &disk::Partition,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<String> {
    let (kernel_dir, kernel_dir_name) = esp.slot_dir(target);
    if kernel_dir.exists() {
        std::fs::remove_dir_all(&kernel_dir)?;
    }
    std::fs::create_dir_all(&kernel_dir)?;
    for (section, name) in [(&checked.kernel, "vmlinuz"), (&checked.initrd, "initrd.img")] {
        boot::write_synced(&kernel_dir.join(name), &read_checked(bundle, section)?)?;
    }
    esp.flush()?;

    let (image, total) = (&checked.image, checked.image.entry.size);
    let mut done = 0;
    let written = disk::write(partition, release::open_section(bundle, image)?, total, &mut |n| {
        done += n;
        progress(Progress { stage: "writing the slot", done, total });
    })?;
    if written != image.entry.sha256 {
        bail!("{} changed after it was verified", bundle.display());
    }
    let mut done = 0;
    let read = disk::read_back(partition, total, &mut |n| {
        done += n;
        progress(Progress { stage: "reading the slot back", done, total });
    })?;
    if read != image.entry.sha256 {
        bail!("slot {target} ({}) does not read back as written: the disk may be failing", partition.device.display());
    }
    Ok(kernel_dir_name)
}

fn section<'a>(verified: &'a Verified, path: &str) -> Option<&'a Section> {
    verified.sections.iter().find(|s| s.entry.path == path)
}

/// A small file of the bundle, its digest checked again as it is read.
fn read_checked(bundle: &Path, section: &Section) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut ignore = |_| {};
    let mut reader = Digesting::new(release::open_section(bundle, section)?, &mut ignore);
    reader.read_to_end(&mut bytes)?;
    if reader.finish() != section.entry.sha256 {
        bail!("{} changed after it was verified ({}): nothing was written", bundle.display(), section.entry.path);
    }
    Ok(bytes)
}
