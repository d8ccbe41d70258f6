//! Firmware updates uploaded in the console. The appliance receives the
//! bundle into a directory of its own and checks it exactly as `tether
//! update apply` will — signature, every digest, the firmware image in it,
//! no downgrade below the running release — so that a refusal is the
//! uploader's answer and in the audit log before anything else happens.
//! Then it hands the bundle over: renamed to [`HANDOFF`], which the root
//! unit `tether-firmware-upload.path` watches. Its service runs `tether
//! update apply` on it, which checks it all again (the appliance is not
//! what writes the disk, nor trusted to), keeps its progress and outcome
//! in [`STATUS`] for the console, and restarts the machine into it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Event, Origin, Outcome, Resource};
use crate::release::{self, Decision, Manifest, Version};
use crate::signed_bundle::BundleError;
use tether_base::clock::SharedClock;
use tether_base::crypto::p256::PublicKey;
use tether_base::files::IoError;
use tether_store::{self as store, Store};

/// The upload directory, in the appliance's data directory.
pub const UPLOAD_DIR: &str = "firmware-upload";
/// The bundle handed to the root unit, in the upload directory.
pub const HANDOFF: &str = "update.bundle";
/// The update's progress and outcome, as the root unit keeps them there.
pub const STATUS: &str = "status.json";

/// Where an uploaded update has come, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `handed over` (waiting for the root unit), then the apply's stages
    /// (`verifying`, `writing the slot`, `reading back`), then `restarting`
    /// or `failed`.
    pub state: String,
    pub version: Version,
    /// Bytes done of the stage's total.
    pub done: u64,
    pub total: u64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Status {
    pub const HANDED_OVER: &'static str = "handed over";
    pub const RESTARTING: &'static str = "restarting";
    pub const FAILED: &'static str = "failed";

    /// Whether the update is still under way (a new upload waits for it).
    pub fn under_way(&self) -> bool {
        self.state != Self::FAILED
    }

    pub fn read(dir: &Path) -> Option<Status> {
        serde_json::from_slice(&std::fs::read(dir.join(STATUS)).ok()?).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("a firmware update is under way already ({0}); wait for it to finish")]
    Busy(String),
    #[error("the update was refused, nothing was written: {0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the check's worker thread stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What the appliance knows of updates on a machine running the image.
#[derive(Debug, Clone)]
pub struct OnTheImage {
    /// The keys `tether update apply` trusts on this machine.
    pub trusted: Vec<PublicKey>,
    /// What the running slot holds.
    pub running: Manifest,
}

/// The console's firmware uploads, on a machine running the image.
#[derive(Debug)]
pub struct Uploads {
    store: Store,
    clock: SharedClock,
    dir: PathBuf,
    trusted: Vec<PublicKey>,
    running: Manifest,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A bundle being received; removed when dropped unless handed over.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An update handed over to the root unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOver {
    pub from: Version,
    pub to: Version,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> UploadError + '_ {
    move |e| UploadError::Io(IoError::new(what, e))
}

impl Uploads {
    /// `data_dir`: the appliance's; uploads go to its [`UPLOAD_DIR`].
    pub fn new(store: Store, clock: SharedClock, data_dir: &Path, image: OnTheImage) -> Uploads {
        let dir = data_dir.join(UPLOAD_DIR);
        Uploads { store, clock, dir, trusted: image.trusted, running: image.running, turn: Arc::default() }
    }

    /// What runs, and the last upload's status (none since the last restart
    /// into an update, or ever).
    pub fn current(&self) -> (&Manifest, Option<Status>) {
        (&self.running, Status::read(&self.dir))
    }

    /// A file to receive a bundle into, unless an update is under way.
    pub fn begin(&self) -> Result<(Staged, std::fs::File), UploadError> {
        let turn = self.turn.clone().try_lock_owned().map_err(|_| UploadError::Busy("another upload".into()))?;
        if let Some(status) = Status::read(&self.dir).filter(Status::under_way) {
            return Err(UploadError::Busy(format!("tether {}: {}", status.version, status.state)));
        }
        std::fs::create_dir_all(&self.dir).map_err(io("creating the upload directory"))?;
        let path = self.dir.join(format!(".upload-{}", uuid::Uuid::now_v7()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("creating the upload file"))?;
        Ok((Staged { path, _turn: turn }, file))
    }

    /// Checks the received bundle; refused, that is audited and answered;
    /// accepted, it is audited and handed to the root unit.
    pub async fn hand_over(&self, staged: Staged, by: &str, origin: Origin) -> Result<HandedOver, UploadError> {
        let (path, trusted, running) = (staged.path.clone(), self.trusted.clone(), self.running.clone());
        let checked = tokio::task::spawn_blocking(move || check(&path, &trusted, &running)).await?;
        let now = self.clock.now();
        let to = match checked {
            Ok(to) => to,
            Err(why) => {
                let claimed = crate::signed_bundle::peek_manifest::<Manifest>(&staged.path)
                    .map_or_else(|_| "unknown".to_owned(), |m| m.version.to_string());
                let event = Event::new("firmware.update_refused", "update", Resource::new("firmware", &claimed))
                    .outcome(Outcome::Denied)
                    .detail("reason", &why)
                    .detail("uploaded_by", by);
                self.store.write(move |tx| audit::append(tx, now, &origin, event)).await?;
                return Err(UploadError::Refused(why));
            }
        };
        let event = Event::new("firmware.update_uploaded", "update", Resource::new("firmware", to.version))
            .detail("from", self.running.version)
            .detail("to", to.version)
            .detail("commit", &to.commit)
            .detail("uploaded_by", by);
        self.store.write(move |tx| audit::append(tx, now, &origin, event)).await?;
        let status = Status { state: Status::HANDED_OVER.into(), version: to.version, done: 0, total: 0, error: None };
        let json = serde_json::to_vec(&status).map_err(|e| io("writing the status")(e.into()))?;
        tether_base::files::write_with_mode(&self.dir.join(STATUS), &json, 0o644)?;
        std::fs::rename(&staged.path, self.dir.join(HANDOFF)).map_err(io("handing the update over"))?;
        Ok(HandedOver { from: self.running.version, to: to.version })
    }
}

/// What `tether update apply` checks before it writes, but the slot's size:
/// answers the bundle's manifest, or why it is refused.
pub fn check(bundle: &Path, trusted: &[PublicKey], running: &Manifest) -> Result<Manifest, String> {
    let verified = release::verify(bundle, trusted, &mut |_| {}).map_err(|e: BundleError| e.to_string())?;
    check_update(&verified.manifest, running)?;
    Ok(verified.manifest)
}

/// Whether the verified release `to` updates a machine running `running`:
/// it carries the firmware image, is not a downgrade, and is not what
/// runs. The one wording of these refusals, from the console and from a
/// USB stick alike.
pub fn check_update(to: &Manifest, running: &Manifest) -> Result<(), String> {
    if !super::FILES.iter().all(|f| to.has(f)) {
        return Err("a release bundle without the firmware image (firmware/root.img and the rest): it is for \
                    hosts, `tether install --upgrade` takes it"
            .into());
    }
    match release::decide(to, Some(running), true).map_err(|e| e.to_string())? {
        Decision::AlreadyInstalled => {
            Err(format!("tether {} ({}) runs already: nothing to update", to.version, to.id()))
        }
        _ => Ok(()),
    }
}
