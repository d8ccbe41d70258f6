//! The A/B update matrix, on the image under qemu with the bundles of
//! `make-updates.sh` on a second disk the rescue shell mounts, and the good
//! update alone on a USB stick plugged in while the machine runs, which the
//! status screen then offers; the machine reboots in place as a real one
//! does. One machine goes through every case in turn; after each, its data
//! (a task and a secret made at first boot) is still there:
//!
//! - tampered, wrong-keyed and downgrading bundles are refused, slot B
//!   byte-identical and without a boot entry;
//! - the power cut while writing slot B: A boots and serves, and the
//!   audit log says the update was interrupted;
//! - a good update, typed `update` at the status screen for the USB
//!   stick, boots slot B on trial and is kept (blessed) once the appliance
//!   is healthy, in the audit log as a trial of the new version;
//! - the machine keeps its id through every boot (the read-only root has
//!   none of its own: the first boot's goes into the boot entries), and
//!   the site's host name and time server set in the console at first
//!   boot (kept on /data) are applied when slot B boots;
//! - in the console, a tampered upload is refused (and audited); a bad
//!   update (its appliance never comes up) uploaded there is written to
//!   slot A from B by the root unit, which restarts the machine; A is
//!   tried three times, then B boots again by itself, and the audit log
//!   says it fell back, and who uploaded it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::{BOOT_WITHIN, Machine, OnReboot, Vm, admin_token, ca_on_the_machine, image, set_up, unseal};
use crate::harness::{Api, repo_root};

/// Writing a slot under TCG: verifying, writing and reading back ~170 MiB.
const APPLY_WITHIN: Duration = Duration::from_secs(900);
const SHELL: Duration = Duration::from_secs(60);
const RESCUE: &str = "the machine's rescue passphrase";
const APPLY: &str = "tether update apply";
/// The console's upload of an update.
const UPLOAD: &str = "/api/v1/system/firmware/update";
const OCTETS: &str = "application/octet-stream";

/// The bundles, made by `make-updates.sh`: every one on a disk for the
/// rescue shell, and the good one alone on a USB stick for the status
/// screen. Answers (that disk, the stick).
fn sticks(dir: &Path) -> (PathBuf, PathBuf) {
    let bundles = dir.join("bundles");
    let image_dir = image().parent().unwrap().to_owned();
    let made = Command::new(repo_root().join("tests/e2e/image/make-updates.sh"))
        .arg(&image_dir)
        .arg(crate::harness::bin())
        .arg(&bundles)
        .status()
        .unwrap();
    assert!(made.success(), "make-updates.sh");
    let usb = dir.join("usb");
    std::fs::create_dir(&usb).unwrap();
    std::fs::hard_link(bundles.join("good.bundle"), usb.join("tether-0.1.1.bundle")).unwrap();
    let sticks = (ext4(&bundles, &dir.join("stick.img")), ext4(&usb, &dir.join("usb.img")));
    // The bundles stay for the console's uploads.
    std::fs::remove_dir_all(&usb).unwrap();
    sticks
}

/// A disk image holding `files` in an ext4 file system of its own.
fn ext4(files: &Path, image: &Path) -> PathBuf {
    let bytes: u64 = std::fs::read_dir(files).unwrap().map(|f| f.unwrap().metadata().unwrap().len()).sum();
    let mib = bytes / (1 << 20) * 11 / 10 + 64;
    let made =
        Command::new("mkfs.ext4").args(["-q", "-d"]).arg(files).arg(image).arg(format!("{mib}M")).status().unwrap();
    assert!(made.success(), "mkfs.ext4 -d");
    image.to_owned()
}

/// Logged in at the serial console of a boot that serves, the stick mounted.
fn at_the_console(vm: &mut Vm) {
    vm.serial.expect_within("CA             SHA-256 ", BOOT_WITHIN);
    logged_in(vm);
}

/// The rescue login, and the stick mounted (the screen shows the CA already).
fn logged_in(vm: &mut Vm) {
    vm.rescue_login(RESCUE);
    vm.serial.run("mount -o ro /dev/vdb /mnt", SHELL);
}

/// `tether update status --json` in the rescue shell.
fn slots(vm: &mut Vm) -> Value {
    let said = vm.serial.run("tether update status --json", SHELL);
    serde_json::from_str(&said).unwrap_or_else(|e| panic!("{e}: {said}"))
}

