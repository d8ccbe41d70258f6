//! The firmware image (`firmware-image/build.sh`; its path in
//! `TETHER_IMAGE`) booted under qemu with OVMF, on TCG (this machine's
//! /dev/kvm fails: "KVM internal error"), the host reaching it only through
//! user-mode networking forwarded to loopback, the guest reaching nothing.
//! What an operator does at first boot, done by the test: read the setup
//! code and certificate fingerprint from the status screen on the serial
//! console, check `/healthz` over TLS pinned to that certificate, set up
//! through the API (with a rescue password), unseal, then log in at the
//! console with the rescue password and look inside: only the appliance's
//! two ports listen (and the firewall drops all else), the journal is
//! kept on the data partition, both root slots exist, and systemd rates
//! its unit as the offline check does.
//!
//! Run by `scripts/test.sh` in its image stage, after building the image;
//! the other stages leave these tests out.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::terminal::Terminal;
use crate::harness::{Api, free_port, pinned};
use crate::units::{exposure_in, offline_exposure};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Booting under TCG on two shared cores: a minute here, more when busy.
const BOOT_WITHIN: Duration = Duration::from_secs(600);

/// The image the test boots.
fn image() -> PathBuf {
    PathBuf::from(
        std::env::var_os("TETHER_IMAGE").expect(
            "TETHER_IMAGE names the image to boot (firmware-image/build.sh prints it; scripts/test.sh sets it)",
        ),
    )
}

/// A virtual machine booting a copy of the image; killed when dropped.
struct Vm {
    qemu: Child,
    serial: Terminal,
    started: Instant,
    /// The host loopback port forwarded to the guest's 8443.
    console_port: u16,
    _dir: tempfile::TempDir,
}

