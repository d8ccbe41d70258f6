//! The disk reserve: a file of zeros beside the store, kept while there is
//! room and given up when the disk fills, so that the store can reopen and
//! the audit log (the record of what is refused meanwhile) stays writable.

use std::io::Write;
use std::path::Path;

/// Its name in the data directory.
pub const RESERVE_FILE: &str = "tether.reserve";

/// Free space, and whether the reserve is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    pub available_bytes: u64,
    pub reserve_held: bool,
}

/// The free space of the file system holding `dir`.
pub fn available(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The size of the file system holding `dir`, as df reckons it (blocks
/// kept back for root left out).
pub fn size(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    let used = stat.f_blocks.saturating_sub(stat.f_bfree);
    Ok(used.saturating_add(stat.f_bavail).saturating_mul(stat.f_frsize))
}

/// How full the file system holding `dir` is, in percent.
pub fn used_percent(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    // As df reckons it: blocks kept back for root count neither as used
    // nor as available (on some disks they are most of the disk).
    let used = stat.f_blocks.saturating_sub(stat.f_bfree);
    let usable = (used + stat.f_bavail).max(1);
    Ok((used * 100).div_ceil(usable))
}

/// Makes the reserve of `bytes` if it is missing and the disk has room for
/// it and as much again. Says where things stand.
pub fn keep(dir: &Path, bytes: u64) -> std::io::Result<Space> {
    let path = dir.join(RESERVE_FILE);
    let mut held = path.exists();
    let mut free = available(dir)?;
    if !held && bytes > 0 && free >= bytes.saturating_mul(2) {
        if let Err(e) = write_zeros(&path, bytes) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        held = true;
        free = available(dir)?;
    }
    Ok(Space { available_bytes: free, reserve_held: held })
}

fn write_zeros(path: &Path, bytes: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // One an older version made may still be open to others.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Gives the reserve's space back to the file system. Says whether there was one.
pub fn release(dir: &Path) -> bool {
    std::fs::remove_file(dir.join(RESERVE_FILE)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_when_there_is_room_and_released_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let space = keep(dir.path(), 1 << 20).unwrap();
        assert!(space.reserve_held);
        assert_eq!(std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap().len(), 1 << 20);
        assert!(release(dir.path()));
        assert!(!release(dir.path()));
        let huge = keep(dir.path(), u64::MAX / 4).unwrap();
        assert!(!huge.reserve_held, "no room for it: not made");
    }
}
