//! The site's own settings for the machine the image runs on: its host
//! name and, where the site has no DHCP, a static address. They are kept on
//! the data partition (the root is read-only and the same on every
//! machine), written by the installer from its answer file, and applied at
//! every boot by `tether site apply` (tether-site.service) before the
//! network starts: the name to the kernel, the address as a systemd-networkd
//! file in /run that comes before the image's DHCP one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use tether_base::files;

/// Where the settings are kept, on the data partition (mounted at /data).
pub const SITE_FILE: &str = "/data/site.toml";
/// Its name there.
pub const SITE_NAME: &str = "site.toml";
/// Where the static address is handed to systemd-networkd (it sorts before
/// the image's 80-dhcp.network, and the first file that matches is used).
pub const NETWORK_FILE: &str = "/run/systemd/network/10-tether-site.network";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The machine's name on the network (none: `tether`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A static address (none: DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<StaticNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNetwork {
    /// The address with its prefix length, as `192.168.10.5/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
}

impl Site {
    /// Checks every setting, saying which is wrong and what is expected.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(name) = &self.hostname {
            check_hostname(name)?;
        }
        if let Some(network) = &self.network {
            let address = address(&network.address)?;
            for (what, ip) in
                network.gateway.iter().map(|ip| ("gateway", ip)).chain(network.dns.iter().map(|ip| ("dns", ip)))
            {
                if ip.is_ipv4() != address.is_ipv4() {
                    bail!("network.{what} {ip} is not of the address's kind ({address})");
                }
            }
        }
        Ok(())
    }

    pub fn read(path: &Path) -> anyhow::Result<Option<Site>> {
        let Some(text) = files::read_if_present(path)? else { return Ok(None) };
        let site: Site = toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        site.check().with_context(|| format!("{} is not valid", path.display()))?;
        Ok(Some(site))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        self.check()?;
        files::write_with_mode(path, toml::to_string(self)?.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The systemd-networkd file of the static address, if there is one.
    pub fn network_file(&self) -> Option<String> {
        let network = self.network.as_ref()?;
        let mut out = format!("[Match]\nName=en*\n\n[Network]\nAddress={}\n", network.address);
        if let Some(gateway) = network.gateway {
            out.push_str(&format!("Gateway={gateway}\n"));
        }
        for dns in &network.dns {
            out.push_str(&format!("DNS={dns}\n"));
        }
        Some(out)
    }
}

/// Applies the settings in `site_file` (none there: the image's defaults).
pub fn apply(site_file: &Path, network_file: &Path, hostname_file: &Path) -> anyhow::Result<Site> {
    let site = Site::read(site_file)?.unwrap_or_default();
    if let Some(name) = &site.hostname {
        std::fs::write(hostname_file, name).with_context(|| format!("cannot set the host name to {name}"))?;
    }
    match site.network_file() {
        Some(text) => {
            let dir = network_file.parent().context("the network file has no directory")?;
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            files::write_with_mode(network_file, text.as_bytes(), 0o644)
                .with_context(|| format!("cannot write {}", network_file.display()))?;
        }
        None => match std::fs::remove_file(network_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", network_file.display()));
            }
            _ => {}
        },
    }
    Ok(site)
}

/// The kernel's host name, as `tether site apply` sets it.
pub fn hostname_file() -> PathBuf {
    PathBuf::from("/proc/sys/kernel/hostname")
}

/// A host name as RFC 1123 has it: labels of letters, digits and inner
/// hyphens, each 1–63 long, 253 in all.
fn check_hostname(name: &str) -> anyhow::Result<()> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        bail!(
            "hostname {name:?} is not a host name: letters, digits and hyphens (not first or last), dots between \
             parts, e.g. tether-01"
        );
    }
    Ok(())
}

/// `ADDRESS/PREFIX`, the prefix within the address's length.
fn address(text: &str) -> anyhow::Result<IpAddr> {
    let wrong = || format!("network.address {text:?} is not an address with its prefix length, e.g. 192.168.10.5/24");
    let (ip, prefix) = text.split_once('/').with_context(wrong)?;
    let ip: IpAddr = ip.parse().ok().with_context(wrong)?;
    let prefix: u8 = prefix.parse().ok().with_context(wrong)?;
    let most = if ip.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > most || ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        bail!(wrong());
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(text: &str) -> anyhow::Result<Site> {
        let site: Site = toml::from_str(text)?;
        site.check()?;
        Ok(site)
    }

    #[test]
    fn the_file_is_on_the_data_partition_as_mounted() {
        assert_eq!(Path::new(SITE_FILE), Path::new("/data").join(SITE_NAME));
    }

    #[test]
    fn a_static_address_becomes_a_networkd_file_and_bad_settings_say_what_is_wrong() {
        let s = site(
            "hostname = \"tether-01\"\n[network]\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\ndns = [\"10.0.2.3\"]\n",
        )
        .unwrap();
        assert_eq!(
            s.network_file().unwrap(),
            "[Match]\nName=en*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n"
        );
        assert_eq!(site("hostname = \"a.b-c\"").unwrap().network_file(), None);
        for (text, says) in [
            ("hostname = \"-bad\"", "not a host name"),
            ("hostname = \"with space\"", "not a host name"),
            ("[network]\naddress = \"10.0.2.15\"", "prefix length"),
            ("[network]\naddress = \"10.0.2.15/33\"", "prefix length"),
            ("[network]\naddress = \"fd00::5/64\"\ngateway = \"10.0.2.2\"", "not of the address's kind"),
            ("colour = \"blue\"", "unknown field"),
        ] {
            let err = format!("{:#}", site(text).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn applied_the_name_and_the_address_are_set_and_without_settings_the_network_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (file, network, hostname) =
            (dir.path().join("site.toml"), dir.path().join("run/10.network"), dir.path().join("hostname"));
        Site {
            hostname: Some("tether-01".into()),
            network: Some(StaticNetwork { address: "10.0.2.15/24".into(), gateway: None, dns: vec![] }),
        }
        .write(&file)
        .unwrap();
        apply(&file, &network, &hostname).unwrap();
        assert_eq!(std::fs::read_to_string(&hostname).unwrap(), "tether-01");
        assert!(std::fs::read_to_string(&network).unwrap().contains("Address=10.0.2.15/24"));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(apply(&file, &network, &hostname).unwrap(), Site::default());
        assert!(!network.exists(), "DHCP again: the static file is gone");
    }
}