impl Vm {
    fn boot(image: &Path) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        let vars = dir.path().join("vars.fd");
        assert!(Command::new("cp").arg("--reflink=auto").arg(image).arg(&disk).status().unwrap().success());
        std::fs::copy(OVMF_VARS, &vars).expect("OVMF (Debian: ovmf; scripts/test.sh installs it)");
        // The serial console: qemu connects to the test's socket as it
        // starts, before the guest runs, so nothing the guest shows is lost.
        let socket = dir.path().join("serial.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let console_port = free_port();
        let started = Instant::now();
        let qemu = Command::new("qemu-system-x86_64")
            .args(["-machine", "q35,accel=tcg", "-m", "1024", "-smp", "2", "-display", "none", "-no-reboot"])
            .args(["-monitor", "none", "-nodefaults", "-vga", "std"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            // The guest reaches nothing (restrict=on); the host reaches its two
            // ports on loopback only.
            .arg("-netdev")
            .arg(format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{console_port}-:8443"))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=s0,path={},server=off,logfile={}",
                socket.display(),
                dir.path().join("serial.log").display()
            ))
            .args(["-serial", "chardev:s0"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 (Debian: qemu-system-x86; scripts/test.sh installs it)");
        let (stream, _) = listener.accept().expect("qemu connects its serial console");
        let serial = Terminal::new(stream.try_clone().unwrap(), stream);
        Vm { qemu, serial, started, console_port, _dir: dir }
    }

    fn console_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.console_port)
    }

    /// The line after `label` on the status screen, as shown.
    fn screen_field(&mut self, label: &str) -> String {
        self.serial.expect_within(label, BOOT_WITHIN);
        let line = self.serial.expect_within("\n", Duration::from_secs(10));
        line.trim().to_owned()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// `GET /healthz`, once the screen has said the appliance serves: 200 and
/// its body.
async fn healthz(api: &Api) -> Value {
    let (status, body) = api.try_get("/healthz").await.expect("/healthz over TLS");
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_boots_to_setup_mode_is_set_up_through_the_api_and_listens_only_where_it_should() {
    let mut vm = Vm::boot(&image());

    // What the status screen shows on the serial console at first boot.
    let fingerprint = vm.screen_field("Certificate    SHA-256 ");
    let code = vm.screen_field("Setup code     ");
    assert!(fingerprint.starts_with("sha256:") && code.len() == 14, "{fingerprint} {code}");
    // The screen shows the code once setup mode serves.
    let setup = pinned::setup_api(&vm.console_url(), &fingerprint);
    let health = healthz(&setup).await;
    let to_setup_mode = vm.started.elapsed();
    assert_eq!(health["status"], "setup", "{health}");

    // First boot through the API, as the wizard does it.
    let rescue = "the machine's rescue passphrase";
    let (status, done) = setup
        .post(
            "/api/v1/setup",
            &json!({"code": code, "server_names": ["127.0.0.1", "tether.test"],
                "admin_password": "the first admin's passphrase", "rescue_password": rescue,
                "unseal": {"shares": {"count": 3, "threshold": 2}}}),
        )
        .await;
    assert_eq!(status, 200, "{done}");

    // At the machine: the screen shows the CA once the appliance proper
    // serves; the rescue login, then the CA the appliance made.
    vm.serial.expect_within("CA             SHA-256 ", Duration::from_secs(120));
    vm.serial.expect("press Enter");
    vm.serial.type_line("");
    vm.serial.expect("Rescue password: ");
    vm.serial.type_line(rescue);
    vm.serial.expect("Rescue shell");
    vm.serial.type_line("export PS1='# ' TERM=dumb; stty -echo");
    let ca_pem = vm.serial.run("cat /var/lib/tether/ca.pem", Duration::from_secs(30));
    let ca_der = tether_base::tls::certs_from_pem(&ca_pem, "ca.pem").unwrap();
    assert!(
        ca_der.iter().any(|c| tether_base::tls::fingerprint_der(c) == done["ca_fingerprint"].as_str().unwrap()),
        "the CA on the machine is the one setup answered"
    );
    let api = Api::new(&vm.console_url(), &ca_pem, "").with_token(None);
    let health = healthz(&api).await;
    assert_eq!(health["sealed"], json!(true), "{health}");
    for share in &done["shares"].as_array().unwrap()[..2] {
        let (status, vault) = api.post("/api/v1/sys/unseal", &json!({"share": share})).await;
        assert_eq!(status, 200, "{vault}");
    }
    let health = healthz(&api).await;
    let to_serving = vm.started.elapsed();
    assert_eq!(health["status"], "ok", "{health}");

    // Inside: TCP listens on the appliance's two ports only; UDP only for
    // the DHCP client's replies.
    let listening = vm.serial.run("ss -Hlntu", Duration::from_secs(30));
    let mut ports: Vec<(String, String)> = listening
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let port = fields.get(4)?.rsplit_once(':')?.1.to_owned();
            Some((fields[0].to_owned(), port))
        })
        .collect();
    ports.sort();
    ports.dedup();
    let tcp: Vec<&str> = ports.iter().filter(|(p, _)| p == "tcp").map(|(_, port)| port.as_str()).collect();
    assert_eq!(tcp, ["8443", "9443"], "listening:\n{listening}");
    let udp: Vec<&str> = ports.iter().filter(|(p, _)| p == "udp").map(|(_, port)| port.as_str()).collect();
    assert!(udp.iter().all(|p| ["68", "546"].contains(p)), "UDP only for DHCP replies:\n{listening}");

    // The firewall drops what it does not name; the journal is kept on the
    // data partition; the disk has both root slots.
    let input = vm.serial.run("nft list chain inet tether input 2>&1", Duration::from_secs(30));
    assert!(input.contains("policy drop") && input.contains("tcp dport { 8443, 9443 } accept"), "{input}");
    let journal = vm.serial.run("findmnt -no SOURCE /var/log/journal; ls /var/log/journal", Duration::from_secs(30));
    assert!(journal.lines().next().is_some_and(|l| l.contains("[/journal]")), "the journal is on /data:\n{journal}");
    assert!(journal.lines().count() >= 2, "and it holds this boot's files:\n{journal}");
    let slots = vm.serial.run("lsblk -rno PARTLABEL /dev/vda", Duration::from_secs(30));
    let labels: Vec<&str> = slots.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(labels, ["esp", "root-a", "root-b", "data"], "{slots}");

    // systemd in the guest rates the unit as the offline check does.
    let said = vm.serial.run("systemd-analyze security tether.service --no-pager", Duration::from_secs(60));
    let inside = exposure_in(&said).unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    let (offline, _) = offline_exposure("tether.service");
    assert_eq!(inside, offline, "in the guest:\n{said}");
    let state =
        vm.serial.run("systemctl is-active tether.service; systemctl --failed --no-legend", Duration::from_secs(30));
    assert_eq!(state.trim(), "active", "tether.service active and no unit failed:\n{state}");

    let (image_bytes, image_mib) = {
        let bytes = std::fs::metadata(image()).unwrap().len();
        (bytes, bytes as f64 / f64::from(1 << 20))
    };
    println!(
        "boot: /healthz over TLS (setup mode) {:.1} s after qemu started; set up and unsealed, serving {:.1} s; image {image_mib:.0} MiB ({image_bytes} bytes); tether.service exposure {inside} in the guest",
        to_setup_mode.as_secs_f64(),
        to_serving.as_secs_f64()
    );
}
