//! The site's own settings for the machine the image runs on: its host
//! name, a static address where the site has no DHCP, and the site's time
//! servers (none: the clock runs from the machine's RTC alone, as nothing
//! outside the site is reachable). They are kept in the appliance's data
//! directory, on the data partition (the root is read-only and the same on
//! every machine): written by the installer from its answer file and by
//! the console (`PUT /api/v1/system/site`), and applied by root at every
//! boot and on every change (`tether image apply-site`). Root reads what
//! the less trusted appliance wrote, so everything is checked again there
//! and rendered from parsed values only.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use tether_base::files;

/// The settings' file, in the appliance's data directory.
pub const SITE_FILE: &str = "site.json";
/// Left beside it when the console changed the settings: root applies them
/// while it is there (tether-site.path, `PathExists=`), and takes it away
/// before it reads them, so a change made while it applies the one before
/// is applied in turn, never lost.
pub const CHANGED_FILE: &str = "site.changed";
/// At most this many time servers.
const MAX_NTP: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The machine's name on the network (none: `tether`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A static address (none: DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<StaticNetwork>,
    /// The site's NTP servers, by address or name (none: no time service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<String>,
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

/// A setting that cannot be taken, saying which and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path} is not valid: {reason}")]
    File { path: String, reason: String },
    #[error("cannot keep the settings in {path}: {reason}")]
    Io { path: String, reason: String },
}

impl Site {
    pub fn check(&self) -> Result<(), SiteError> {
        if let Some(name) = &self.hostname {
            check_hostname("hostname", name)?;
        }
        if let Some(network) = &self.network {
            let address = address(&network.address)?;
            let others =
                network.gateway.iter().map(|ip| ("gateway", ip)).chain(network.dns.iter().map(|ip| ("dns", ip)));
            for (what, ip) in others {
                if ip.is_ipv4() != address.is_ipv4() {
                    return Err(invalid(format!("network.{what} {ip} is not of the address's kind ({address})")));
                }
            }
        }
        if self.ntp.len() > MAX_NTP {
            return Err(invalid(format!("ntp names {} servers; at most {MAX_NTP}", self.ntp.len())));
        }
        for server in &self.ntp {
            if server.parse::<IpAddr>().is_err() {
                check_hostname("ntp", server)?;
            }
        }
        Ok(())
    }

    /// The settings in `dir` (none kept: the image's defaults), checked.
    pub fn read(dir: &Path) -> Result<Site, SiteError> {
        let path = dir.join(SITE_FILE);
        let file_error = |reason: String| SiteError::File { path: path.display().to_string(), reason };
        let text = files::read_if_present(&path).map_err(|e| file_error(format!("{e:#}")))?;
        let Some(text) = text else { return Ok(Site::default()) };
        let site: Site = serde_json::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        site.check().map_err(|e| file_error(e.to_string()))?;
        Ok(site)
    }

    /// Keeps the settings in `dir` (through a fresh file, renamed in).
    pub fn write(&self, dir: &Path) -> Result<(), SiteError> {
        self.check()?;
        let path = dir.join(SITE_FILE);
        let text = serde_json::to_vec_pretty(self).map_err(|e| invalid(e.to_string()))?;
        files::write_with_mode(&path, &text, 0o644)
            .map_err(|e| SiteError::Io { path: path.display().to_string(), reason: e.to_string() })
    }

    /// Keeps the settings in `dir` and asks root to apply them now (the
    /// console's change; the installer's are applied at first boot).
    pub fn hand_over(&self, dir: &Path) -> Result<(), SiteError> {
        self.write(dir)?;
        let path = dir.join(CHANGED_FILE);
        files::write_with_mode(&path, b"", 0o644)
            .map_err(|e| SiteError::Io { path: path.display().to_string(), reason: e.to_string() })
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

    /// The systemd-timesyncd setting of the site's servers, if it has any.
    pub fn timesyncd_file(&self) -> Option<String> {
        (!self.ntp.is_empty()).then(|| format!("[Time]\nNTP={}\n", self.ntp.join(" ")))
    }
}

fn invalid(reason: String) -> SiteError {
    SiteError::Invalid(reason)
}

/// A host name as RFC 1123 has it: labels of letters, digits and inner
/// hyphens, each 1–63 long, 253 in all.
fn check_hostname(what: &str, name: &str) -> Result<(), SiteError> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(invalid(format!(
            "{what} {name:?} is not a host name: letters, digits and hyphens (not first or last), dots between \
             parts, e.g. tether-01"
        )));
    }
    Ok(())
}

/// `ADDRESS/PREFIX`, the prefix within the address's length.
fn address(text: &str) -> Result<IpAddr, SiteError> {
    let wrong =
        || invalid(format!("network.address {text:?} is not an address with its prefix length, e.g. 192.168.10.5/24"));
    let (ip, prefix) = text.split_once('/').ok_or_else(wrong)?;
    let ip: IpAddr = ip.parse().map_err(|_| wrong())?;
    let prefix: u8 = prefix.parse().map_err(|_| wrong())?;
    let most = if ip.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > most || ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(wrong());
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(json: &str) -> Result<Site, String> {
        let site: Site = serde_json::from_str(json).map_err(|e| e.to_string())?;
        site.check().map_err(|e| e.to_string())?;
        Ok(site)
    }

    #[test]
    fn a_static_address_and_time_servers_become_their_files_and_bad_settings_say_what_is_wrong() {
        let s = site(
            r#"{"hostname": "tether-01", "network": {"address": "10.0.2.15/24", "gateway": "10.0.2.2",
                "dns": ["10.0.2.3"]}, "ntp": ["10.0.0.1", "ntp.site.example"]}"#,
        )
        .unwrap();
        assert_eq!(
            s.network_file().unwrap(),
            "[Match]\nName=en*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n"
        );
        assert_eq!(s.timesyncd_file().unwrap(), "[Time]\nNTP=10.0.0.1 ntp.site.example\n");
        let defaults = site(r#"{"hostname": "a.b-c"}"#).unwrap();
        assert_eq!((defaults.network_file(), defaults.timesyncd_file()), (None, None));
        for (json, says) in [
            (r#"{"hostname": "-bad"}"#, "not a host name"),
            (r#"{"hostname": "with space"}"#, "not a host name"),
            (r#"{"network": {"address": "10.0.2.15"}}"#, "prefix length"),
            (r#"{"network": {"address": "10.0.2.15/33"}}"#, "prefix length"),
            (r#"{"network": {"address": "fd00::5/64", "gateway": "10.0.2.2"}}"#, "not of the address's kind"),
            (r#"{"ntp": ["pool.ntp.org\nNTP=evil"]}"#, "not a host name"),
            (r#"{"colour": "blue"}"#, "unknown field"),
        ] {
            let err = site(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
        }
    }

    #[test]
    fn kept_in_the_data_directory_and_read_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Site::read(dir.path()).unwrap(), Site::default(), "nothing kept: the defaults");
        let s = Site { hostname: Some("tether-01".into()), network: None, ntp: vec!["10.0.0.1".into()] };
        s.write(dir.path()).unwrap();
        assert_eq!(Site::read(dir.path()).unwrap(), s);
        std::fs::write(dir.path().join(SITE_FILE), r#"{"hostname": "x y"}"#).unwrap();
        let err = Site::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("site.json is not valid") && err.contains("not a host name"), "{err}");
    }
}
