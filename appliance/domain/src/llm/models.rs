//! Models carried into the site as signed bundles ([`super::bundle`]): the
//! site's model-signing key, which a security officer sets and which decides
//! what may enter; the import into a model server; the record of what was
//! imported.
//!
//! An import is checked whole before anything is written anywhere: the
//! bundle is received into a staging file in the data directory, its
//! signature and every file's SHA-256 verified, and only then are the files
//! given to the model server — to Ollama through its blob API (each blob
//! checked again by Ollama against its digest) and its create API, or into
//! a directory the site's vLLM servers load from (copied under a temporary
//! name, checked again, then renamed). The staging file is removed whatever
//! happens. A refused bundle leaves nothing behind; an import that fails at
//! the model server leaves no model (at most content-addressed Ollama blobs
//! no model refers to, which Ollama prunes).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::bundle::{self, BundleError, FileEntry, Manifest, Verified};
use super::upstreams::{self, Upstream, UpstreamKind};
use crate::audit::{self, Event, Origin, Resource};
use crate::vault::Vault;
use tether_base::clock::{SharedClock, Timestamp};
use tether_base::crypto::p256::PublicKey;
use tether_base::files::IoError;
use tether_store::{self as store, Collection, ReadTx, Store, WriteTx};

const SIGNING_KEY: Collection<TrustedKey> = Collection::new("llm_model_signing_key");
const SIGNING_KEY_ID: &[u8] = b"site";
/// Keyed by model name.
const MODELS: Collection<ImportedModel> = Collection::new("llm_models");
/// Under the data directory.
const STAGING_DIR: &str = "model-imports";
/// Ollama answers a create only when the model is built; a big model takes a while.
const CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Whether the model server already has a blob: a quick question.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The site's model-signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustedKey {
    pub pem: String,
    pub key_id: String,
    pub set_at: Timestamp,
    pub set_by: String,
}

/// Where an imported model went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    Ollama { upstream: String },
    VllmDir { path: PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedModel {
    /// What the bundle's signed manifest says.
    pub manifest: Manifest,
    /// The key that signed the bundle.
    pub key_id: String,
    pub destination: Destination,
    pub imported_at: Timestamp,
    pub imported_by: String,
}

/// What the API shows of an imported model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    pub format: String,
    pub license: String,
    pub origin: String,
    pub packed_at: String,
    pub bytes: u64,
    pub files: Vec<FileEntry>,
    pub key_id: String,
    /// `ollama` or `vllm-dir`.
    pub into: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub imported_at: String,
    pub imported_by: String,
}

impl From<&ImportedModel> for ModelInfo {
    fn from(m: &ImportedModel) -> ModelInfo {
        let (into, upstream, path) = match &m.destination {
            Destination::Ollama { upstream } => ("ollama", Some(upstream.clone()), None),
            Destination::VllmDir { path } => ("vllm-dir", None, Some(path.display().to_string())),
        };
        let manifest = &m.manifest;
        ModelInfo {
            name: manifest.name.clone(),
            format: manifest.format.as_str().into(),
            license: manifest.license.clone(),
            origin: manifest.origin.clone(),
            packed_at: manifest.packed_at.clone(),
            bytes: manifest.total_bytes(),
            files: manifest.files.clone(),
            key_id: m.key_id.clone(),
            into: into.into(),
            upstream,
            path,
            imported_at: m.imported_at.to_rfc3339(),
            imported_by: m.imported_by.clone(),
        }
    }
}

