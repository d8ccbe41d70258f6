//! A model bundle: how a model crosses the air gap. One uncompressed POSIX
//! tar file (readable with `tar tvf`), its members in this order:
//!
//! 1. `manifest.json` — the model's name, format, license and origin, and
//!    every file with its size and SHA-256 ([`Manifest`]);
//! 2. `manifest.sig` — an ECDSA P-256 signature over the manifest's exact
//!    bytes by the site's model-signing key ([`Signature`]);
//! 3. `files/<path>` for each file, in the manifest's order, nothing else.
//!
//! The signature covers the manifest and the manifest covers every byte of
//! every file, so [`verify`] proves the whole bundle is what the holder of
//! the key packed. It reads the bundle once, front to back, and trusts
//! nothing it has not checked: the signature before the manifest is read,
//! the manifest's shape before any file, each file's size and digest
//! before the next. The format is written up in `offline-models/README.md`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use tether_base::crypto::p256::{KeyError, PrivateKey, PublicKey};
use tether_base::crypto::primitives::digest;

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
const FILES: &str = "files/";
/// What the signature covers: this label, then the manifest's bytes. The
/// label keeps a bundle signature from passing for any other signed thing.
const SIGNED_LABEL: &[u8] = b"tether.model-bundle.v1\0";
const BUNDLE_VERSION: u32 = 1;
const SIGNATURE_ALGORITHM: &str = "ecdsa-p256-sha256";
/// A manifest this big lists far more files than any model has.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
const MAX_SIGNATURE_BYTES: u64 = 4 << 10;
const MAX_FILES: usize = 4096;
const BUFFER: usize = 1 << 20;

/// How the model's weights are stored, which decides how a server loads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// One `.gguf` file (llama.cpp, Ollama; vLLM too).
    Gguf,
    /// A Hugging Face model directory: `config.json`, `*.safetensors`, tokenizer (vLLM).
    Safetensors,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
        }
    }
}

impl std::str::FromStr for ModelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<ModelFormat, String> {
        match s {
            "gguf" => Ok(ModelFormat::Gguf),
            "safetensors" => Ok(ModelFormat::Safetensors),
            other => Err(format!("unknown model format {other:?}: use gguf or safetensors")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub bundle_version: u32,
    /// The name clients will call the model by (`llama3.1:8b-q4`).
    pub name: String,
    pub format: ModelFormat,
    pub license: String,
    /// Where the model came from (a URL, a vendor's delivery reference).
    pub origin: String,
    /// RFC 3339.
    pub packed_at: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Whether the manifest is one a server can be given safely: a model
    /// name servers accept, paths that stay inside the model's directory,
    /// files that fit the format.
    fn check(&self) -> Result<(), String> {
        if self.bundle_version != BUNDLE_VERSION {
            return Err(format!("bundle version {} (this tether reads {BUNDLE_VERSION})", self.bundle_version));
        }
        check_model_name(&self.name)?;
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(format!("a bundle holds 1 to {MAX_FILES} files"));
        }
        let mut seen = std::collections::HashSet::new();
        for file in &self.files {
            check_file_path(&file.path)?;
            if !seen.insert(file.path.as_str()) {
                return Err(format!("{} is listed twice", file.path));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!("{}: sha256 must be 64 lowercase hex digits", file.path));
            }
        }
        match self.format {
            ModelFormat::Gguf if self.files.len() != 1 || !self.files[0].path.ends_with(".gguf") => {
                Err("a gguf bundle holds exactly one file, named *.gguf".into())
            }
            ModelFormat::Safetensors if !self.files.iter().any(|f| f.path.ends_with(".safetensors")) => {
                Err("a safetensors bundle holds at least one *.safetensors file".into())
            }
            _ => Ok(()),
        }
    }
}

/// A model name both Ollama and a directory of vLLM models accept:
/// lowercase letters, digits, `.`, `_`, `-`, and an optional `:tag`.
pub fn check_model_name(name: &str) -> Result<(), String> {
    let word = |s: &str| {
        (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
    };
    let ok = match name.split_once(':') {
        Some((model, tag)) => word(model) && word(tag),
        None => word(name),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model name {name:?}: use lowercase letters, digits, '.', '_', '-' (up to 64, starting with a letter or \
             digit), optionally ':' and a tag of the same"
        ))
    }
}

