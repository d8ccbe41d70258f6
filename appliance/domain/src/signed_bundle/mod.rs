//! A signed bundle: how software and models cross the air gap. One
//! uncompressed POSIX tar file (readable with `tar tvf`), its members in
//! this order:
//!
//! 1. `manifest.json` — what the bundle is, and every file with its size and
//!    SHA-256 (a [`Contents`]: the model bundle's and the release bundle's);
//! 2. `manifest.sig` — an ECDSA P-256 signature over a label naming the kind
//!    of bundle and the manifest's exact bytes ([`Signature`]);
//! 3. `files/<path>` for each file, in the manifest's order, nothing else.
//!
//! The signature covers the manifest and the manifest covers every byte of
//! every file, so [`verify`] proves the whole bundle is what the holder of
//! the key packed. It reads the bundle once, front to back, and trusts
//! nothing it has not checked: the signature before the manifest is read,
//! the manifest's shape before any file, each file's size and digest
//! before the next. The format is written up in `offline-models/README.md`
//! and `installer/README.md`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use tether_base::crypto::p256::{KeyError, PrivateKey, PublicKey};
use tether_base::crypto::primitives::digest;

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
const FILES: &str = "files/";
pub(crate) const SIGNATURE_ALGORITHM: &str = "ecdsa-p256-sha256";
/// A manifest this big lists far more files than any bundle has.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
const MAX_SIGNATURE_BYTES: u64 = 4 << 10;
/// The most files one bundle lists.
pub const MAX_FILES: usize = 4096;
const BUFFER: usize = 1 << 20;

/// What a kind of bundle's manifest must say about itself.
pub trait Contents: Serialize + DeserializeOwned {
    /// What the signature covers: this label, then the manifest's bytes. The
    /// label keeps one kind of bundle's signature from passing for another's,
    /// or for any other signed thing.
    const SIGNED_LABEL: &'static [u8];
    /// Who is trusted to sign this kind, for refusals ("this site's model-signing key").
    const TRUSTED: &'static str;
    /// What to do when another key signed it.
    const UNTRUSTED_HINT: &'static str;
    /// Every file the bundle holds, in order.
    fn files(&self) -> &[FileEntry];
    /// Whether the manifest is one that may be acted on: its own rules, and
    /// [`check_files`] for its file list.
    fn check(&self) -> Result<(), String>;
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

/// The sum of the files' sizes.
pub fn total_bytes(files: &[FileEntry]) -> u64 {
    files.iter().map(|f| f.size).sum()
}

/// A file list a bundle may carry: 1 to [`MAX_FILES`] files, each once,
/// under safe relative paths, each with a well-formed digest.
pub fn check_files(files: &[FileEntry]) -> Result<(), String> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(format!("a bundle holds 1 to {MAX_FILES} files"));
    }
    let mut seen = std::collections::HashSet::new();
    for file in files {
        check_file_path(&file.path)?;
        if !seen.insert(file.path.as_str()) {
            return Err(format!("{} is listed twice", file.path));
        }
        if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("{}: sha256 must be 64 lowercase hex digits", file.path));
        }
    }
    Ok(())
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
pub(crate) struct Signature {
    pub algorithm: String,
    /// The signing key's id ([`PublicKey::id`]), so a refusal can say whose it is.
    pub key_id: String,
    /// DER, base64.
    pub signature: String,
}

pub(crate) fn signed_message<M: Contents>(manifest: &[u8]) -> Vec<u8> {
    [M::SIGNED_LABEL, manifest].concat()
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("not a signed bundle of this kind: {0}")]
    NotABundle(String),
    #[error("the bundle is not signed (it has no {SIGNATURE}); pack it again with the signing key")]
    Unsigned,
    #[error("the bundle is signed by key {signed_by}, not by {whom} {trusted}; {hint}")]
    UntrustedKey { signed_by: String, trusted: String, whom: &'static str, hint: &'static str },
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
pub struct Verified<M> {
    pub manifest: M,
    /// The id ([`PublicKey::id`]) of the trusted key that signed it.
    pub key_id: String,
    pub sections: Vec<Section>,
}

/// Packs every regular file under `dir` into a bundle at `out`, signed with
/// `key`; `manifest` makes the manifest from the file list. Written to a
/// temporary name and renamed, so `out` is either whole or absent.
pub fn pack<M: Contents>(
    dir: &Path,
    manifest: impl FnOnce(Vec<FileEntry>) -> M,
    key: &PrivateKey,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<M, BundleError> {
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
    let manifest = manifest(files);
    manifest.check().map_err(BundleError::BadManifest)?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    let signature = Signature {
        algorithm: SIGNATURE_ALGORITHM.into(),
        key_id: key.public().id(),
        signature: base64::engine::general_purpose::STANDARD.encode(key.sign(&signed_message::<M>(&manifest_bytes))?),
    };
    let signature_bytes = serde_json::to_vec_pretty(&signature).map_err(|e| BundleError::BadManifest(e.to_string()))?;

    let partial = out.with_extension("partial");
    let mut done = 0;
    let written = (|| {
        let file = File::create(&partial).map_err(io_error(&partial))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(BUFFER, file));
        append(&mut tar, MANIFEST, manifest_bytes.len() as u64, &manifest_bytes[..], &partial)?;
        append(&mut tar, SIGNATURE, signature_bytes.len() as u64, &signature_bytes[..], &partial)?;
        for entry in manifest.files() {
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

pub(crate) fn append(
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

/// Checks the bundle at `path` against the keys trusted to sign its kind:
/// the signature, the manifest, then every file's size and SHA-256.
/// Writes nothing.
pub fn verify<M: Contents>(
    path: &Path,
    trusted: &[PublicKey],
    progress: &mut dyn FnMut(Progress),
) -> Result<Verified<M>, BundleError> {
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
    let Some(signer) = trusted.iter().find(|key| key.id() == signature.key_id) else {
        let trusted = trusted.iter().map(PublicKey::id).collect::<Vec<_>>().join(", ");
        return Err(BundleError::UntrustedKey {
            signed_by: signature.key_id,
            trusted,
            whom: M::TRUSTED,
            hint: M::UNTRUSTED_HINT,
        });
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(&signature.signature)
        .map_err(|_| BundleError::BadSignature)?;
    if !signer.verifies(&signed_message::<M>(&manifest_bytes), &der) {
        return Err(BundleError::BadSignature);
    }
    let manifest: M = serde_json::from_slice(&manifest_bytes).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    manifest.check().map_err(BundleError::BadManifest)?;

    let total = total_bytes(manifest.files());
    let mut done = 0;
    let mut sections = Vec::with_capacity(manifest.files().len());
    for expected in manifest.files() {
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
pub fn peek_manifest<M: DeserializeOwned>(path: &Path) -> Result<M, BundleError> {
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
