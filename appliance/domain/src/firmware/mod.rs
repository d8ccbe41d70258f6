//! The firmware image: the disk image itself, signed as release bundles
//! are, for writing to a USB stick ([`ImageManifest`]); what a release
//! bundle carries under `firmware/` to update the appliance's A/B disk
//! ([`RootImage`] describes the root slot's bytes); and the audit records
//! of an update's course, which the appliance's boot writes before it
//! starts serving (the update itself is written while the appliance runs;
//! what became of it is known at the next boot).

pub mod site;
pub mod upload;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Event, Origin, Outcome, Resource};
use crate::release::Version;
use crate::signed_bundle::{self, BundleError, Contents, FileEntry, Progress, check_files};
use tether_base::clock::Timestamp;
use tether_base::crypto::p256::{PrivateKey, PublicKey};
use tether_base::files;
use tether_store::WriteTx;

/// The disk image in an image bundle.
pub const IMAGE_FILE: &str = "tether.img";
const IMAGE_BUNDLE_VERSION: u32 = 1;

/// An image bundle's manifest: the raw disk image `firmware-image/build.sh`
/// makes, which release it holds, and the image's size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    pub bundle_version: u32,
    pub version: Version,
    pub commit: String,
    pub built: String,
    pub files: Vec<FileEntry>,
}

impl ImageManifest {
    /// The image's entry (`check` made sure there is exactly that one).
    pub fn image(&self) -> &FileEntry {
        &self.files[0]
    }
}

impl Contents for ImageManifest {
    const SIGNED_LABEL: &'static [u8] = b"tether.image-bundle.v1\0";
    const TRUSTED: &'static str = "the release key this tether pins, or a key named with --trust:";
    const UNTRUSTED_HINT: &'static str =
        "use an image from your release channel, or name the key that signed it with --trust PUBKEY";

    fn files(&self) -> &[FileEntry] {
        &self.files
    }

    fn check(&self) -> Result<(), String> {
        if self.bundle_version != IMAGE_BUNDLE_VERSION {
            return Err(format!(
                "image bundle version {} (this tether reads {IMAGE_BUNDLE_VERSION})",
                self.bundle_version
            ));
        }
        crate::release::check_commit(&self.commit)?;
        check_files(&self.files)?;
        match &self.files[..] {
            [only] if only.path == IMAGE_FILE => Ok(()),
            _ => Err(format!("an image bundle holds {IMAGE_FILE} and nothing else")),
        }
    }
}

/// Signs the disk image at `image` into an image bundle at `out`.
pub fn pack_image(
    image: &Path,
    version: Version,
    commit: String,
    built: String,
    key: &PrivateKey,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImageManifest, BundleError> {
    // Staged beside `out` as the bundle holds it (a link, where it can be).
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stage = out.with_file_name(format!(".{name}.stage"));
    let staged = stage.join(IMAGE_FILE);
    files::fresh_private_dir(&stage).map_err(|source| BundleError::Io { path: stage.clone(), source })?;
    std::fs::hard_link(image, &staged)
        .or_else(|_| std::fs::copy(image, &staged).map(drop))
        .map_err(|source| BundleError::Io { path: image.to_owned(), source })?;
    let manifest = |files| ImageManifest { bundle_version: IMAGE_BUNDLE_VERSION, version, commit, built, files };
    let packed = signed_bundle::pack(&stage, manifest, key, out, progress);
    let _ = files::remove_dir_if_present(&stage);
    packed
}

/// Checks the image bundle at `path` against the trusted keys.
pub fn verify_image(
    path: &Path,
    trusted: &[PublicKey],
    progress: &mut dyn FnMut(Progress),
) -> Result<signed_bundle::Verified<ImageManifest>, BundleError> {
    signed_bundle::verify(path, trusted, progress)
}

/// The root slot's bytes: a squashfs, then its dm-verity hash tree.
pub const ROOT_IMAGE: &str = "firmware/root.img";
/// [`RootImage`], as JSON.
pub const ROOT_DESCRIPTION: &str = "firmware/root.json";
/// The kernel and initramfs that boot that root.
pub const KERNEL: &str = "firmware/vmlinuz";
pub const INITRD: &str = "firmware/initrd.img";
/// Every file a firmware update needs.
pub const FILES: [&str; 4] = [ROOT_IMAGE, ROOT_DESCRIPTION, KERNEL, INITRD];

/// The only layout of a root slot there is.
pub const FORMAT: &str = "squashfs+verity";
const VERITY_BLOCK: u64 = 4096;

/// How the initramfs opens a root slot: the hash its boot entry names, and
/// where the hash tree starts (the squashfs before it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootImage {
    pub format: String,
    /// dm-verity's root hash, 64 lowercase hex digits.
    pub roothash: String,
    /// Bytes from the slot's start to the hash tree (a multiple of 4096).
    pub hash_offset: u64,
}

