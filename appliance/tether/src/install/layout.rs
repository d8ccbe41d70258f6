//! Where an installation puts things, under a root (`/` on a host; a
//! scratch directory in tests, or the image's tree when building one).
//!
//! ```text
//! /opt/tether/versions/<version>-<commit>/   one directory per installed release
//!     tether (the standard or the FIPS build, as `variant` says), README.md,
//!     systemd/, models/, firmware/, manifest.json (as the bundle signed it),
//!     role (appliance | worker)
//! /opt/tether/current -> versions/<id>       switched atomically
//! /usr/local/bin/tether -> /opt/tether/current/tether
//! /usr/local/lib/systemd/system/tether.service, tether-worker.service
//! /usr/local/lib/sysusers.d/tether.conf, /usr/local/lib/tmpfiles.d/tether.conf
//! /var/lib/tether          the appliance's data (0700 tether)
//! /var/lib/tether-worker   a worker's identity and task directories (0700 tether-worker)
//! /etc/tether              the worker's join settings (0750 root:tether-worker)
//! /var/backups/tether      the backups taken before each upgrade (0700 root)
//! ```

use std::path::{Path, PathBuf};

/// The manifest a release directory keeps, as the bundle signed it.
pub const MANIFEST: &str = "manifest.json";
/// Which of the bundle's builds a release directory's `tether` is: `standard` or `fips`.
pub const VARIANT: &str = "variant";
/// What the host runs with it: `appliance` or `worker`.
pub const ROLE: &str = "role";
/// The unit that runs the appliance.
pub const SERVICE: &str = "tether.service";
pub const WORKER_SERVICE: &str = "tether-worker.service";

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout { root: root.to_owned() }
    }

    /// `path` (absolute, as the installed system sees it) inside the root.
    pub fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    pub fn opt(&self) -> PathBuf {
        self.at("/opt/tether")
    }

    pub fn versions(&self) -> PathBuf {
        self.at("/opt/tether/versions")
    }

    pub fn version(&self, id: &str) -> PathBuf {
        self.versions().join(id)
    }

    pub fn current(&self) -> PathBuf {
        self.at("/opt/tether/current")
    }

    pub fn bin_link(&self) -> PathBuf {
        self.at("/usr/local/bin/tether")
    }

    pub fn unit(&self, name: &str) -> PathBuf {
        self.at("/usr/local/lib/systemd/system").join(name)
    }

    pub fn sysusers(&self) -> PathBuf {
        self.at("/usr/local/lib/sysusers.d/tether.conf")
    }

    pub fn tmpfiles(&self) -> PathBuf {
        self.at("/usr/local/lib/tmpfiles.d/tether.conf")
    }

    pub fn data(&self) -> PathBuf {
        self.at("/var/lib/tether")
    }

    pub fn worker_data(&self) -> PathBuf {
        self.at("/var/lib/tether-worker")
    }

    pub fn config(&self) -> PathBuf {
        self.at("/etc/tether")
    }

    pub fn backups(&self) -> PathBuf {
        self.at("/var/backups/tether")
    }

    /// Everything the installer owns outright (uninstall removes these).
    pub fn program_files(&self) -> Vec<PathBuf> {
        vec![
            self.unit(SERVICE),
            self.unit(WORKER_SERVICE),
            self.sysusers(),
            self.tmpfiles(),
            self.bin_link(),
            self.opt(),
        ]
    }

    /// What holds the site's data (uninstall keeps these unless purging).
    pub fn data_files(&self) -> Vec<PathBuf> {
        vec![self.data(), self.worker_data(), self.config(), self.backups()]
    }
}
