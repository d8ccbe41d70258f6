//! Writing state files so that a crash never leaves half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file through a temporary name and a rename, then syncs the
/// directory, so a crash leaves either the old file or the new one, never
/// half of one, and a finished write stays written.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