impl RootImage {
    /// Whether it describes a root image of `image_bytes` this appliance can boot.
    pub fn check(&self, image_bytes: u64) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("root image format {:?} (this tether boots {FORMAT:?})", self.format));
        }
        if self.roothash.len() != 64 || !self.roothash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("the root hash must be 64 lowercase hex digits".into());
        }
        if self.hash_offset == 0 || !self.hash_offset.is_multiple_of(VERITY_BLOCK) || self.hash_offset >= image_bytes {
            return Err(format!(
                "the hash tree's offset {} is not a multiple of {VERITY_BLOCK} inside the {image_bytes}-byte image",
                self.hash_offset
            ));
        }
        Ok(())
    }
}

/// An update written to a slot, as the audit records name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub from: Version,
    pub to: Version,
    /// The slot written: `a` or `b`.
    pub slot: String,
    /// When it was written (RFC 3339).
    pub staged_at: String,
}

/// What became of an update, as a boot finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Course {
    /// The machine booted the new slot on trial: it is kept once the
    /// appliance is healthy, with `tries_left` more boots otherwise.
    Trial { tries_left: u32 },
    /// The new slot booted, was healthy and is kept.
    Completed,
    /// The new slot did not come up healthy in `boots` tries; the machine
    /// is back on the old one.
    FellBack { boots: u32 },
    /// Writing the slot stopped halfway (power cut, crash); the old slot
    /// still runs and the new one has no boot entry.
    Interrupted,
}

/// The audit record of `course`.
pub fn record(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    update: &Update,
    course: Course,
) -> Result<u64, tether_store::Error> {
    let (event_type, outcome) = match course {
        Course::Trial { .. } => ("firmware.update_trial", Outcome::Success),
        Course::Completed => ("firmware.update_completed", Outcome::Success),
        Course::FellBack { .. } => ("firmware.update_fell_back", Outcome::Failure),
        Course::Interrupted => ("firmware.update_interrupted", Outcome::Failure),
    };
    let mut event = Event::new(event_type, "update", Resource::new("firmware", update.to))
        .outcome(outcome)
        .detail("from", update.from)
        .detail("to", update.to)
        .detail("slot", &update.slot)
        .detail("staged_at", &update.staged_at);
    event = match course {
        Course::Trial { tries_left } => event.detail("tries_left", tries_left),
        Course::FellBack { boots } => event.detail("boots_tried", boots),
        Course::Completed | Course::Interrupted => event,
    };
    audit::append(tx, now, &Origin::installer(), event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RootImage {
        RootImage { format: FORMAT.into(), roothash: "ab".repeat(32), hash_offset: 8192 }
    }

    #[test]
    fn a_root_image_is_checked_against_its_size() {
        assert_eq!(image().check(12288), Ok(()));
        let refused = |image: RootImage, bytes| image.check(bytes).unwrap_err();
        assert!(refused(image(), 8192).contains("offset"));
        assert!(refused(RootImage { hash_offset: 4097, ..image() }, 12288).contains("multiple of 4096"));
        assert!(refused(RootImage { roothash: "AB".repeat(32), ..image() }, 12288).contains("lowercase"));
        assert!(refused(RootImage { format: "ext4".into(), ..image() }, 12288).contains("squashfs+verity"));
    }

    #[test]
    fn an_image_bundle_holds_the_disk_image_and_nothing_else() {
        let file = |path: &str| FileEntry { path: path.into(), size: 1 << 20, sha256: "cd".repeat(32) };
        let manifest = |files| ImageManifest {
            bundle_version: IMAGE_BUNDLE_VERSION,
            version: "0.1.0".parse().unwrap(),
            commit: "0".repeat(40),
            built: "2026-12-07T00:00:00Z".into(),
            files,
        };
        assert_eq!(manifest(vec![file(IMAGE_FILE)]).check(), Ok(()));
        let refused = |m: ImageManifest| m.check().unwrap_err();
        assert!(refused(manifest(vec![file("tether")])).contains("nothing else"));
        assert!(refused(manifest(vec![file(IMAGE_FILE), file("extra")])).contains("nothing else"));
        assert!(
            refused(ImageManifest { commit: "main".into(), ..manifest(vec![file(IMAGE_FILE)]) }).contains("commit")
        );
        assert!(refused(ImageManifest { bundle_version: 2, ..manifest(vec![file(IMAGE_FILE)]) }).contains("version 2"));
    }
}