/// Where an import is asked to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An Ollama upstream: the one named, or the only one there is.
    Ollama { upstream: Option<String> },
    /// `vllm_model_dir` from `tether.toml`.
    VllmDir,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("another model import is under way; wait for it to finish")]
    Busy,
    #[error(
        "no model-signing key is trusted yet: a security officer sets the site's key with `tether models trust \
         KEY.pub`"
    )]
    NoSigningKey,
    #[error("the bundle was refused, nothing was imported: {0}")]
    Refused(BundleError),
    #[error("a model named {0} was imported already; pack the new one under another name or tag")]
    Exists(String),
    #[error("{0}")]
    NoUpstream(String),
    #[error("this appliance has no vllm_model_dir in tether.toml, so it cannot place models for vLLM")]
    NoVllmDir,
    #[error("{0} exists already in the vLLM model directory")]
    PathTaken(PathBuf),
    #[error("the model server refused the import: {0}")]
    ModelServer(String),
    #[error("the model server could not be reached: {}", tether_base::tls::error_chain(.0))]
    ModelServerUnreachable(#[source] reqwest::Error),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the trusted model-signing key in the store does not load: {0}")]
    StoredKey(#[source] tether_base::crypto::p256::KeyError),
    #[error("the import's worker thread stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Vault(#[from] crate::vault::Error),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |e| ImportError::Io(IoError::new(what, e))
}

/// A bundle that could not be read is the disk's failure; any other
/// failure is the bundle's, and refuses it.
fn unreadable_or_refused(e: BundleError) -> ImportError {
    match e {
        BundleError::Io { path, source } => ImportError::Io(IoError::on("read", &path)(source)),
        refused => ImportError::Refused(refused),
    }
}

/// The key bundles must be signed with, if one is set.
pub fn signing_key(tx: &ReadTx) -> Result<Option<TrustedKey>, store::Error> {
    tx.get(SIGNING_KEY, SIGNING_KEY_ID)
}

/// Sets (or replaces) the site's model-signing key.
pub fn set_signing_key(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    by: &str,
    key: &PublicKey,
) -> Result<TrustedKey, store::Error> {
    let previous = tx.get(SIGNING_KEY, SIGNING_KEY_ID)?;
    let trusted = TrustedKey { pem: key.to_pem(), key_id: key.id(), set_at: now, set_by: by.to_owned() };
    tx.put(SIGNING_KEY, SIGNING_KEY_ID, &trusted)?;
    let mut event = Event::new(
        "llm.model_signing_key_set",
        if previous.is_some() { "update" } else { "create" },
        Resource::new("model_signing_key", &trusted.key_id),
    );
    if let Some(previous) = previous {
        event = event.detail("replaced_key_id", previous.key_id);
    }
    audit::append(tx, now, origin, event)?;
    Ok(trusted)
}

pub fn list(tx: &ReadTx) -> Result<Vec<ImportedModel>, store::Error> {
    tx.values(MODELS)
}

fn record(tx: &mut WriteTx<'_>, origin: &Origin, model: &ImportedModel) -> Result<(), ImportError> {
    let name = &model.manifest.name;
    if tx.get(MODELS, name.as_bytes())?.is_some() {
        return Err(ImportError::Exists(name.clone()));
    }
    tx.put(MODELS, name.as_bytes(), model)?;
    let info = ModelInfo::from(model);
    let event = Event::new("llm.model_imported", "create", Resource::new("llm_model", name))
        .detail("format", &info.format)
        .detail("bytes", info.bytes)
        .detail("key_id", &model.key_id)
        .detail("into", &info.into)
        .detail("upstream", info.upstream.unwrap_or_default())
        .detail("license", &info.license)
        .detail("origin", &info.origin);
    audit::append(tx, model.imported_at, origin, event)?;
    Ok(())
}

/// Imports bundles, one at a time.
#[derive(Debug)]
pub struct Imports {
    store: Store,
    vault: Arc<Vault>,
    clock: SharedClock,
    staging: PathBuf,
    vllm_dir: Option<PathBuf>,
    running: Arc<tokio::sync::Mutex<()>>,
}

/// A bundle received into the staging directory; removed when dropped.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Staged {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staged model bundle");
        }
    }
}

