//! The installer's questions at the console for the site's settings: the
//! host name, DHCP or a static address (with its gateway and DNS servers),
//! the site's time servers. A machine on a network without DHCP is only
//! reachable once it has its address, so the console installer asks what
//! the answer file would have said. Enter keeps the default; a wrong
//! answer says why and is asked again; everything can be changed later in
//! the console (Network and time).

use std::io::{BufRead, Write};
use std::net::IpAddr;

use anyhow::Context;

use crate::firmware::site::{Site, StaticNetwork};

/// Asks on `output` and reads from `input` until every answer is taken.
pub fn ask(input: &mut impl BufRead, output: &mut impl Write) -> anyhow::Result<Site> {
    writeln!(output, "\nThe machine's settings (Enter takes what is in brackets; the console can change them later):")?;
    let hostname = ask_until_taken(input, output, "Host name [tether]: ", |answer| {
        let hostname = (!answer.is_empty()).then(|| answer.to_owned());
        Site { hostname: hostname.clone(), ..Site::default() }.check()?;
        Ok(hostname)
    })?;
    let address =
        ask_until_taken(input, output, "Address with its prefix length, e.g. 192.168.10.5/24 [DHCP]: ", |a| {
            if a.is_empty() || a.eq_ignore_ascii_case("dhcp") {
                return Ok(None);
            }
            with_network(StaticNetwork { address: a.to_owned(), gateway: None, dns: vec![] })?;
            Ok(Some(a.to_owned()))
        })?;
    let network = match address {
        None => None,
        Some(address) => Some(ask_gateway_and_dns(input, output, address)?),
    };
    let question = "Time servers (NTP), separated by spaces [none: the machine's own clock]: ";
    let ntp = ask_until_taken(input, output, question, |answer| {
        let ntp: Vec<String> = answer.split_whitespace().map(str::to_owned).collect();
        Site { ntp: ntp.clone(), ..Site::default() }.check()?;
        Ok(ntp)
    })?;
    Ok(Site { hostname, network, ntp })
}

/// The rest of a static address: its gateway and DNS servers.
fn ask_gateway_and_dns(
    input: &mut impl BufRead,
    output: &mut impl Write,
    address: String,
) -> anyhow::Result<StaticNetwork> {
    let mut network = StaticNetwork { address, gateway: None, dns: vec![] };
    network.gateway = ask_until_taken(input, output, "Gateway [none]: ", |answer| {
        let gateway = if answer.is_empty() { None } else { Some(ip("gateway", answer)?) };
        with_network(StaticNetwork { gateway, ..network.clone() })?;
        Ok(gateway)
    })?;
    network.dns = ask_until_taken(input, output, "DNS servers, separated by spaces [none]: ", |answer| {
        let dns = addresses("DNS server", answer)?;
        with_network(StaticNetwork { dns: dns.clone(), ..network.clone() })?;
        Ok(dns)
    })?;
    Ok(network)
}

/// Asks `question` until `take` accepts the (trimmed) answer, saying why
/// it did not. The input ending is an error: nothing was answered.
fn ask_until_taken<T>(
    input: &mut impl BufRead,
    output: &mut impl Write,
    question: &str,
    mut take: impl FnMut(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    loop {
        write!(output, "{question}")?;
        output.flush()?;
        let mut line = String::new();
        let read = input.read_line(&mut line).context("cannot read the answer")?;
        anyhow::ensure!(read > 0, "the console closed before every question was answered");
        match take(line.trim()) {
            Ok(taken) => return Ok(taken),
            Err(why) => writeln!(output, "  {why:#}")?,
        }
    }
}

fn with_network(network: StaticNetwork) -> anyhow::Result<()> {
    Ok(Site { network: Some(network), ..Site::default() }.check()?)
}

/// Addresses separated by spaces (none: an empty answer).
fn addresses(what: &str, answer: &str) -> anyhow::Result<Vec<IpAddr>> {
    answer.split_whitespace().map(|a| ip(what, a)).collect()
}

fn ip(what: &str, text: &str) -> anyhow::Result<IpAddr> {
    text.parse().map_err(|_| anyhow::anyhow!("{what} {text:?} is not an IP address, e.g. 192.168.10.1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(typed: &str) -> (anyhow::Result<Site>, String) {
        let mut output = Vec::new();
        let site = ask(&mut typed.as_bytes(), &mut output);
        (site, String::from_utf8(output).unwrap())
    }

    #[test]
    fn enter_everywhere_keeps_the_images_defaults() {
        let (site, _) = asked("\n\n\n");
        assert_eq!(site.unwrap(), Site::default());
    }

    #[test]
    fn a_static_address_asks_for_its_gateway_and_dns_and_wrong_answers_are_asked_again() {
        let typed = "bad_name\ntether-01\n10.0.2.15\n10.0.2.15/24\nfd00::1\n10.0.2.1 10.0.2.2\n10.0.2.2\n10.0.2.3 x\n10.0.2.3\n10.0.0.1\n";
        let (site, said) = asked(typed);
        let site = site.unwrap();
        assert_eq!(site.hostname.as_deref(), Some("tether-01"));
        let network = site.network.unwrap();
        assert_eq!(network.address, "10.0.2.15/24");
        assert_eq!(network.gateway, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(network.dns, ["10.0.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(site.ntp, ["10.0.0.1"]);
        let whys = [
            "is not a host name",
            "prefix length",
            "not of the address's kind",
            "\"10.0.2.1 10.0.2.2\" is not",
            "\"x\" is not",
        ];
        for why in whys {
            assert!(said.contains(why), "{why}: {said}");
        }
    }

    #[test]
    fn the_console_closing_midway_answers_nothing() {
        let (site, _) = asked("tether-01\n");
        assert!(site.unwrap_err().to_string().contains("closed before every question was answered"));
    }
}
