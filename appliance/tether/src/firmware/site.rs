//! The site's settings ([`tether_domain::firmware::site`]) applied to the
//! machine the image runs on, as root, before the network starts and again
//! whenever the console changes them (`tether image apply-site`, run by
//! tether-site.service and its path unit): the host name to the kernel; a
//! static address as a systemd-networkd file in /run that comes before the
//! image's DHCP one; the site's time servers as a systemd-timesyncd
//! setting, which is what starts the time service at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use tether_base::files;
pub use tether_domain::firmware::site::{CHANGED_FILE, Site, StaticNetwork};

/// Where the appliance's data directory is on the image (the settings' home).
pub const DATA_DIR: &str = "/var/lib/tether";

/// Where the settings take effect.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The kernel's host name.
    pub hostname: PathBuf,
    /// Handed to systemd-networkd (it sorts before the image's
    /// 80-dhcp.network, and the first file that matches is used).
    pub network: PathBuf,
    /// Handed to systemd-timesyncd, whose unit runs only while it exists.
    pub timesyncd: PathBuf,
}

impl Targets {
    pub fn this_machine() -> Targets {
        Targets {
            hostname: PathBuf::from("/proc/sys/kernel/hostname"),
            network: PathBuf::from("/run/systemd/network/10-tether-site.network"),
            timesyncd: PathBuf::from("/run/systemd/timesyncd.conf.d/tether-site.conf"),
        }
    }
}

/// Applies the settings kept in `data_dir` (none kept: the image's
/// defaults) to `targets`. Answers them. The console's request to apply
/// them is taken away first: one it makes while this runs stays for the
/// next run.
pub fn apply(data_dir: &Path, targets: &Targets) -> anyhow::Result<Site> {
    place(&data_dir.join(CHANGED_FILE), None)?;
    let site = Site::read(data_dir)?;
    let name = site.hostname.as_deref().unwrap_or("tether");
    std::fs::write(&targets.hostname, name).with_context(|| format!("cannot set the host name to {name}"))?;
    place(&targets.network, site.network_file())?;
    place(&targets.timesyncd, site.timesyncd_file())?;
    Ok(site)
}

/// The settings in a line, as the operator reads them.
pub fn describe(site: &Site) -> String {
    format!(
        "host name {}; network {}; time {}",
        site.hostname.as_deref().unwrap_or("tether (the image's)"),
        site.network.as_ref().map_or("by DHCP".to_owned(), |n| match n.gateway {
            Some(gateway) => format!("static, {} via {gateway}", n.address),
            None => format!("static, {}", n.address),
        }),
        if site.ntp.is_empty() {
            "from the machine's clock alone".to_owned()
        } else {
            format!("from {}", site.ntp.join(", "))
        }
    )
}

/// Tells the running services: systemd-networkd reads its files again
/// (and reconfigures the links a new, changed or removed file matches);
/// systemd-timesyncd starts, restarts or stops.
pub fn reload_services(site: &Site) -> anyhow::Result<()> {
    run("networkctl", &["reload"])?;
    let verb = if site.ntp.is_empty() { "stop" } else { "restart" };
    run("systemctl", &[verb, "systemd-timesyncd.service"])
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program).args(args).status().with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(status.success(), "{program} {} failed ({status})", args.join(" "));
    Ok(())
}

/// `text` at `path` (its directory made), or no file there.
fn place(path: &Path, text: Option<String>) -> anyhow::Result<()> {
    match text {
        Some(text) => {
            let dir = path.parent().context("a settings file has no directory")?;
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            files::write_with_mode(path, text.as_bytes(), 0o644)
                .with_context(|| format!("cannot write {}", path.display()))
        }
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_the_name_address_and_time_servers_are_set_and_without_settings_their_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let targets = Targets {
            hostname: dir.path().join("hostname"),
            network: dir.path().join("run/network/10.network"),
            timesyncd: dir.path().join("run/timesyncd.conf.d/t.conf"),
        };
        let site = Site {
            hostname: Some("tether-01".into()),
            network: Some(StaticNetwork { address: "10.0.2.15/24".into(), gateway: None, dns: vec![] }),
            ntp: vec!["10.0.0.1".into()],
        };
        site.hand_over(dir.path()).unwrap();
        assert_eq!(apply(dir.path(), &targets).unwrap(), site);
        assert!(!dir.path().join(CHANGED_FILE).exists(), "the console's request taken");
        assert_eq!(std::fs::read_to_string(&targets.hostname).unwrap(), "tether-01");
        assert!(std::fs::read_to_string(&targets.network).unwrap().contains("Address=10.0.2.15/24"));
        assert!(std::fs::read_to_string(&targets.timesyncd).unwrap().contains("NTP=10.0.0.1"));
        Site::default().write(dir.path()).unwrap();
        assert_eq!(apply(dir.path(), &targets).unwrap(), Site::default());
        assert_eq!(std::fs::read_to_string(&targets.hostname).unwrap(), "tether", "the image's name again");
        assert!(!targets.network.exists() && !targets.timesyncd.exists(), "DHCP and no time service again");
    }
}
