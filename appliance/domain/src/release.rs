//! A release bundle: one file the operator carries to the site on a USB
//! stick, holding the `tether` binary (and its FIPS twin), the systemd
//! units, sysusers and tmpfiles files, optionally offline model bundles and
//! the firmware update image. A signed bundle ([`crate::signed_bundle`])
//! whose manifest says which version it is, which installed versions it may
//! replace and which commit it was built from; signed by the release key.
//! The layout is written up in `installer/README.md`.
//!
//! Whether a bundle may be installed over what is there is [`decide`]'s
//! call, made before anything is written.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Event, Origin, Resource};
use crate::signed_bundle::{self, Contents, check_files};
pub use crate::signed_bundle::{BundleError, FileEntry, Progress, Section, open_section};
use tether_base::clock::Timestamp;
use tether_base::crypto::p256::{PrivateKey, PublicKey};
use tether_store::WriteTx;

const BUNDLE_VERSION: u32 = 1;

/// The appliance's binary, at the bundle's top.
pub const BINARY: &str = "tether";
/// The FIPS build of it, when the bundle carries one.
pub const FIPS_BINARY: &str = "tether-fips";
/// The files from `systemd/` every bundle carries.
pub const SYSTEMD_FILES: [&str; 4] =
    ["systemd/tether.service", "systemd/tether-worker.service", "systemd/tether.sysusers", "systemd/tether.tmpfiles"];
/// Optional: the operator's guide, at the top.
pub const README: &str = "README.md";
/// Optional folders: offline model bundles, the firmware update image.
pub const MODELS_DIR: &str = "models/";
pub const FIRMWARE_DIR: &str = "firmware/";

/// A release's version: `MAJOR.MINOR.PATCH`, compared as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64, pub u64, pub u64);

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Version, String> {
        let parts: Vec<_> = s.split('.').map(|p| p.parse::<u64>().ok()).collect();
        match parts[..] {
            [Some(major), Some(minor), Some(patch)] => Ok(Version(major, minor, patch)),
            _ => Err(format!("version {s:?}: use MAJOR.MINOR.PATCH, three numbers")),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub bundle_version: u32,
    pub version: Version,
    /// The oldest installed version this release may replace (its data
    /// migrations start there).
    pub min_version: Version,
    /// The commit it was built from (40 hex digits).
    pub commit: String,
    /// The commit's date, RFC 3339: the build's date, as the binary says.
    pub built: String,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// The name of this release's directory under `/opt/tether/versions`:
    /// the version and the commit's first 12 digits.
    pub fn id(&self) -> String {
        format!("{}-{}", self.version, &self.commit[..12])
    }

    pub fn total_bytes(&self) -> u64 {
        signed_bundle::total_bytes(&self.files)
    }

    pub fn has(&self, path: &str) -> bool {
        self.files.iter().any(|f| f.path == path)
    }
}

/// A full commit id, as a bundle's manifest names the commit it was built from.
pub fn check_commit(commit: &str) -> Result<(), String> {
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err("commit must be 40 lowercase hex digits".into());
    }
    Ok(())
}

impl Contents for Manifest {
    const SIGNED_LABEL: &'static [u8] = b"tether.release-bundle.v1\0";
    const TRUSTED: &'static str = "the release key this tether pins, or a key named with --trust:";
    const UNTRUSTED_HINT: &'static str =
        "use a bundle from your release channel, or name the key that signed it with --trust PUBKEY";

    fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// A version not below its minimum, a full commit id, the files the
    /// installer needs, and nothing it would not know where to put.
    fn check(&self) -> Result<(), String> {
        if self.bundle_version != BUNDLE_VERSION {
            return Err(format!("bundle version {} (this tether reads {BUNDLE_VERSION})", self.bundle_version));
        }
        if self.min_version > self.version {
            return Err(format!("min_version {} is above version {}", self.min_version, self.version));
        }
        check_commit(&self.commit)?;
        check_files(&self.files)?;
        for required in std::iter::once(BINARY).chain(SYSTEMD_FILES) {
            if !self.has(required) {
                return Err(format!("a release bundle holds {required}"));
            }
        }
        let known = |path: &str| {
            [BINARY, FIPS_BINARY, README].contains(&path)
                || SYSTEMD_FILES.contains(&path)
                || path.strip_prefix(MODELS_DIR).is_some_and(|name| !name.contains('/') && name.ends_with(".tar"))
                || path.strip_prefix(FIRMWARE_DIR).is_some_and(|name| !name.contains('/'))
        };
        match self.files.iter().find(|f| !known(&f.path)) {
            Some(f) => Err(format!(
                "{} is not part of a release bundle (it holds tether, tether-fips, README.md, systemd/…, \
                 models/*.tar, firmware/*)",
                f.path
            )),
            None => Ok(()),
        }
    }
}

/// A release bundle whose signature and every file checked out.
pub type Verified = signed_bundle::Verified<Manifest>;

/// What `pack` is told about the release; the files come from the directory.
#[derive(Debug, Clone)]
pub struct About {
    pub version: Version,
    pub min_version: Version,
    pub commit: String,
    pub built: String,
}

