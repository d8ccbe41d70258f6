//! Writing state files so that a crash never leaves half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// A file operation that failed: what was being done, and the system's error
/// as the source. The one way the crates report a failed file operation.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {source}")]
pub struct IoError {
    what: String,
    #[source]
    source: std::io::Error,
}

impl IoError {
    /// `source`, met while doing `what` ("write the journal").
    pub fn new(what: impl Into<String>, source: std::io::Error) -> IoError {
        IoError { what: what.into(), source }
    }

    /// What turns the error of doing `what` ("create", "read") to `path` into an `IoError`.
    pub fn on(what: &str, path: &Path) -> impl Fn(std::io::Error) -> IoError + use<> {
        let what = format!("{what} {}", path.display());
        move |source| IoError { what: what.clone(), source }
    }

    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), IoError> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file through a temporary name and a rename, then syncs the
/// directory, so a crash leaves either the old file or the new one, never
/// half of one, and a finished write stays written. The temporary file is
/// made anew (whatever was at its name removed, never followed): root
/// writes this way into directories another user owns.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), IoError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let failed = IoError::on("write", &tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(&failed)?;
    f.write_all(contents).map_err(&failed)?;
    f.sync_all().map_err(&failed)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(&failed)?;
    fs::rename(&tmp, path).map_err(IoError::on("write", path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir).map_err(IoError::on("sync", dir))?;
    }
    Ok(())
}

/// An empty directory at `path` that only its owner can enter, replacing
/// whatever an interrupted run left there (a staging area).
pub fn fresh_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    remove_dir_if_present(path)?;
    fs::DirBuilder::new().mode(0o700).create(path)
}

/// Removes `path` and everything under it, if it is there.
pub fn remove_dir_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The text of `path`, or `None` if there is no such file.
pub fn read_if_present(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Makes the entries of `dir` durable: a rename, creation or removal in it
/// survives a crash only once its directory is synced.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Reads a secret (passphrase, share, key file) from `path`, or from stdin
/// when `path` is `-`. A file that group or others could read is refused:
/// a secret that leaked on disk is no secret. One trailing newline is dropped.
pub fn read_secret(path: &Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let bytes = read_secret_bytes(path)?;
    let text = std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    Ok(zeroize::Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned()))
}

/// Like [`read_secret`], byte for byte: nothing dropped.
pub fn read_secret_bytes(path: &Path) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).context("cannot read the secret from stdin")?;
    } else {
        let mut f = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mode = f.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} can be read by group or others (mode {:o}); run `chmod 600 {0}` first",
                path.display(),
                mode & 0o777
            );
        }
        f.read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(bytes)
}
