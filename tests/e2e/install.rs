//! The installer, as an operator runs it from the USB stick, into scratch
//! roots (`--root`): `scripts/make-bundle.sh` and `tether bundle verify`;
//! refused bundles (tampered, wrong key, truncated, older) leave the tree
//! byte-identical; install places the expected files, owners and modes;
//! an upgrade keeps tasks and secrets; a release that does not come up is
//! rolled back by itself (its data restored when it changed the store);
//! uninstall keeps the data, `--purge` does not. Installing needs root,
//! which CI has.
//!
//! The bundles here are signed by a key made for the test and named with
//! `--trust`; the versions are the test's, the binary is the one under test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::harness::{Appliance, bin, count_events, repo_root};

/// A key pair made for the test, and a place for its bundles.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let keys = Keys { dir: tempfile::tempdir().unwrap() };
        let out = Command::new(bin()).args(["release", "keygen", "--out"]).arg(keys.private()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        keys
    }

    fn private(&self) -> PathBuf {
        self.dir.path().join("release.key")
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("release.key.pub")
    }

    /// A bundle of the binary under test (or `binary`) as `version`.
    fn bundle(&self, version: &str, binary: Option<&[u8]>) -> PathBuf {
        self.pack(version, binary, None)
    }

    /// A bundle with `tether` (`None`: the binary under test) and, if
    /// given, `tether-fips` (`Some(None)`: the binary under test).
    fn pack(&self, version: &str, tether: Option<&[u8]>, fips: Option<Option<&[u8]>>) -> PathBuf {
        let stage = tempfile::tempdir().unwrap();
        let place = |name: &str, content: Option<&[u8]>| {
            let path = stage.path().join(name);
            match content {
                Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                None => drop(std::fs::copy(bin(), &path).unwrap()),
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        place("tether", tether);
        if let Some(content) = fips {
            place("tether-fips", content);
        }
        std::fs::create_dir(stage.path().join("systemd")).unwrap();
        for name in ["tether.service", "tether-worker.service", "tether.sysusers", "tether.tmpfiles"] {
            std::fs::copy(repo_root().join("systemd").join(name), stage.path().join("systemd").join(name)).unwrap();
        }
        let out_path = self.dir.path().join(format!("tether-{version}.bundle"));
        // A commit of its own per version: one version, one build.
        let commit = format!("{:0>40}", version.replace('.', ""));
        let out = Command::new(bin())
            .args(["release", "pack", "--dir"])
            .arg(stage.path())
            .arg("--key")
            .arg(self.private())
            .arg("--out")
            .arg(&out_path)
            .args(["--release-version", version, "--min-version", "0.1.0", "--commit", &commit])
            .args(["--built", "2026-12-04T00:00:00Z"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out_path
    }
}

/// A root to install into that the service user can reach (as `/` is).
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn tether(args: &[&str], root: &Path, keys: &Keys) -> Output {
    Command::new(bin()).args(args).arg("--root").arg(root).arg("--trust").arg(keys.public()).output().unwrap()
}

fn install(bundle: &Path, upgrade: bool, root: &Path, keys: &Keys) -> Output {
    let mut args = vec!["install", bundle.to_str().unwrap()];
    if upgrade {
        args.push("--upgrade");
    }
    tether(&args, root, keys)
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every path under `root` with its kind, mode, owner and content (or
/// link target): equal snapshots are byte-identical trees.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            "dir".to_owned()
        } else if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else {
            hex::encode(tether_base::secret::sha256(&std::fs::read(&path).unwrap()))
        };
        let key = path.strip_prefix(root).unwrap().display().to_string();
        all.insert(key, format!("{:o} {}:{} {content}", meta.mode(), meta.uid(), meta.gid()));
    }
    all
}

/// `(mode, uid, gid)` of `path` inside `root`.
fn owner_and_mode(root: &Path, path: &str) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(root.join(path.trim_start_matches('/'))).unwrap();
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// The uid and gid `user` got in `root`'s /etc/passwd.
fn ids(root: &Path, user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let fields: Vec<_> = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f[0] == user).unwrap();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn current(root: &Path) -> String {
    std::fs::read_link(root.join("opt/tether/current")).unwrap().display().to_string()
}

#[test]
fn make_bundle_signs_with_the_development_key_and_verify_trusts_only_what_it_is_told() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(repo_root().join("scripts/make-bundle.sh"))
        .arg("--binary")
        .arg(bin())
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bundle = PathBuf::from(stdout.lines().last().expect("it prints the bundle's path last"));
    assert!(bundle.starts_with(out_dir.path()) && bundle.is_file(), "{stdout}");

    let verify = |trust: Option<&Path>| {
        let mut cmd = Command::new(bin());
        cmd.args(["bundle", "verify"]).arg(&bundle);
        if let Some(key) = trust {
            cmd.arg("--trust").arg(key);
        }
        cmd.output().unwrap()
    };
    let pinned_only = verify(None);
    assert_eq!(pinned_only.status.code(), Some(1), "{}", said(&pinned_only));
    assert!(said(&pinned_only).contains("does NOT verify"), "{}", said(&pinned_only));
    assert!(said(&pinned_only).contains("not by the release key this tether pins"), "{}", said(&pinned_only));

    let dev_key = repo_root().join("target/dev-release-key.pub");
    let trusted = verify(Some(&dev_key));
    assert_eq!(trusted.status.code(), Some(0), "{}", said(&trusted));
    let listing = String::from_utf8_lossy(&trusted.stdout);
    for holds in ["tether ", "systemd/tether.service", "systemd/tether.sysusers", "README.md", "verified"] {
        assert!(listing.contains(holds), "{holds} missing: {listing}");
    }
    assert!(listing.contains("(replaces 0.1.0 or later)"), "{listing}");

    // A byte changed anywhere in the binary: refused, and which file says so.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&bundle, bytes).unwrap();
    let tampered = verify(Some(&dev_key));
    assert_eq!(tampered.status.code(), Some(1), "{}", said(&tampered));
    assert!(said(&tampered).contains("tether does not match its SHA-256"), "{}", said(&tampered));
}

#[test]
fn refused_bundles_leave_the_tree_byte_identical_and_install_places_what_it_should() {
    let keys = Keys::new();
    let root = scratch_root();
    let first = install(&keys.bundle("0.2.0", None), false, root.path(), &keys);
    assert!(first.status.success(), "{}", said(&first));
    assert!(said(&first).contains("checked: it came up (setup mode"), "{}", said(&first));

    // What install placed, with the owners and modes the units rely on.
    let r = root.path();
    let (tether, worker) = (ids(r, "tether"), ids(r, "tether-worker"));
    assert_ne!(tether.0, 0);
    let id = "0.2.0-000000000000";
    for (path, want) in [
        ("/opt/tether/versions/0.2.0-000000000000/tether", (0o755, 0, 0)),
        ("/opt/tether/versions/0.2.0-000000000000/manifest.json", (0o644, 0, 0)),
        ("/usr/local/lib/systemd/system/tether.service", (0o644, 0, 0)),
        ("/usr/local/lib/systemd/system/tether-worker.service", (0o644, 0, 0)),
        ("/usr/local/lib/sysusers.d/tether.conf", (0o644, 0, 0)),
        ("/usr/local/lib/tmpfiles.d/tether.conf", (0o644, 0, 0)),
        ("/var/lib/tether", (0o700, tether.0, tether.1)),
        ("/var/lib/tether-worker", (0o700, worker.0, worker.1)),
        ("/etc/tether", (0o750, 0, worker.1)),
        ("/var/backups/tether", (0o700, 0, 0)),
    ] {
        assert_eq!(owner_and_mode(r, path), want, "{path}");
    }
    assert_eq!(current(r), format!("versions/{id}"));
    assert_eq!(std::fs::read_link(r.join("usr/local/bin/tether")).unwrap(), Path::new("/opt/tether/current/tether"));
    assert_eq!(
        std::fs::read_link(r.join("etc/systemd/system/multi-user.target.wants/tether.service")).unwrap(),
        Path::new("/usr/local/lib/systemd/system/tether.service"),
        "enabled at boot"
    );
    assert_eq!(std::fs::read(r.join("opt/tether/current/tether")).unwrap(), std::fs::read(bin()).unwrap());

    let before = snapshot(r);
    let newer = keys.bundle("0.3.0", None);
    let refuse = |bundle: &Path, upgrade: bool, trusting: &Keys, why: &str| {
        let out = install(bundle, upgrade, r, trusting);
        assert_eq!(out.status.code(), Some(1), "{why}: {}", said(&out));
        assert!(said(&out).contains(why), "wanted {why:?}: {}", said(&out));
        assert!(snapshot(r) == before, "refused ({why}) but the tree changed");
    };

    let mut bytes = std::fs::read(&newer).unwrap();
    let tampered = keys.dir.path().join("tampered.bundle");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    refuse(&tampered, true, &keys, "tether does not match its SHA-256");

    let other = Keys::new();
    refuse(&other.bundle("0.3.0", None), true, &keys, "not by the release key this tether pins");

    let truncated = keys.dir.path().join("truncated.bundle");
    let whole = std::fs::read(&newer).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    refuse(&truncated, true, &keys, "bundle");

    refuse(&keys.bundle("0.1.0", None), true, &keys, "refusing to downgrade");
    refuse(&newer, false, &keys, "use `tether install --upgrade`");
    refuse(&keys.dir.path().join("absent.bundle"), true, &keys, "absent.bundle");

    // Named relative to where the operator stands, the root is the same.
    let again = Command::new(bin())
        .current_dir(r.parent().unwrap())
        .arg("install")
        .arg(keys.bundle("0.2.0", None))
        .arg("--root")
        .arg(r.file_name().unwrap())
        .arg("--trust")
        .arg(keys.public())
        .output()
        .unwrap();
    assert!(again.status.success() && said(&again).contains("already installed"), "{}", said(&again));
    assert!(snapshot(r) == before, "reinstalling the same build changed the tree");
}

/// A release whose binary cannot start: it says why and exits.
const FAILS_TO_START: &[u8] = b"#!/bin/sh\necho 'cannot open the store: simulated failure' >&2\nexit 3\n";
/// A release that never says it is ready: it follows /dev/null for ever.
const HANGS: &[u8] = b"#!/bin/sh\nexec tail -f /dev/null\n";
/// A release that breaks the store it is given, then fails.
const BREAKS_THE_STORE: &[u8] =
    b"#!/bin/sh\nfor arg; do data=$arg; done\nprintf 'not a store' > \"$data/tether.redb\"\nexit 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_keeps_the_data_and_one_that_does_not_come_up_rolls_back_by_itself() {
    let keys = Keys::new();
    let root = scratch_root();
    let r = root.path();
    let out = install(&keys.bundle("0.1.0", None), false, r, &keys);
    assert!(out.status.success(), "{}", said(&out));

    // A site's data: a task and a secret, made by a running appliance.
    let mut a = Appliance::start();
    let api = a.api();
    let task = api.submit("echo", json!({"kept": "across the upgrade"}), &[]).await;
    let body = json!({"value": "s3cret-kept-across-upgrades", "policy": {"kinds": ["command"]}});
    let (s, v, _) = api.send(reqwest::Method::PUT, "/api/v1/secrets/kept", Some(&body), &[]).await;
    assert_eq!(s, 201, "{v}");
    assert!(a.stop().success());
    let data = r.join("var/lib/tether");
    std::fs::remove_dir(&data).unwrap();
    std::fs::rename(a.data_dir(), &data).unwrap();

    let up = install(&keys.bundle("0.2.0", None), true, r, &keys);
    assert!(up.status.success(), "{}", said(&up));
    assert!(said(&up).contains("upgraded tether 0.1.0 → 0.2.0"), "{}", said(&up));
    assert!(said(&up).contains("sealed"), "it came up sealed, as after any restart: {}", said(&up));
    assert_eq!(current(r), "versions/0.2.0-000000000000");
    let tether_ids = ids(r, "tether");
    assert_eq!(owner_and_mode(r, "/var/lib/tether"), (0o700, tether_ids.0, tether_ids.1));
    let backups: Vec<_> = std::fs::read_dir(r.join("var/backups/tether")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].join("tether.redb").is_file() && owner_and_mode(r, "/var/backups/tether").0 == 0o700);

    // The new release cannot start: back to 0.2.0, the data as it was.
    let failed = install(&keys.bundle("0.3.0", Some(FAILS_TO_START)), true, r, &keys);
    assert_eq!(failed.status.code(), Some(1), "{}", said(&failed));
    let text = said(&failed);
    assert!(text.contains("UPGRADE FAILED: tether 0.3.0 did not come up"), "{text}");
    assert!(text.contains("simulated failure"), "the release's own words: {text}");
    assert!(text.contains("tether 0.2.0 is current again") && text.contains("not changed"), "{text}");
    assert_eq!(current(r), "versions/0.2.0-000000000000");

    // The new release wrecks the store: back to 0.2.0, the backup restored,
    // what it left kept aside.
    let data_before = std::fs::read(data.join("tether.redb")).unwrap();
    let wrecked = install(&keys.bundle("0.4.0", Some(BREAKS_THE_STORE)), true, r, &keys);
    assert_eq!(wrecked.status.code(), Some(1), "{}", said(&wrecked));
    assert!(said(&wrecked).contains("restored from the backup"), "{}", said(&wrecked));
    assert_eq!(current(r), "versions/0.2.0-000000000000");
    assert_ne!(std::fs::read(data.join("tether.redb")).unwrap(), b"not a store");
    let left: Vec<_> = std::fs::read_dir(r.join("var/backups/tether"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("0.4.0-000000000000-failed-"))
        .collect();
    assert_eq!(left.len(), 1, "what the failed release left is kept");
    assert_eq!(std::fs::read(left[0].join("tether.redb")).unwrap(), b"not a store");
    assert!(data_before.len() > 1000);

    // The installer itself is cut off mid-upgrade (the new release hangs,
    // the operator's terminal dies): its next run puts 0.2.0 back first,
    // then does what it was asked.
    let mut cut = Command::new(bin());
    cut.arg("install").arg(keys.bundle("0.5.0", Some(HANGS))).arg("--upgrade").arg("--root").arg(r);
    cut.arg("--trust").arg(keys.public()).stderr(Stdio::piped()).stdout(Stdio::null()).process_group(0);
    let mut installer = cut.spawn().unwrap();
    let mut lines = BufReader::new(installer.stderr.take().unwrap()).lines();
    assert!(
        lines.by_ref().map_while(Result::ok).any(|l| l.contains("checking that it comes up on this data")),
        "the installer got as far as running the new release"
    );
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(installer.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    installer.wait().unwrap();
    assert_eq!(current(r), "versions/0.5.0-000000000000", "cut off after the switch");
    let resumed = install(&keys.bundle("0.6.0", None), true, r, &keys);
    assert!(resumed.status.success(), "{}", said(&resumed));
    let text = said(&resumed);
    assert!(text.contains("did not finish") && text.contains("going back to 0.2.0 first"), "{text}");
    assert!(text.contains("upgraded tether 0.2.0 → 0.6.0"), "{text}");
    assert_eq!(current(r), "versions/0.6.0-000000000000");

    // Uninstalled: the program goes, the data stays.
    let off = Command::new(bin()).args(["uninstall", "--root"]).arg(r).output().unwrap();
    assert!(off.status.success(), "{}", said(&off));
    for gone in ["opt/tether", "usr/local/bin/tether", "usr/local/lib/systemd/system/tether.service"] {
        assert!(std::fs::symlink_metadata(r.join(gone)).is_err(), "{gone} is still there");
    }
    assert!(data.join("tether.redb").is_file() && said(&off).contains("kept the data"), "{}", said(&off));

    // The data served again: the task and the secret are there, and the
    // audit log tells the whole story, its chain intact.
    std::fs::rename(&data, a.data_dir()).unwrap();
    a.restart();
    let api = a.api();
    let (s, shown) = api.get(&format!("/api/v1/tasks/{task}")).await;
    assert_eq!((s, &shown["input"]["kept"]), (200, &json!("across the upgrade")), "{shown}");
    let (_, secrets) = api.get("/api/v1/secrets").await;
    assert!(secrets.to_string().contains("\"kept\""), "{secrets}");
    assert!(a.stop().success());
    let records = a.audit_records();
    assert_eq!(count_events(&records, "release.upgrade_started"), 5);
    assert_eq!(count_events(&records, "release.upgraded"), 2);
    let rollbacks: Vec<_> = records.iter().filter(|r| r["event_type"] == "release.upgrade_rolled_back").collect();
    assert_eq!(rollbacks.len(), 3, "{rollbacks:?}");
    assert!(rollbacks[2]["metadata"]["details"]["reason"].as_str().unwrap().contains("installer was stopped"));
    assert_eq!(rollbacks[1]["metadata"]["details"]["backup_restored"], "true", "{:?}", rollbacks[1]);
    assert!(rollbacks[0]["metadata"]["details"]["reason"].as_str().unwrap().contains("simulated failure"));
    assert_eq!(rollbacks[0]["actor"]["id"], "installer");
    assert!(a.audit_verify().0, "the chain verifies with the installer's records in it");

    // Purged: nothing of the site is left.
    let purge = Command::new(bin()).args(["uninstall", "--purge", "--root"]).arg(r).output().unwrap();
    assert!(purge.status.success(), "{}", said(&purge));
    for gone in ["var/lib/tether-worker", "etc/tether", "var/backups/tether"] {
        assert!(!r.join(gone).exists(), "{gone} survived --purge");
    }
}

#[test]
fn the_fips_build_runs_when_asked_for_and_stays_across_upgrades() {
    let keys = Keys::new();
    let root = scratch_root();
    let r = root.path();
    // The standard build in these bundles cannot start: if it were the one
    // installed, the check would refuse it.
    let first = install(&keys.pack("0.2.0", Some(FAILS_TO_START), Some(None)), false, r, &keys);
    assert_eq!(first.status.code(), Some(1), "{}", said(&first));
    assert!(said(&first).contains("simulated failure") && said(&first).contains("was not installed"));
    assert!(!r.join("opt/tether").exists(), "a release that did not come up is not left installed");

    let out = tether(
        &["install", keys.pack("0.2.0", Some(FAILS_TO_START), Some(None)).to_str().unwrap(), "--fips"],
        r,
        &keys,
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("the FIPS build"), "{}", said(&out));
    let release = r.join("opt/tether/current");
    assert_eq!(std::fs::read(release.join("tether")).unwrap(), std::fs::read(bin()).unwrap());
    assert!(!release.join("tether-fips").exists(), "only the build that runs is installed");
    assert_eq!(std::fs::read_to_string(release.join("variant")).unwrap(), "fips\n");

    // An upgrade keeps the FIPS build without being told…
    let up = install(&keys.pack("0.3.0", Some(FAILS_TO_START), Some(None)), true, r, &keys);
    assert!(up.status.success(), "{}", said(&up));
    assert!(said(&up).contains("(the FIPS build)"), "{}", said(&up));
    // …and refuses, untouched, a bundle that has none.
    let before = snapshot(r);
    let none = install(&keys.bundle("0.4.0", None), true, r, &keys);
    assert_eq!(none.status.code(), Some(1), "{}", said(&none));
    assert!(said(&none).contains("carries no FIPS build"), "{}", said(&none));
    assert!(snapshot(r) == before, "refused, but the tree changed");

    // A build that is no program at all: rolled back like any other failure.
    let garbage = install(&keys.pack("0.5.0", None, Some(Some(b"\x7fELF but not really"))), true, r, &keys);
    assert_eq!(garbage.status.code(), Some(1), "{}", said(&garbage));
    assert!(said(&garbage).contains("UPGRADE FAILED: tether 0.5.0 did not come up"), "{}", said(&garbage));
    assert_eq!(current(r), "versions/0.3.0-000000000000");
}

#[test]
fn a_worker_host_gets_the_worker_unit_not_the_appliance_and_keeps_that_role() {
    let keys = Keys::new();
    let root = scratch_root();
    let r = root.path();
    let wants = |unit: &str| r.join("etc/systemd/system/multi-user.target.wants").join(unit);
    let out = tether(&["install", keys.bundle("0.2.0", None).to_str().unwrap(), "--worker"], r, &keys);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("for a worker host") && said(&out).contains("worker.env"), "{}", said(&out));
    assert!(std::fs::symlink_metadata(wants("tether-worker.service")).is_ok(), "the worker's unit is enabled");
    assert!(std::fs::symlink_metadata(wants("tether.service")).is_err(), "the appliance's is not");
    assert_eq!(std::fs::read_to_string(r.join("opt/tether/current/role")).unwrap(), "worker\n");

    // Upgrades keep the role without being told, and go back from a build
    // that does not run.
    let up = install(&keys.bundle("0.3.0", None), true, r, &keys);
    assert!(up.status.success() && said(&up).contains("upgraded this worker host"), "{}", said(&up));
    assert!(std::fs::symlink_metadata(wants("tether.service")).is_err());
    let failed = install(&keys.bundle("0.4.0", Some(FAILS_TO_START)), true, r, &keys);
    assert_eq!(failed.status.code(), Some(1), "{}", said(&failed));
    assert!(said(&failed).contains("simulated failure"), "{}", said(&failed));
    assert_eq!(current(r), "versions/0.3.0-000000000000");

    // An appliance host is not turned into a worker host by an upgrade.
    let appliance = scratch_root();
    let a = appliance.path();
    assert!(install(&keys.bundle("0.2.0", None), false, a, &keys).status.success());
    let before = snapshot(a);
    let refused = tether(&["install", keys.bundle("0.3.0", None).to_str().unwrap(), "--upgrade", "--worker"], a, &keys);
    assert_eq!(refused.status.code(), Some(1), "{}", said(&refused));
    assert!(said(&refused).contains("this host runs the appliance"), "{}", said(&refused));
    assert!(snapshot(a) == before, "refused, but the tree changed");
}
