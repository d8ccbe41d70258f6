//! `tether screen`: the status screen on the machine's own console (tty1
//! and the serial console of the firmware image), in place of a login
//! prompt. It shows where to connect, the certificate to expect, whether
//! the vault is sealed, and on first boot the setup code — read from the
//! status file `tether serve --status-file` keeps — and it redraws when
//! that changes. Enter asks for the rescue password set during setup
//! (`auth::rescue`) and, given it, becomes a root shell; without one set,
//! there is no login here at all. Started from the USB stick, the machine
//! shows the installer here instead ([`super::install_screen`]).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::tty::{LOOK_EVERY, Shown, Typed, console, run_here, typed_line};
use crate::firmware::installer;
use crate::firmware::offer::{self, Offer};
use tether_domain::auth::rescue;

/// The wait after a wrong rescue password, as login(1) does.
const WRONG_PASSWORD_WAIT: Duration = Duration::from_secs(3);
/// How long the password prompt waits for it.
const PASSWORD_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    dir: super::DataDir,
    /// The status file `tether serve --status-file` keeps.
    #[arg(long, value_name = "FILE", default_value = "/run/tether/status.json")]
    status_file: PathBuf,
    /// Print the screen once and exit (no rescue login).
    #[arg(long)]
    once: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Started from the USB stick: the installer, not the appliance, runs.
    if installer::running() && !args.once {
        return super::install_screen::run();
    }
    let dir = &args.dir.data_dir;
    let offers = Path::new(offer::OFFERS_DIR);
    let draw = || {
        let on_stick = Offer::current(offers);
        (render(&read_status(&args.status_file), &addresses(), rescue::is_set(dir), on_stick.as_ref()), on_stick)
    };
    if args.once {
        print!("{}", draw().0);
        return Ok(ExitCode::SUCCESS);
    }
    let mut shown = Shown::default();
    loop {
        let (screen, on_stick) = draw();
        shown.show(screen)?;
        // Only this reads the console, and only once a line is there: what
        // is typed after the rescue shell starts is the shell's.
        match typed_line(LOOK_EVERY)? {
            Typed::Nothing => {}
            Typed::Line(line) => {
                match on_stick {
                    Some(update) if line.trim() == "update" => install(&update)?,
                    _ => rescue_login(dir)?,
                }
                shown.forget();
            }
            // The console went away (hung up): systemd starts a new screen.
            Typed::HungUp => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// The status the appliance keeps, or `Null` while it is not running.
fn read_status(path: &Path) -> Value {
    std::fs::read(path).ok().and_then(|text| serde_json::from_slice(&text).ok()).unwrap_or(Value::Null)
}

/// The screen's text: what an operator at the machine needs to reach it,
/// and the update on a USB stick, if one is in.
fn render(status: &Value, addresses: &[IpAddr], rescue_set: bool, on_stick: Option<&Offer>) -> String {
    let s = |key: &str| status[key].as_str().unwrap_or_default();
    let mut out = format!("Tether appliance {}\n\n", s("version"));
    if status.is_null() {
        out.push_str("The appliance is not running (yet). This screen updates by itself.\n");
    } else {
        let port = s("listen").parse::<SocketAddr>().map(|a| a.port()).unwrap_or(8443);
        let listen_ip = s("listen").parse::<SocketAddr>().map(|a| a.ip()).ok();
        let shown_at: Vec<IpAddr> = match listen_ip {
            Some(ip) if !ip.is_unspecified() => vec![ip],
            _ => addresses.to_vec(),
        };
        if shown_at.is_empty() {
            out.push_str("Console        no network address yet (is the cable in?)\n");
        }
        for (i, ip) in shown_at.iter().enumerate() {
            let at = SocketAddr::new(*ip, port);
            out.push_str(&format!("{:<15}https://{at}/\n", if i == 0 { "Console" } else { "" }));
        }
        if s("mode") == "setup" {
            out.push_str(&format!("Certificate    SHA-256 {}\n", s("certificate_fingerprint")));
            out.push_str(&format!("Setup code     {}\n\n", s("setup_code")));
            out.push_str("First boot: open the console address in a browser, check that the certificate's\n");
            out.push_str("fingerprint is the one above, and enter the setup code (single use, 30 minutes;\n");
            out.push_str("restart the machine for a new one).\n");
        } else {
            out.push_str(&format!("CA             SHA-256 {}\n", s("ca_fingerprint")));
            out.push_str(&format!("Workers        {}\n", s("worker_listen")));
        }
        out.push_str(&format!("\nStatus         {}\n", s("status")));
    }
    if let Some(update) = on_stick {
        let file = update.bundle.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
        out.push_str(&format!("\nUpdate         tether {} on the USB stick ({file})\n", update.version));
        out.push_str("               type update and press Enter to check it and install it;\n");
        out.push_str("               the machine restarts into it, and comes back if it fails.\n");
    }
    out.push('\n');
    out.push_str(if rescue_set {
        "Rescue login: press Enter, then give the rescue password set during setup.\n"
    } else {
        "There is no login at this console (no rescue password was set during setup).\n"
    });
    out
}

/// Installs the update on the stick, as `tether update apply` does from a
/// shell: its checks and progress on this console; it reboots when done.
fn install(update: &Offer) -> anyhow::Result<()> {
    println!("\nChecking and installing {} …", update.bundle.display());
    let args = ["update".as_ref(), "apply".as_ref(), "--reboot".as_ref(), update.bundle.as_os_str()];
    run_here(&args, "The update was not installed", PASSWORD_WAIT)
}

/// Asks for the rescue password (the next line typed, echo off); given
/// it, becomes a root login shell.
fn rescue_login(dir: &Path) -> anyhow::Result<()> {
    if !rescue::is_set(dir) {
        println!("No rescue password was set during setup: there is no login here.");
        std::thread::sleep(WRONG_PASSWORD_WAIT);
        return Ok(());
    }
    print!("Rescue password: ");
    std::io::stdout().flush()?;
    // Where the console is a terminal (not a pipe), what is typed is not shown.
    let echo = super::vault::Echo::off().ok();
    let typed = typed_line(PASSWORD_WAIT)?;
    drop(echo);
    println!();
    let Typed::Line(password) = typed else {
        println!("No password given.");
        return Ok(());
    };
    match rescue::check(dir, &password) {
        Ok(true) => {
            tracing::warn!("rescue login at the console: a root shell");
            println!("Rescue shell: leave it with `exit`; the status screen comes back.");
            let err = std::process::Command::new("/bin/bash")
                .arg("--login")
                .stderr(console()?)
                .env_clear()
                .env("HOME", "/root")
                .env("USER", "root")
                .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .env("TERM", std::env::var("TERM").unwrap_or_else(|_| "linux".into()))
                .current_dir("/")
                .exec();
            Err(err).context("cannot start the rescue shell")
        }
        Ok(false) => {
            tracing::warn!("a wrong rescue password at the console");
            std::thread::sleep(WRONG_PASSWORD_WAIT);
            println!("That is not the rescue password.");
            Ok(())
        }
        Err(e) => {
            println!("The rescue login cannot check passwords: {e}");
            std::thread::sleep(WRONG_PASSWORD_WAIT);
            Ok(())
        }
    }
}

/// The machine's own addresses (not loopback, not link-local), from the
/// kernel's tables in /proc.
fn addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = std::fs::read_to_string("/proc/net/fib_trie")
        .map(|t| ipv4_locals(&t))
        .unwrap_or_default()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    out.extend(std::fs::read_to_string("/proc/net/if_inet6").map(|t| ipv6_globals(&t)).unwrap_or_default());
    out
}

/// The local IPv4 addresses in /proc/net/fib_trie: each `|-- ADDR` followed
/// by a `/32 host LOCAL` line.
fn ipv4_locals(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse::<Ipv4Addr>().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(addr) = last
            && !addr.is_loopback()
            && !found.contains(&addr)
        {
            found.push(addr);
        }
    }
    found
}

