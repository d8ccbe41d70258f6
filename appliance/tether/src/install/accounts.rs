//! The service users, made by `systemd-sysusers` from the bundle's
//! sysusers file (in the root, so an image gets them too), and looked up
//! in the root's own `/etc/passwd` and `/etc/group`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The appliance's and the worker's user and group ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounts {
    pub appliance: (u32, u32),
    pub worker: (u32, u32),
}

pub const APPLIANCE_USER: &str = "tether";
pub const WORKER_USER: &str = "tether-worker";
const SYSUSERS: &str = "systemd-sysusers";

/// Whether the tool that makes the users is here; asked before anything is written.
pub fn check_tools() -> anyhow::Result<()> {
    match Command::new(SYSUSERS).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!(
            "{SYSUSERS} is not installed here; the installer needs it to make the service users (Debian: apt-get install systemd)"
        ),
    }
}

/// Makes the users the sysusers file at `config` (inside `root`) names,
/// unless they exist, and answers their ids.
pub fn ensure(root: &Path, config: &Path) -> anyhow::Result<Accounts> {
    super::tree::ensure_dir(&root.join("etc"), 0o755, (0, 0))?;
    let out = Command::new(SYSUSERS)
        .arg(format!("--root={}", root.display()))
        .arg(config)
        .output()
        .with_context(|| format!("cannot run {SYSUSERS}"))?;
    for line in String::from_utf8_lossy(&out.stderr).lines().filter(|l| !l.is_empty()) {
        eprintln!("  {line}");
    }
    if !out.status.success() {
        bail!("{SYSUSERS} could not make the service users ({})", out.status);
    }
    lookup(root)
}

/// The ids of the service users in `root`'s `/etc/passwd`.
pub fn lookup(root: &Path) -> anyhow::Result<Accounts> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))
        .with_context(|| format!("cannot read {}", root.join("etc/passwd").display()))?;
    let ids = |user: &str| -> anyhow::Result<(u32, u32)> {
        passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.len() >= 4 && fields[0] == user)
            .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .with_context(|| format!("there is no user {user} in {}/etc/passwd", root.display()))
    };
    Ok(Accounts { appliance: ids(APPLIANCE_USER)?, worker: ids(WORKER_USER)? })
}

#[cfg(test)]
mod tests {
    #[test]
    fn users_are_read_from_the_roots_passwd() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\ntether:x:999:995::/var/lib/tether:/usr/sbin/nologin\n\
             tether-worker:x:998:994::/var/lib/tether-worker:/usr/sbin/nologin\n",
        )
        .unwrap();
        let accounts = super::lookup(root.path()).unwrap();
        assert_eq!((accounts.appliance, accounts.worker), ((999, 995), (998, 994)));
        std::fs::write(root.path().join("etc/passwd"), "tether:x:999:995::/:/bin/false\n").unwrap();
        let missing = super::lookup(root.path()).unwrap_err().to_string();
        assert!(missing.contains("no user tether-worker"), "{missing}");
    }
}