/// Packs every file under `dir` (laid out as the bundle holds them) into a
/// release bundle at `out`, signed with `key`.
pub fn pack(
    dir: &Path,
    about: About,
    key: &PrivateKey,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Manifest, BundleError> {
    let manifest = |files| Manifest {
        bundle_version: BUNDLE_VERSION,
        version: about.version,
        min_version: about.min_version,
        commit: about.commit,
        built: about.built,
        files,
    };
    signed_bundle::pack(dir, manifest, key, out, progress)
}

/// Checks the bundle at `path` against the trusted keys. Writes nothing.
pub fn verify(path: &Path, trusted: &[PublicKey], progress: &mut dyn FnMut(Progress)) -> Result<Verified, BundleError> {
    signed_bundle::verify(path, trusted, progress)
}

/// What installing a bundle over what is there comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is installed: install it.
    Install,
    /// An older version is installed: upgrade it.
    Upgrade { from: Version },
    /// This very build is installed: nothing to do.
    AlreadyInstalled,
}

/// Why a bundle may not go over what is installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("tether {installed} is installed here; to replace it use `tether install --upgrade`")]
    UseUpgrade { installed: Version },
    #[error("nothing is installed here to upgrade; install it with `tether install` (without --upgrade)")]
    NothingToUpgrade,
    #[error(
        "refusing to downgrade: this bundle is tether {bundle}, older than the installed {installed} (its data may \
         not be readable by an older version); use a bundle of {installed} or later"
    )]
    Downgrade { bundle: Version, installed: Version },
    #[error(
        "tether {bundle} upgrades only from {min_version} or later, and {installed} is installed; upgrade to \
         {min_version} first"
    )]
    TooOldToUpgrade { bundle: Version, min_version: Version, installed: Version },
    #[error(
        "tether {version} is installed from commit {installed_commit}, this bundle is {version} from commit \
         {bundle_commit}: two builds with one version; ask the release manager which is right"
    )]
    SameVersionOtherBuild { version: Version, installed_commit: String, bundle_commit: String },
}

/// Whether `bundle` may be installed (`upgrade`: as an upgrade) where
/// `installed` is (`None`: nothing is).
pub fn decide(bundle: &Manifest, installed: Option<&Manifest>, upgrade: bool) -> Result<Decision, Refusal> {
    let Some(installed) = installed else {
        return if upgrade { Err(Refusal::NothingToUpgrade) } else { Ok(Decision::Install) };
    };
    if bundle.version == installed.version {
        return if bundle.commit == installed.commit {
            Ok(Decision::AlreadyInstalled)
        } else {
            Err(Refusal::SameVersionOtherBuild {
                version: bundle.version,
                installed_commit: installed.commit.clone(),
                bundle_commit: bundle.commit.clone(),
            })
        };
    }
    if bundle.version < installed.version {
        return Err(Refusal::Downgrade { bundle: bundle.version, installed: installed.version });
    }
    if !upgrade {
        return Err(Refusal::UseUpgrade { installed: installed.version });
    }
    if installed.version < bundle.min_version {
        return Err(Refusal::TooOldToUpgrade {
            bundle: bundle.version,
            min_version: bundle.min_version,
            installed: installed.version,
        });
    }
    Ok(Decision::Upgrade { from: installed.version })
}

/// The audit record of an upgrade beginning, written by the installer into
/// the stopped appliance's log before it takes the backup (so the record
/// survives a restore of that backup).
pub fn record_upgrade_started(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    from: &Manifest,
    to: &Manifest,
    backup: &Path,
) -> Result<u64, tether_store::Error> {
    let event = Event::new("release.upgrade_started", "update", Resource::new("release", to.id()))
        .detail("from", from.id())
        .detail("to", to.id())
        .detail("backup", backup.display());
    audit::append(tx, now, &Origin::installer(), event)
}

/// The audit record of an upgrade done: the new version came up healthy
/// on the data (written by the installer once its check has stopped it).
pub fn record_upgraded(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    from: &Manifest,
    to: &Manifest,
    status: &str,
) -> Result<u64, tether_store::Error> {
    let event = Event::new("release.upgraded", "update", Resource::new("release", to.id()))
        .detail("from", from.id())
        .detail("to", to.id())
        .detail("status", status);
    audit::append(tx, now, &Origin::installer(), event)
}

/// The audit record of an upgrade undone: the new version did not come up
/// healthy, the old one is current again, and its data restored from the
/// backup if the new one had changed its schema.
pub fn record_rolled_back(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    from: &Manifest,
    to: &Manifest,
    reason: &str,
    backup_restored: bool,
) -> Result<u64, tether_store::Error> {
    let event = Event::new("release.upgrade_rolled_back", "update", Resource::new("release", to.id()))
        .outcome(audit::Outcome::Failure)
        .detail("from", from.id())
        .detail("to", to.id())
        .detail("reason", reason)
        .detail("backup_restored", backup_restored);
    audit::append(tx, now, &Origin::installer(), event)
}

#[cfg(test)]
mod tests;