impl Imports {
    /// Trusts `key` for model bundles: a security officer's (`by`) act, audited.
    pub async fn trust_signing_key(
        &self,
        origin: &Origin,
        by: String,
        key: PublicKey,
    ) -> Result<TrustedKey, store::Error> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| set_signing_key(tx, now, &origin, &by, &key)).await
    }

    /// The trusted bundle key, if one is set, and the models imported.
    pub fn listing(&self) -> Result<(Option<TrustedKey>, Vec<ImportedModel>), store::Error> {
        self.store.read(|tx| Ok((signing_key(tx)?, list(tx)?)))
    }

    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        clock: SharedClock,
        data_dir: &Path,
        vllm_dir: Option<PathBuf>,
    ) -> Self {
        Imports {
            store,
            vault,
            clock,
            staging: data_dir.join(STAGING_DIR),
            vllm_dir,
            running: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Removes what an interrupted import left in the staging directory.
    pub fn tidy(&self) {
        if let Err(e) = tether_base::files::remove_dir_if_present(&self.staging) {
            tracing::warn!(dir = %self.staging.display(), error = %e, "could not clear the model staging directory");
        }
    }

    /// Takes this import's turn and a fresh staging file to receive the
    /// bundle into. Checks first what can be refused before the upload.
    pub fn begin(&self, target: &Target) -> Result<(Staged, std::fs::File), ImportError> {
        let turn = self.running.clone().try_lock_owned().map_err(|_| ImportError::Busy)?;
        if self.store.read(signing_key)?.is_none() {
            return Err(ImportError::NoSigningKey);
        }
        if *target == Target::VllmDir && self.vllm_dir.is_none() {
            return Err(ImportError::NoVllmDir);
        }
        if let Target::Ollama { upstream } = target {
            self.ollama_upstream(upstream.as_deref())?;
        }
        std::fs::create_dir_all(&self.staging).map_err(io("creating the staging directory"))?;
        let path = self.staging.join(format!("{}.tar", uuid::Uuid::now_v7()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("creating the staging file"))?;
        Ok((Staged { path, _turn: turn }, file))
    }

    fn ollama_upstream(&self, name: Option<&str>) -> Result<Upstream, ImportError> {
        let ollamas: Vec<Upstream> =
            self.store.read(upstreams::list)?.into_iter().filter(|u| u.kind == UpstreamKind::Ollama).collect();
        let names = || ollamas.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ");
        match name {
            Some(name) => ollamas.iter().find(|u| u.name == name).cloned().ok_or_else(|| {
                ImportError::NoUpstream(format!("no Ollama upstream is named {name:?} (there are: {})", names()))
            }),
            None if ollamas.len() == 1 => Ok(ollamas[0].clone()),
            None if ollamas.is_empty() => Err(ImportError::NoUpstream(
                "no Ollama upstream is configured; add one with `tether llm upstream set`".into(),
            )),
            None => Err(ImportError::NoUpstream(format!("name the Ollama upstream to import into: {}", names()))),
        }
    }

    /// Verifies the staged bundle, then gives it to the model server and
    /// records it (with its audit record).
    /// `by` is the principal asking, as the record names it.
    pub async fn import(
        &self,
        staged: &Staged,
        target: Target,
        by: String,
        origin: Origin,
    ) -> Result<ImportedModel, ImportError> {
        let trusted = self.store.read(signing_key)?.ok_or(ImportError::NoSigningKey)?;
        let key = PublicKey::from_pem(&trusted.pem).map_err(ImportError::StoredKey)?;
        let path = staged.path.clone();
        let verified = tokio::task::spawn_blocking(move || bundle::verify(&path, &key, &mut |_| {}))
            .await?
            .map_err(unreadable_or_refused);
        let verified = match verified {
            Ok(verified) => verified,
            Err(ImportError::Refused(why)) => {
                // A bundle that fails its checks may be an attack: the officers see it.
                let claimed = bundle::peek_manifest(&staged.path).map(|m| m.name).unwrap_or_else(|_| "unknown".into());
                let (now, reason) = (self.clock.now(), why.to_string());
                let event = Event::new("llm.model_import_refused", "create", Resource::new("llm_model", &claimed))
                    .outcome(audit::Outcome::Denied)
                    .detail("reason", reason);
                self.store.write(move |tx| audit::append(tx, now, &origin, event)).await?;
                return Err(ImportError::Refused(why));
            }
            Err(other) => return Err(other),
        };
        let name = verified.manifest.name.clone();
        if self.store.read(|tx| tx.get(MODELS, name.as_bytes()))?.is_some() {
            return Err(ImportError::Exists(name));
        }
        let destination = match target {
            Target::Ollama { upstream } => {
                let upstream = self.ollama_upstream(upstream.as_deref())?;
                self.load_into_ollama(&upstream, &staged.path, &verified).await?;
                Destination::Ollama { upstream: upstream.name }
            }
            Target::VllmDir => {
                let dir = self.vllm_dir.clone().ok_or(ImportError::NoVllmDir)?;
                let (bundle_path, verified) = (staged.path.clone(), verified.clone());
                let path =
                    tokio::task::spawn_blocking(move || place_in_vllm_dir(&dir, &bundle_path, &verified)).await??;
                Destination::VllmDir { path }
            }
        };
        let model = ImportedModel {
            manifest: verified.manifest,
            key_id: verified.key_id,
            destination,
            imported_at: self.clock.now(),
            imported_by: by,
        };
        let stored = model.clone();
        self.store.write(move |tx| record(tx, &origin, &stored)).await?;
        Ok(model)
    }

    /// Each file as a blob (unless Ollama has it), then the model.
    async fn load_into_ollama(
        &self,
        upstream: &Upstream,
        bundle_path: &Path,
        verified: &Verified,
    ) -> Result<(), ImportError> {
        let client = upstreams::http_client(upstream.ca_pem.as_deref()).map_err(ImportError::ModelServer)?;
        let base = upstream.url.trim_end_matches('/');
        let authorized = |request| upstreams::authorize(&self.vault, upstream, request);
        let unreachable = ImportError::ModelServerUnreachable;
        let mut files = serde_json::Map::new();
        for section in &verified.sections {
            let digest = format!("sha256:{}", section.entry.sha256);
            let blob = format!("{base}/api/blobs/{digest}");
            let have = authorized(client.head(&blob))?.timeout(PROBE_TIMEOUT).send().await.map_err(unreachable)?;
            if !have.status().is_success() {
                let reader = bundle::open_section(bundle_path, section).map_err(unreadable_or_refused)?;
                let response = authorized(client.post(&blob))?
                    .timeout(upload_time(section.entry.size))
                    .header(reqwest::header::CONTENT_LENGTH, section.entry.size)
                    .body(upload_body(reader, |_| {}))
                    .send()
                    .await
                    .map_err(unreachable)?;
                if !response.status().is_success() {
                    return Err(ImportError::ModelServer(refusal(response).await));
                }
            }
            files.insert(section.entry.path.clone(), digest.into());
        }
        let create = serde_json::json!({
            "model": verified.manifest.name,
            "files": files,
            "license": verified.manifest.license,
            "stream": false,
        });
        let response = authorized(client.post(format!("{base}/api/create")))?
            .timeout(CREATE_TIMEOUT)
            .json(&create)
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(ImportError::ModelServer(refusal(response).await));
        }
        let status: serde_json::Value = response.json().await.map_err(unreachable)?;
        match status.get("status").and_then(|s| s.as_str()) {
            Some("success") => Ok(()),
            _ => Err(ImportError::ModelServer(format!("create answered {status}"))),
        }
    }
}

/// How long a blob of `bytes` may take to reach the model server: a minute,
/// and then 10 MB/s (a LAN does ten times that), so that a stalled server
/// cannot hold the import (and the next) forever.
fn upload_time(bytes: u64) -> std::time::Duration {
    std::time::Duration::from_secs(60 + bytes / 10_000_000)
}

/// What a model server said when it refused, cut short.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("{status}: {}", body.trim())
}

