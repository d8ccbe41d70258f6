//! The worker's state directory: its key (0600), certificate, the CA it
//! trusts, and its identity. Written atomically, so a crash mid-renewal
//! leaves the old identity or the new one, never a mix.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use tether_base::files::{write_private, write_with_mode};

const KEY: &str = "worker.key";
const CERT: &str = "worker.pem";
const CA: &str = "ca.pem";
const IDENTITY: &str = "worker.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdentityFile {
    worker_id: String,
    broker: String,
    labels: Vec<String>,
}

/// Everything the worker needs to talk to its broker.
#[derive(Clone)]
pub struct Identity {
    pub worker_id: String,
    pub broker: String,
    pub labels: Vec<String>,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("worker_id", &self.worker_id)
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct StateDir(PathBuf);

impl StateDir {
    pub fn new(path: &Path) -> anyhow::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("cannot create the state directory {}", path.display()))?;
        Ok(StateDir(path.to_path_buf()))
    }

    /// The saved identity, if this worker enrolled before.
    pub fn load(&self) -> anyhow::Result<Option<Identity>> {
        let id_path = self.0.join(IDENTITY);
        if !id_path.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let p = self.0.join(name);
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
        };
        let file: IdentityFile = serde_json::from_str(&read(IDENTITY)?).context("worker.json is damaged")?;
        Ok(Some(Identity {
            worker_id: file.worker_id,
            broker: file.broker,
            labels: file.labels,
            ca_pem: read(CA)?,
            cert_pem: read(CERT)?,
            key_pem: read(KEY)?,
        }))
    }

    /// Saves an identity. The identity file goes last: it is what marks the
    /// directory as enrolled.
    pub fn save(&self, id: &Identity) -> anyhow::Result<()> {
        write_private(&self.0.join(KEY), id.key_pem.as_bytes())?;
        write_with_mode(&self.0.join(CERT), id.cert_pem.as_bytes(), 0o644)?;
        write_with_mode(&self.0.join(CA), id.ca_pem.as_bytes(), 0o644)?;
        let file =
            IdentityFile { worker_id: id.worker_id.clone(), broker: id.broker.clone(), labels: id.labels.clone() };
        write_with_mode(&self.0.join(IDENTITY), &serde_json::to_vec_pretty(&file)?, 0o644)?;
        Ok(())
    }
}