fn slot<'a>(status: &'a Value, letter: &str) -> &'a Value {
    status["slots"].as_array().unwrap().iter().find(|s| s["slot"] == letter).unwrap()
}

/// The task and the secret made at first boot are still there.
async fn data_survived(api: &Api, task: &str) {
    let (status, t) = api.get(&format!("/api/v1/tasks/{task}")).await;
    assert_eq!(status, 200, "the task survived: {t}");
    let (status, s) = api.get("/api/v1/secrets/update-canary").await;
    assert_eq!(status, 200, "the secret survived: {s}");
}

/// The details of the audit records of `event_type`.
async fn audited(api: &Api, event_type: &str) -> Vec<Value> {
    let log = api.audit_log().await;
    log.iter().filter(|r| r["event_type"] == event_type).map(|r| r["metadata"]["details"].clone()).collect()
}

/// Unseals this boot's appliance; answers the admin's API.
async fn unsealed(vm: &mut Vm, setup: &Value, token: &str) -> Api {
    let ca_pem = ca_on_the_machine(vm);
    unseal(vm, &ca_pem, setup).await.with_token(Some(token))
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_are_kept_when_healthy_fall_back_when_not_and_refused_ones_leave_slot_b_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, usb_stick) = sticks(dir.path());
    let machine = Machine::new(&image(), vec![disk]);
    let mut vm = Vm::start(&machine, OnReboot::BootAgain);

    // First boot: set up, unsealed, a task and a secret made.
    let (setup, _) = set_up(&mut vm, RESCUE).await;
    at_the_console(&mut vm);
    let machine_id = vm.serial.run("cat /etc/machine-id", SHELL);
    let ca_pem = ca_on_the_machine(&mut vm);
    let api = unseal(&vm, &ca_pem, &setup).await;
    let token = admin_token(&api).await;
    let api = api.with_token(Some(&token));
    let task = api.submit("echo", json!({"kept": "across updates"}), &["nobody"]).await;
    let (status, v, _) = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/secrets/update-canary",
            Some(&json!({"value": "still here", "policy": {"kinds": ["echo"]}})),
            &[],
        )
        .await;
    assert!(status < 300, "{v}");
    // The site's name and time server, kept on /data: every boot applies them.
    let site = json!({"hostname": "tether-kept", "ntp": ["10.0.2.2"]});
    let (status, v, _) = api.send(reqwest::Method::PUT, "/api/v1/system/site", Some(&site), &[]).await;
    assert_eq!(status, 200, "{v}");

    // Refused before anything is written: slot B stays as it was.
    let slot_b = "sha256sum < /dev/disk/by-partlabel/root-b | cut -c1-64";
    let b_before = vm.serial.run(slot_b, APPLY_WITHIN);
    for (bundle, says) in
        [("tampered", "does not verify"), ("wrong-key", "does not verify"), ("downgrade", "refusing to downgrade")]
    {
        let said = vm.serial.run(&format!("{APPLY} /mnt/{bundle}.bundle 2>&1; echo exit=$?"), APPLY_WITHIN);
        assert!(said.contains(says) && said.ends_with("exit=1"), "{bundle}:\n{said}");
    }
    assert_eq!(vm.serial.run(slot_b, APPLY_WITHIN), b_before, "slot B untouched");
    assert!(slot(&slots(&mut vm), "b")["entry"].is_null(), "and it has no boot entry");

    // The power cut while slot B is being written: A boots and serves.
    // (Progress counts bytes flushed to the disk: the cut comes with the
    // slot's first 32 MiB written and the rest not.)
    vm.serial.type_line(&format!("{APPLY} /mnt/good.bundle"));
    vm.serial.expect_within("writing the slot: ", APPLY_WITHIN);
    drop(vm);
    let mut vm = Vm::start(&machine, OnReboot::BootAgain);
    at_the_console(&mut vm);
    assert_eq!(vm.serial.run("cat /etc/machine-id", SHELL), machine_id, "the same machine after the power cut");
    let status = slots(&mut vm);
    assert_eq!((status["booted"].as_str(), &status["pending"]), (Some("a"), &Value::Null), "{status}");
    assert!(slot(&status, "b")["entry"].is_null(), "the half-written slot has no entry: {status}");
    let api = unsealed(&mut vm, &setup, &token).await;
    assert_eq!(audited(&api, "firmware.update_interrupted").await.len(), 1);
    data_survived(&api, &task).await;

    // A good update, from a USB stick plugged in at the status screen (no
    // shell needed): slot B boots on trial and is kept once healthy.
    vm.serial.type_line("exit");
    vm.serial.expect_within("Rescue login: press Enter", SHELL);
    vm.plug_usb(&usb_stick);
    vm.serial.expect_within("tether 0.1.1 on the USB stick (tether-0.1.1.bundle)", SHELL);
    vm.serial.expect("type update and press Enter");
    vm.serial.type_line("update");
    let typed = Instant::now();
    vm.serial.expect_within("rebooting", APPLY_WITHIN);
    let written = typed.elapsed();
    vm.serial.expect_within("BdsDxe: starting", BOOT_WITHIN);
    at_the_console(&mut vm);
    let boot = vm.serial.run("systemctl is-system-running --wait", BOOT_WITHIN);
    assert_eq!(boot, "running", "the boot, its health check and blessing done");
    assert_eq!(vm.serial.run("cat /etc/machine-id", SHELL), machine_id, "the same machine on slot B");
    let site = vm.serial.run("hostname; systemctl is-active systemd-timesyncd", SHELL);
    assert_eq!(site, "tether-kept\nactive", "the site's settings applied at boot, the new slot's too");
    let kept = typed.elapsed() - written;
    let status = slots(&mut vm);
    let b = slot(&status, "b");
    assert_eq!((status["booted"].as_str(), b["version"].as_str()), (Some("b"), Some("0.1.1")), "{status}");
    assert_eq!(b["standing"], "kept", "blessed after the appliance's health: {status}");
    let api = unsealed(&mut vm, &setup, &token).await;
    let trial = audited(&api, "firmware.update_trial").await;
    assert_eq!(trial.len(), 1, "{trial:?}");
    assert_eq!((trial[0]["to"].as_str(), trial[0]["slot"].as_str()), (Some("0.1.1"), Some("b")), "{trial:?}");
    data_survived(&api, &task).await;

    // A bad update, to slot A, uploaded in the console after a tampered
    // one it refused: written by the root unit, the machine restarts by
    // itself; three tries, then B again by itself.
    let upload = |name: &str| std::fs::read(dir.path().join("bundles").join(name)).unwrap();
    let (status, _, v) = api.raw(Method::POST, UPLOAD, upload("tampered.bundle"), Some(OCTETS)).await;
    assert_eq!((status, v["code"].as_str()), (422, Some("bundle_refused")), "{v}");
    let refused = audited(&api, "firmware.update_refused").await;
    assert!(refused.len() == 1 && refused[0]["reason"].as_str().unwrap().contains("tampered"), "{refused:?}");
    let (status, _, v) = api.raw(Method::POST, UPLOAD, upload("bad.bundle"), Some(OCTETS)).await;
    assert_eq!((status, v["update"]["version"].as_str()), (202, Some("0.1.2")), "{v}");
    let rebooted = Instant::now();
    for _ in 0..4 {
        vm.serial.expect_within("BdsDxe: starting", BOOT_WITHIN);
    }
    vm.serial.expect_within("CA             SHA-256 ", BOOT_WITHIN);
    let back = rebooted.elapsed();
    logged_in(&mut vm);
    assert_eq!(vm.serial.run("cat /etc/machine-id", SHELL), machine_id, "the same machine back on slot B");
    let status = slots(&mut vm);
    assert_eq!(status["booted"], "b", "back on B: {status}");
    assert_eq!(slot(&status, "a")["standing"], "failed (3 boots tried)", "{status}");
    let api = unsealed(&mut vm, &setup, &token).await;
    let uploaded = audited(&api, "firmware.update_uploaded").await;
    assert_eq!(uploaded.len(), 1, "{uploaded:?}");
    assert_eq!((uploaded[0]["to"].as_str(), uploaded[0]["uploaded_by"].as_str()), (Some("0.1.2"), Some("admin")));
    let fell_back = audited(&api, "firmware.update_fell_back").await;
    assert_eq!(fell_back.len(), 1, "{fell_back:?}");
    assert_eq!((fell_back[0]["to"].as_str(), fell_back[0]["boots_tried"].as_str()), (Some("0.1.2"), Some("3")));
    data_survived(&api, &task).await;
    println!(
        "update: the good one checked, written and read back in {:.0} s, then rebooted into slot B and kept in {:.0} s; the bad one's three tries and slot B serving again in {:.0} s",
        written.as_secs_f64(),
        kept.as_secs_f64(),
        back.as_secs_f64()
    );
}