/// A relative path of plain names: no `..`, no hidden or empty parts.
fn check_file_path(path: &str) -> Result<(), String> {
    let ok = path.len() <= 255
        && path.split('/').count() <= 8
        && path.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok { Ok(()) } else { Err(format!("file path {path:?}: use relative names of letters, digits, '.', '_', '-'")) }
}

/// `manifest.sig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub algorithm: String,
    /// The signing key's id ([`PublicKey::id`]), so a refusal can say whose it is.
    pub key_id: String,
    /// DER, base64.
    pub signature: String,
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNED_LABEL, manifest].concat()
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("not a model bundle: {0}")]
    NotABundle(String),
    #[error("the bundle is not signed (it has no {SIGNATURE}); pack it again with the site's model-signing key")]
    Unsigned,
    #[error(
        "the bundle is signed by key {signed_by}, not by this site's model-signing key {trusted}; pack it with the \
         site's key, or have a security officer trust that key"
    )]
    UntrustedKey { signed_by: String, trusted: String },
    #[error("the manifest's signature does not verify: the manifest was changed after it was signed")]
    BadSignature,
    #[error("the manifest is invalid: {0}")]
    BadManifest(String),
    #[error("{path} is {actual} bytes, the manifest says {expected}: the bundle is damaged or was tampered with")]
    WrongSize { path: String, expected: u64, actual: u64 },
    #[error("{path} does not match its SHA-256 in the manifest: the bundle is damaged or was tampered with")]
    WrongDigest { path: String },
    #[error("{0} changed while it was being packed; pack again")]
    ChangedWhilePacking(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io { path: path.to_owned(), source }
}

/// How far a long read has come, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// `hashing` or `writing` (packing), `verifying`.
    pub stage: &'static str,
    pub done: u64,
    pub total: u64,
}

/// A file inside a verified bundle: where its bytes lie in the bundle file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub entry: FileEntry,
    pub offset: u64,
}

/// A bundle whose signature and every file checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    pub key_id: String,
    pub sections: Vec<Section>,
}

/// What `pack` is told about the model; the files come from the directory.
#[derive(Debug, Clone)]
pub struct About {
    pub name: String,
    pub format: ModelFormat,
    pub license: String,
    pub origin: String,
}