/// The global-scope IPv6 addresses in /proc/net/if_inet6 (32 hex digits,
/// index, prefix length, scope, flags, name).
fn ipv6_globals(if_inet6: &str) -> Vec<IpAddr> {
    if_inet6
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (hex, scope) = (fields.first()?, fields.get(3)?);
            let bits = u128::from_str_radix(hex, 16).ok()?;
            (*scope == "00").then(|| IpAddr::V6(Ipv6Addr::from(bits)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_kernels_tables_give_the_machines_own_addresses() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.0.2.0\n        /24 link UNICAST\n     |-- 10.0.2.15\n        /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n     |-- 10.0.2.15\n        /32 host LOCAL\n";
        assert_eq!(ipv4_locals(fib), [Ipv4Addr::new(10, 0, 2, 15)]);
        let v6 = "fe80000000000000505400fffe123456 02 40 20 80 enp0s2\n\
                  fd000000000000000000000000000002 02 40 00 80 enp0s2\n\
                  00000000000000000000000000000001 01 80 10 80 lo\n";
        assert_eq!(ipv6_globals(v6), [IpAddr::V6("fd00::2".parse().unwrap())]);
    }

    #[test]
    fn the_screen_shows_the_code_in_setup_mode_and_the_ca_once_serving() {
        let at = [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15))];
        let setup = json!({"mode": "setup", "listen": "0.0.0.0:8443", "certificate_fingerprint": "sha256:ab",
            "setup_code": "1a2b-3c4d-5e6f", "status": "setup mode: open …", "version": "0.1.0"});
        let screen = render(&setup, &at, false, None);
        assert!(screen.contains("https://10.0.2.15:8443/"), "{screen}");
        assert!(screen.contains("Setup code     1a2b-3c4d-5e6f"), "{screen}");
        assert!(screen.contains("SHA-256 sha256:ab"), "{screen}");
        assert!(screen.contains("There is no login at this console"), "{screen}");
        let serving = json!({"mode": "serving", "listen": "0.0.0.0:8443", "worker_listen": "0.0.0.0:9443",
            "ca_fingerprint": "sha256:cd", "status": "sealed — waiting for unseal"});
        let screen = render(&serving, &at, true, None);
        assert!(!screen.contains("Setup code"), "{screen}");
        assert!(screen.contains("sealed — waiting for unseal") && screen.contains("press Enter"), "{screen}");
        assert!(render(&Value::Null, &[], false, None).contains("not running"));
        let stick = Offer {
            device: "/dev/sdb1".into(),
            bundle: "/run/tether-usb/sdb1/t.bundle".into(),
            version: "0.2.0".parse().unwrap(),
        };
        let screen = render(&serving, &at, true, Some(&stick));
        assert!(
            screen.contains("tether 0.2.0 on the USB stick (t.bundle)") && screen.contains("type update"),
            "{screen}"
        );
    }
}
