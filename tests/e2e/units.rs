//! The shipped systemd units (`systemd/`): clean under `systemd-analyze
//! verify`, and as confined as promised under `systemd-analyze security
//! --offline=yes` — tether.service at most 1.5, tether-worker.service at
//! most 2.0 (Caddy's shipped unit scores 9.0, Vault's 6.0, Kanidm's 4.9
//! with the same tool).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{bin, repo_root};

/// Each unit and the exposure it must stay within.
const GOALS: [(&str, f64); 2] = [("tether.service", 1.5), ("tether-worker.service", 2.0)];

fn units_dir() -> PathBuf {
    repo_root().join("systemd")
}

fn analyze(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The units as shipped, but running the binary under test: `verify`
/// checks that the program a unit starts exists.
fn with_this_binary(dir: &Path) -> Vec<PathBuf> {
    GOALS
        .iter()
        .map(|(unit, _)| {
            let text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
            assert!(text.contains("/opt/tether/current/tether "), "{unit} runs the installed version's binary");
            let path = dir.join(unit);
            std::fs::write(&path, text.replace("/opt/tether/current/tether ", &format!("{} ", bin().display())))
                .unwrap();
            path
        })
        .collect()
}

#[test]
fn the_units_verify_clean() {
    let dir = tempfile::tempdir().unwrap();
    let units = with_this_binary(dir.path());
    let args: Vec<&std::ffi::OsStr> =
        std::iter::once("verify".as_ref()).chain(units.iter().map(|u| u.as_os_str())).collect();
    let (ok, said) = analyze(&args);
    assert!(ok && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// The exposure level `systemd-analyze security` gives in what it said.
pub fn exposure_in(said: &str) -> Option<f64> {
    said.lines().find_map(|l| {
        l.split_once("Overall exposure level for ")?.1.split_once(": ")?.1.split(' ').next()?.parse().ok()
    })
}

/// The exposure `systemd-analyze security --offline=yes` gives the unit
/// as shipped, and all it said.
pub fn offline_exposure(unit: &str) -> (f64, String) {
    let path = units_dir().join(unit);
    let (_, said) = analyze(&["security".as_ref(), "--offline=yes".as_ref(), path.as_os_str()]);
    (exposure_in(&said).unwrap_or_else(|| panic!("no exposure level for {unit}: {said}")), said)
}

#[test]
fn each_unit_stays_within_its_exposure_goal() {
    for (unit, goal) in GOALS {
        let (score, said) = offline_exposure(unit);
        assert!(score <= goal, "{unit}: exposure {score} > {goal}:\n{said}");
        println!("{unit}: exposure {score} (goal ≤ {goal})");
    }
}

#[test]
fn the_appliance_unit_is_supervised_by_notify_and_the_watchdog_and_keeps_its_state_private() {
    let text = std::fs::read_to_string(units_dir().join("tether.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "User=tether",
        "StateDirectory=tether",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "LimitCORE=0",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(text.contains(line), "tether.service has {line:?}");
    }
    let users = std::fs::read_to_string(units_dir().join("tether.sysusers")).unwrap();
    assert!(users.lines().any(|l| l.starts_with("u tether ")), "sysusers makes the tether user: {users}");
    assert!(users.lines().any(|l| l.starts_with("u tether-worker ")), "and the worker's: {users}");
}