/// Packs every regular file under `dir` into a bundle at `out`, signed with
/// `key`. Written to a temporary name and renamed, so `out` is either whole
/// or absent.
pub fn pack(
    dir: &Path,
    about: About,
    key: &PrivateKey,
    out: &Path,
    packed_at: String,
    progress: &mut dyn FnMut(Progress),
) -> Result<Manifest, BundleError> {
    let mut paths = Vec::new();
    walk(dir, dir, &mut paths)?;
    paths.sort();
    let total: u64 = paths.iter().map(|(_, size)| size).sum();
    let mut done = 0;
    let mut files = Vec::with_capacity(paths.len());
    for (path, size) in &paths {
        let full = dir.join(path);
        let file = File::open(&full).map_err(io_error(&full))?;
        let (sha256, read) = digest_of(file, &full, &mut |n| {
            done += n;
            progress(Progress { stage: "hashing", done, total });
        })?;
        if read != *size {
            return Err(BundleError::ChangedWhilePacking(path.clone()));
        }
        files.push(FileEntry { path: path.clone(), size: *size, sha256 });
    }
    let manifest = Manifest {
        bundle_version: BUNDLE_VERSION,
        name: about.name,
        format: about.format,
        license: about.license,
        origin: about.origin,
        packed_at,
        files,
    };
    manifest.check().map_err(BundleError::BadManifest)?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    let signature = Signature {
        algorithm: SIGNATURE_ALGORITHM.into(),
        key_id: key.public().id(),
        signature: base64::engine::general_purpose::STANDARD.encode(key.sign(&signed_message(&manifest_bytes))?),
    };
    let signature_bytes = serde_json::to_vec_pretty(&signature).map_err(|e| BundleError::BadManifest(e.to_string()))?;

    let partial = out.with_extension("partial");
    let mut done = 0;
    let written = (|| {
        let file = File::create(&partial).map_err(io_error(&partial))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(BUFFER, file));
        append(&mut tar, MANIFEST, manifest_bytes.len() as u64, &manifest_bytes[..], &partial)?;
        append(&mut tar, SIGNATURE, signature_bytes.len() as u64, &signature_bytes[..], &partial)?;
        for entry in &manifest.files {
            let full = dir.join(&entry.path);
            let file = File::open(&full).map_err(io_error(&full))?;
            let mut tick = |n| {
                done += n;
                progress(Progress { stage: "writing", done, total });
            };
            let mut reader = Digesting::new(file.take(entry.size), &mut tick);
            append(&mut tar, &format!("{FILES}{}", entry.path), entry.size, &mut reader, &full)?;
            if reader.finish() != entry.sha256 {
                return Err(BundleError::ChangedWhilePacking(entry.path.clone()));
            }
        }
        let file = tar
            .into_inner()
            .map_err(io_error(&partial))?
            .into_inner()
            .map_err(|e| BundleError::Io { path: partial.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io_error(&partial))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out).map_err(io_error(out))?;
    Ok(manifest)
}

/// Every regular file under `dir`, relative, with its size. Links and
/// other special files are refused: a bundle carries plain bytes.
fn walk(root: &Path, dir: &Path, found: &mut Vec<(String, u64)>) -> Result<(), BundleError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
        if kind.is_dir() {
            walk(root, &path, found)?;
        } else if kind.is_file() {
            check_file_path(&relative).map_err(BundleError::BadManifest)?;
            found.push((relative, entry.metadata().map_err(io_error(&path))?.len()));
        } else {
            return Err(BundleError::BadManifest(format!("{relative} is not a regular file")));
        }
    }
    Ok(())
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
    source: &Path,
) -> Result<(), BundleError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data).map_err(io_error(source))
}

/// Checks the bundle at `path` against the site's key: the signature, the
/// manifest, then every file's size and SHA-256. Writes nothing.
pub fn verify(path: &Path, trusted: &PublicKey, progress: &mut dyn FnMut(Progress)) -> Result<Verified, BundleError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(BUFFER, file));
    let mut entries = archive.entries().map_err(|e| BundleError::NotABundle(e.to_string()))?;
    let mut next = |expect: &str| -> Result<Option<tar::Entry<'_, _>>, BundleError> {
        match entries.next() {
            None => Ok(None),
            Some(Err(e)) => Err(BundleError::NotABundle(format!("reading the member after {expect}: {e}"))),
            Some(Ok(entry)) => Ok(Some(entry)),
        }
    };

    let manifest_bytes = match next("the start")? {
        Some(entry) if member_name(&entry) == MANIFEST => read_small(entry, MAX_MANIFEST_BYTES, MANIFEST)?,
        _ => return Err(BundleError::NotABundle(format!("its first member is not {MANIFEST}"))),
    };
    let signature: Signature = match next(MANIFEST)? {
        Some(entry) if member_name(&entry) == SIGNATURE => {
            serde_json::from_slice(&read_small(entry, MAX_SIGNATURE_BYTES, SIGNATURE)?)
                .map_err(|e| BundleError::NotABundle(format!("{SIGNATURE}: {e}")))?
        }
        _ => return Err(BundleError::Unsigned),
    };
    if signature.algorithm != SIGNATURE_ALGORITHM {
        return Err(BundleError::NotABundle(format!("unknown signature algorithm {:?}", signature.algorithm)));
    }
    if signature.key_id != trusted.id() {
        return Err(BundleError::UntrustedKey { signed_by: signature.key_id, trusted: trusted.id() });
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(&signature.signature)
        .map_err(|_| BundleError::BadSignature)?;
    if !trusted.verifies(&signed_message(&manifest_bytes), &der) {
        return Err(BundleError::BadSignature);
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    manifest.check().map_err(BundleError::BadManifest)?;

    let total = manifest.total_bytes();
    let mut done = 0;
    let mut sections = Vec::with_capacity(manifest.files.len());
    for expected in &manifest.files {
        let member = format!("{FILES}{}", expected.path);
        let entry = match next(&member)? {
            Some(entry) if member_name(&entry) == member => entry,
            _ => return Err(BundleError::NotABundle(format!("{member} is missing or out of order"))),
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BundleError::NotABundle(format!("{member} is not a regular file")));
        }
        if entry.size() != expected.size {
            return Err(BundleError::WrongSize {
                path: expected.path.clone(),
                expected: expected.size,
                actual: entry.size(),
            });
        }
        let offset = entry.raw_file_position();
        let (sha256, read) = digest_of(entry, path, &mut |n| {
            done += n;
            progress(Progress { stage: "verifying", done, total });
        })?;
        if read != expected.size {
            return Err(BundleError::WrongSize { path: expected.path.clone(), expected: expected.size, actual: read });
        }
        if sha256 != expected.sha256 {
            return Err(BundleError::WrongDigest { path: expected.path.clone() });
        }
        sections.push(Section { entry: expected.clone(), offset });
    }
    if let Some(extra) = next("the last file")? {
        return Err(BundleError::NotABundle(format!("{} is not in the manifest", member_name(&extra))));
    }
    Ok(Verified { manifest, key_id: signature.key_id, sections })
}