/// Copies the files under a temporary name in `dir`, checking each digest
/// again as it is written, then renames the whole directory into place.
fn place_in_vllm_dir(dir: &Path, bundle_path: &Path, verified: &Verified) -> Result<PathBuf, ImportError> {
    let target = dir.join(&verified.manifest.name);
    if target.exists() {
        return Err(ImportError::PathTaken(target));
    }
    let partial = dir.join(format!(".tether-import-{}", uuid::Uuid::now_v7()));
    let copied = (|| {
        for section in &verified.sections {
            let destination = partial.join(&section.entry.path);
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating the model directory"))?;
            }
            let reader = bundle::open_section(bundle_path, section).map_err(unreadable_or_refused)?;
            let mut tick = |_| {};
            let mut reader = bundle::Digesting::new(reader, &mut tick);
            let mut file = std::fs::File::create(&destination).map_err(io("writing the model"))?;
            std::io::copy(&mut reader, &mut file).map_err(io("writing the model"))?;
            file.sync_all().map_err(io("writing the model"))?;
            if reader.finish() != section.entry.sha256 {
                return Err(ImportError::Refused(BundleError::WrongDigest { path: section.entry.path.clone() }));
            }
        }
        tether_base::files::sync_dir(&partial).map_err(io("writing the model"))?;
        std::fs::rename(&partial, &target).map_err(io("moving the model into place"))?;
        tether_base::files::sync_dir(dir).map_err(io("moving the model into place"))
    })();
    if let Err(e) = copied {
        let _ = tether_base::files::remove_dir_if_present(&partial);
        return Err(e);
    }
    Ok(target)
}

/// An HTTP body that streams `reader` (a file, or a section of one) in
/// chunks read on a blocking thread, calling `sent` with each chunk's size.
pub fn upload_body(reader: impl Read + Send + 'static, mut sent: impl FnMut(u64) + Send + 'static) -> reqwest::Body {
    const CHUNK: usize = 256 << 10;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    std::thread::spawn(move || {
        let mut reader = reader;
        loop {
            let mut chunk = vec![0; CHUNK];
            let outcome = match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    sent(n as u64);
                    Ok(bytes::Bytes::from(chunk))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = outcome.is_err();
            // The request was dropped: nobody reads on.
            if tx.blocking_send(outcome).is_err() || failed {
                return;
            }
        }
    });
    reqwest::Body::wrap(ChannelBody(rx))
}

struct ChannelBody(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|r| r.map(http_body::Frame::data)))
    }
}
