//! The data directory's disk: the reserve kept while there is room and
//! given up when the disk nearly fills (so the audit log stays writable
//! while the API refuses state changes), and the disk-usage alert.

use std::path::Path;

use tether_base::clock::SharedClock;
use tether_store::reserve::{self, Space};

/// The disk-usage alert is raised above this, and again only after usage
/// fell below [`DISK_ALERT_CLEAR`].
pub const DISK_ALERT_PERCENT: u64 = 80;
const DISK_ALERT_CLEAR: u64 = 75;

/// Watches the free space of the data directory: keeps the reserve while
/// there is room, gives it up when the disk is nearly full, and says
/// whether space is low (the API then refuses what is not essential).
#[derive(Debug)]
pub struct Watch {
    store: tether_store::Store,
    clock: SharedClock,
    dir: std::path::PathBuf,
    bytes: u64,
    low: std::sync::atomic::AtomicBool,
    /// The disk-usage alert is raised and not yet cleared.
    alerted: std::sync::atomic::AtomicBool,
}

impl Watch {
    pub fn new(store: tether_store::Store, clock: SharedClock, dir: &Path, bytes: u64) -> Watch {
        Watch {
            store,
            clock,
            dir: dir.to_path_buf(),
            bytes,
            low: std::sync::atomic::AtomicBool::new(false),
            alerted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the disk is low: the reserve given up (or never made).
    pub fn is_low(&self) -> bool {
        self.low.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One look: make the reserve when there is room again, give it up
    /// when less than a quarter of its size is left free.
    pub fn check(&self) -> std::io::Result<Space> {
        let mut space = reserve::keep(&self.dir, self.bytes)?;
        if space.reserve_held && space.available_bytes < self.bytes / 4 {
            reserve::release(&self.dir);
            tracing::warn!(
                available = space.available_bytes,
                "the disk is nearly full: gave up the reserve so that the audit log stays writable; \
                 state changes are refused until space returns"
            );
            space = Space { available_bytes: reserve::available(&self.dir)?, reserve_held: false };
        }
        let was_low = self.low.swap(!space.reserve_held, std::sync::atomic::Ordering::Relaxed);
        self.store.set_frugal(!space.reserve_held);
        self.alert_on_usage()?;
        if was_low && space.reserve_held {
            tracing::info!(available = space.available_bytes, "disk space is back: the reserve is kept again");
        }
        Ok(space)
    }

    /// Raises the disk-usage alert once when usage passes 80%.
    fn alert_on_usage(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let used = reserve::used_percent(&self.dir)?;
        if used < DISK_ALERT_CLEAR {
            self.alerted.store(false, Relaxed);
        } else if used > DISK_ALERT_PERCENT && !self.alerted.load(Relaxed) {
            let subject = self.dir.display().to_string();
            let now = self.clock.now();
            let raised = self.store.write_blocking(move |tx| {
                crate::audit::alerts::raise(tx, now, "disk_usage", &subject, &[("used_percent", used.to_string())])
            });
            // Raised once it is written; a store that cannot write says so itself.
            if raised.is_ok() {
                self.alerted.store(true, Relaxed);
            }
        }
        Ok(())
    }

    /// Looks every `every`, for as long as the appliance runs.
    pub async fn run(self: std::sync::Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let watch = self.clone();
            match tokio::task::spawn_blocking(move || watch.check()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot check the data directory's free space"),
                Err(_) => {}
            }
        }
    }
}