/// Reads the bundle's manifest without checking anything, to show what a
/// bundle claims to be. Never a basis for trusting it.
pub fn peek_manifest(path: &Path) -> Result<Manifest, BundleError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut entries = archive.entries().map_err(|e| BundleError::NotABundle(e.to_string()))?;
    match entries.next() {
        Some(Ok(entry)) if member_name(&entry) == MANIFEST => {
            serde_json::from_slice(&read_small(entry, MAX_MANIFEST_BYTES, MANIFEST)?)
                .map_err(|e| BundleError::BadManifest(e.to_string()))
        }
        _ => Err(BundleError::NotABundle(format!("its first member is not {MANIFEST}"))),
    }
}

fn member_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&entry.path_bytes()).into_owned()
}

fn read_small(entry: impl Read, cap: u64, name: &str) -> Result<Vec<u8>, BundleError> {
    let mut bytes = Vec::new();
    entry.take(cap + 1).read_to_end(&mut bytes).map_err(|e| BundleError::NotABundle(format!("{name}: {e}")))?;
    if bytes.len() as u64 > cap {
        return Err(BundleError::NotABundle(format!("{name} is larger than {cap} bytes")));
    }
    Ok(bytes)
}

/// The SHA-256 (hex) of everything `reader` yields, and how many bytes that was.
fn digest_of(reader: impl Read, path: &Path, tick: &mut dyn FnMut(u64)) -> Result<(String, u64), BundleError> {
    let mut reader = Digesting::new(reader, tick);
    io::copy(&mut reader, &mut io::sink()).map_err(io_error(path))?;
    let read = reader.read;
    Ok((reader.finish(), read))
}

/// A reader that digests what passes through it and reports each read.
pub struct Digesting<'a, R> {
    inner: R,
    context: digest::Context,
    read: u64,
    tick: &'a mut dyn FnMut(u64),
}

impl<'a, R: Read> Digesting<'a, R> {
    pub fn new(inner: R, tick: &'a mut dyn FnMut(u64)) -> Self {
        Digesting { inner, context: digest::Context::new(&digest::SHA256), read: 0, tick }
    }

    /// The SHA-256 of what was read, in lowercase hex.
    pub fn finish(self) -> String {
        hex::encode(self.context.finish().as_ref())
    }
}

impl<R> std::fmt::Debug for Digesting<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digesting").field("read", &self.read).finish_non_exhaustive()
    }
}

impl<R: Read> Read for Digesting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.context.update(&buf[..n]);
        self.read += n as u64;
        (self.tick)(n as u64);
        Ok(n)
    }
}

/// Opens the bundle at one of its sections, to read that file's bytes.
pub fn open_section(path: &Path, section: &Section) -> Result<io::Take<File>, BundleError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    file.seek(SeekFrom::Start(section.offset)).map_err(io_error(path))?;
    Ok(file.take(section.entry.size))
}

#[cfg(test)]
mod tests;
