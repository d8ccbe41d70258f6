//! What the host checks look at: this process's privileges (from
//! `/proc/self/status`), whether it can dump core, and who else may read
//! the data directory. Read by the appliance for itself, and by `tether
//! security-check --data-dir` on the appliance's host.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Entries of the data directory looked at, at most (it holds a handful of
/// files and a few directories; the bound keeps a check well under a second).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub euid: u32,
    /// `NoNewPrivs` from `/proc/self/status`; `None` if unreadable.
    pub no_new_privs: Option<bool>,
    /// `CapEff` (the effective capabilities); `None` if unreadable.
    pub cap_eff: Option<u64>,
    pub core_dumps_off: bool,
    /// Paths under the data directory (itself included) that others may
    /// read, write or enter, with their modes.
    pub exposed: Vec<String>,
}

impl HostFacts {
    /// This process, and the data directory `dir`.
    pub fn of_this_process(dir: &Path, core_dumps_off: bool) -> HostFacts {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        HostFacts {
            euid: rustix::process::geteuid().as_raw(),
            no_new_privs: status_field(&status, "NoNewPrivs").map(|v| v == "1"),
            cap_eff: status_field(&status, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok()),
            core_dumps_off,
            exposed: exposed(dir),
        }
    }
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// Files anyone may have: the certificates (workers and browsers are given them).
const PUBLIC: [&str; 2] = [crate::pki::CA_CERT, crate::pki::SERVER_CERT];

/// What under `dir` others (neither the owner nor the group) may use; the
/// public certificates may be read, not written. Symbolic links are not
/// followed.
pub fn exposed(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        seen += 1;
        if seen > MAX_ENTRIES {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        let public = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| PUBLIC.contains(&n));
        let open_to_others = if public { mode & 0o002 != 0 } else { mode & 0o007 != 0 };
        if !meta.file_type().is_symlink() && open_to_others {
            out.push(format!("{} ({mode:04o})", path.display()));
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_others_may_read_are_named_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.path().join("tether.redb");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(exposed(dir.path()).is_empty());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed(dir.path()), [format!("{} (0644)", file.display())]);
        let cert = dir.path().join(crate::pki::CA_CERT);
        std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----").unwrap();
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed(dir.path()).len(), 1, "a certificate is public");
    }

    #[test]
    fn the_process_status_fields_are_read() {
        let status = "Name:\ttether\nNoNewPrivs:\t1\nCapEff:\t0000000000000000\n";
        assert_eq!(status_field(status, "NoNewPrivs"), Some("1"));
        assert_eq!(status_field(status, "CapEff"), Some("0000000000000000"));
        assert_eq!(status_field(status, "CapBnd"), None);
    }
}
