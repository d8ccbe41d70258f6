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
use crate::harness::{Api, Console, free_port, pinned, totp_now};
use crate::units::{exposure_in, offline_exposure};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The machine's disk: the image, then room its data partition grows into.
const DISK_BYTES: u64 = 2 << 30;
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

/// A machine: its disk (a copy of the image, or blank), its firmware's
/// settings (OVMF's variables), any second disks plugged in (read-only, on
/// virtio: /dev/vdb, …) and a USB stick it starts from, if it has one;
/// kept across its boots (and power cuts).
struct Machine {
    dir: tempfile::TempDir,
    disks: Vec<PathBuf>,
    boot_stick: Option<PathBuf>,
}

impl Machine {
    /// The image written to the machine's disk, as after an install.
    fn new(image: &Path, disks: Vec<PathBuf>) -> Machine {
        let machine = Machine::blank(disks);
        copy(image, &machine.dir.path().join("disk.img"));
        machine.grow_disk();
        machine
    }

    /// A machine with an empty disk, and none of the image's.
    fn blank(disks: Vec<PathBuf>) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        std::fs::File::create(dir.path().join("disk.img")).unwrap();
        std::fs::copy(OVMF_VARS, dir.path().join("vars.fd")).expect("OVMF (Debian: ovmf; scripts/test.sh installs it)");
        let machine = Machine { dir, disks, boot_stick: None };
        machine.grow_disk();
        machine
    }

    /// A disk larger than the image, as a machine's is (sparse here).
    fn grow_disk(&self) {
        let disk = std::fs::OpenOptions::new().write(true).open(self.dir.path().join("disk.img")).unwrap();
        disk.set_len(DISK_BYTES).unwrap();
    }
}

/// `cp --reflink=auto`: the image's copies share its blocks where the file
/// system can.
fn copy(from: &Path, to: &Path) {
    let copied = Command::new("cp").arg("--reflink=auto").arg(from).arg(to).status().unwrap();
    assert!(copied.success(), "cp {} {}", from.display(), to.display());
}

/// What the guest's reboot does: end qemu (a first-boot check), or boot
/// again in place, as a real machine does (updates).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnReboot {
    Exit,
    BootAgain,
}

/// A virtual machine running; killed (the power cut) when dropped.
struct Vm {
    qemu: Child,
    serial: Terminal,
    /// qemu's own monitor, to plug things in while the machine runs.
    monitor: Terminal,
    started: Instant,
    /// The host loopback port forwarded to the guest's 8443.
    console_port: u16,
}

impl Vm {
    fn start(machine: &Machine, on_reboot: OnReboot) -> Vm {
        let dir = machine.dir.path();
        // The serial console: qemu connects to the test's socket as it
        // starts, before the guest runs, so nothing the guest shows is lost.
        let listen = |name: &str| {
            let socket = dir.join(name);
            let _ = std::fs::remove_file(&socket);
            (UnixListener::bind(&socket).unwrap(), socket)
        };
        let (serial_listener, socket) = listen("serial.sock");
        let (monitor_listener, monitor_socket) = listen("monitor.sock");
        let console_port = free_port();
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-machine", "q35,accel=tcg", "-m", "1024", "-smp", "2", "-display", "none"])
            .args(["-monitor", "none", "-nodefaults", "-vga", "std"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", dir.join("vars.fd").display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", dir.join("disk.img").display()))
            // The guest reaches nothing (restrict=on); the host reaches its
            // console port on loopback only.
            .arg("-netdev")
            .arg(format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{console_port}-:8443"))
            // (No option ROM: the firmware tries no network boot.)
            .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
            .arg("-chardev")
            .arg(format!(
                "socket,id=s0,path={},server=off,logfile={},logappend=on",
                socket.display(),
                dir.join("serial.log").display()
            ))
            .args(["-serial", "chardev:s0"])
            .arg("-chardev")
            .arg(format!("socket,id=m0,path={},server=off", monitor_socket.display()))
            .args(["-mon", "chardev=m0,mode=readline"])
            // A USB port for sticks (Vm::plug_usb).
            .args(["-device", "qemu-xhci,id=xhci"]);
        if let Some(stick) = &machine.boot_stick {
            qemu.arg("-drive")
                .arg(format!("if=none,id=boot-stick,file={},format=raw", stick.display()))
                .args(["-device", "usb-storage,bus=xhci.0,drive=boot-stick"]);
        }
        if on_reboot == OnReboot::Exit {
            qemu.arg("-no-reboot");
        }
        for disk in &machine.disks {
            qemu.arg("-drive").arg(format!("file={},format=raw,if=virtio,readonly=on", disk.display()));
        }
        let started = Instant::now();
        let qemu = qemu
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 (Debian: qemu-system-x86; scripts/test.sh installs it)");
        let terminal = |listener: UnixListener| {
            let (stream, _) = listener.accept().expect("qemu connects its serial console and monitor");
            Terminal::new(stream.try_clone().unwrap(), stream)
        };
        let (serial, mut monitor) = (terminal(serial_listener), terminal(monitor_listener));
        monitor.expect_within("(qemu) ", Duration::from_secs(60));
        Vm { qemu, serial, monitor, started, console_port }
    }

    /// Plugs a USB stick holding the file system `image` (read-only) into
    /// the running machine, as an operator does at its status screen.
    fn plug_usb(&mut self, image: &Path) {
        for command in [
            format!("drive_add 0 if=none,id=stick,file={},format=raw,readonly=on", image.display()),
            "device_add usb-storage,bus=xhci.0,drive=stick,id=stick".to_owned(),
        ] {
            self.monitor.type_line(&command);
            let said = self.monitor.expect_within("(qemu) ", Duration::from_secs(60));
            assert!(!said.to_lowercase().contains("error"), "{command}: {said}");
        }
    }

    /// At the status screen: Enter, the rescue password, a quiet shell.
    fn rescue_login(&mut self, password: &str) {
        self.serial.rescue_login(password);
        self.serial.type_line("export PS1='# ' TERM=dumb; stty -echo");
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

mod install;
mod update;

/// `GET /healthz`, once the screen has said the appliance serves: 200 and
/// its body.
async fn healthz(api: &Api) -> Value {
    let (status, body) = api.try_get("/healthz").await.expect("/healthz over TLS");
    assert_eq!(status, 200, "{body}");
    body
}

/// The first boot, as an operator does it: the setup code and certificate
/// fingerprint from the status screen, `/healthz` over TLS pinned to that
/// certificate, setup through the API (three shares, two to unseal, and a
/// rescue password). Answers setup's answer and when setup mode answered.
async fn set_up(vm: &mut Vm, rescue: &str) -> (Value, Duration) {
    let fingerprint = vm.screen_field("Certificate    SHA-256 ");
    let code = vm.screen_field("Setup code     ");
    assert!(fingerprint.starts_with("sha256:") && code.len() == 14, "{fingerprint} {code}");
    // The screen shows the code once setup mode serves.
    let setup = pinned::setup_api(&vm.console_url(), &fingerprint);
    let health = healthz(&setup).await;
    let to_setup_mode = vm.started.elapsed();
    assert_eq!(health["status"], "setup", "{health}");
    let (status, done) = setup
        .post(
            "/api/v1/setup",
            &json!({"code": code, "server_names": ["127.0.0.1", "tether.test"],
                "admin_password": ADMIN_PASSWORD, "rescue_password": rescue,
                "unseal": {"shares": {"count": 3, "threshold": 2}}}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    (done, to_setup_mode)
}

const ADMIN_PASSWORD: &str = "the first admin's passphrase";

/// An admin's API token (log in, enroll TOTP, make the token).
async fn admin_token(api: &Api) -> String {
    let admin = Console::login(api, "admin", ADMIN_PASSWORD, None).await;
    let (_, totp) = admin.post("/api/v1/auth/totp", &json!({})).await;
    let code = totp_now(totp["secret"].as_str().unwrap());
    let (status, v) = admin.post("/api/v1/auth/totp/confirm", &json!({"code": code})).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = admin.post("/api/v1/tokens", &json!({"role": "admin", "name": "image-test", "ttl": "1d"})).await;
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// The CA as the machine keeps it, read in the rescue shell.
fn ca_on_the_machine(vm: &mut Vm) -> String {
    vm.serial.run("cat /var/lib/tether/ca.pem", Duration::from_secs(30))
}

/// Unseals with the first two of setup's shares, over TLS trusting `ca_pem`.
async fn unseal(vm: &Vm, ca_pem: &str, setup: &Value) -> Api {
    let api = Api::new(&vm.console_url(), ca_pem, "").with_token(None);
    let health = healthz(&api).await;
    assert_eq!(health["sealed"], json!(true), "{health}");
    for share in &setup["shares"].as_array().unwrap()[..2] {
        let (status, vault) = api.post("/api/v1/sys/unseal", &json!({"share": share})).await;
        assert_eq!(status, 200, "{vault}");
    }
    let health = healthz(&api).await;
    assert_eq!(health["status"], "ok", "{health}");
    api
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_boots_to_setup_mode_is_set_up_through_the_api_and_listens_only_where_it_should() {
    let machine = Machine::new(&image(), Vec::new());
    let mut vm = Vm::start(&machine, OnReboot::Exit);
    let rescue = "the machine's rescue passphrase";
    let (done, to_setup_mode) = set_up(&mut vm, rescue).await;

    // At the machine: the screen shows the CA once the appliance proper
    // serves; the rescue login, then the CA the appliance made.
    vm.serial.expect_within("CA             SHA-256 ", Duration::from_secs(120));
    vm.rescue_login(rescue);
    let ca_pem = ca_on_the_machine(&mut vm);
    let ca_der = tether_base::tls::certs_from_pem(&ca_pem, "ca.pem").unwrap();
    assert!(
        ca_der.iter().any(|c| tether_base::tls::fingerprint_der(c) == done["ca_fingerprint"].as_str().unwrap()),
        "the CA on the machine is the one setup answered"
    );
    let api = unseal(&vm, &ca_pem, &done).await;
    let to_serving = vm.started.elapsed();

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
    // The data partition and its file system grew to the end of the disk.
    let data = vm.serial.run(
        "echo $(( $(lsblk -bdno SIZE /dev/disk/tether/data) >> 20 )) $(df -m --output=size /data | tail -1)",
        Duration::from_secs(30),
    );
    let mib: Vec<u64> = data.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let image_mib = std::fs::metadata(image()).unwrap().len() >> 20;
    let room = (DISK_BYTES >> 20) - image_mib;
    assert!(
        mib.len() == 2 && mib[0] > room && mib[1] > room,
        "the data partition and /data in MiB: {data} (room: {room})"
    );

    // Network and time from the console: the machine takes the name, the
    // static address (the one DHCP gave, so the console stays where it
    // is) and the site's time server as soon as they are kept.
    let api = api.with_token(Some(&admin_token(&api).await));
    let site = json!({"hostname": "tether-site", "ntp": ["10.0.2.2"],
        "network": {"address": "10.0.2.15/24", "gateway": "10.0.2.2"}});
    let (status, v, _) = api.send(reqwest::Method::PUT, "/api/v1/system/site", Some(&site), &[]).await;
    assert_eq!(status, 200, "{v}");
    let applied = vm.serial.run(
        "timeout 120 sh -c 'until [ \"$(hostname)\" = tether-site ] && ip -4 -o addr show scope global | grep -qv dynamic \
         && systemctl -q is-active systemd-timesyncd; do sleep 0.5; done'; hostname; ip -4 -o addr show scope global; systemctl is-active systemd-timesyncd; \
         cat /run/systemd/timesyncd.conf.d/tether-site.conf; journalctl -b -o cat --no-pager -u tether-site-reload | tail -5",
        Duration::from_secs(180),
    );
    assert!(applied.starts_with("tether-site\n"), "{applied}");
    assert!(applied.contains("inet 10.0.2.15/24") && !applied.contains("dynamic"), "a static address:\n{applied}");
    assert!(applied.contains("\nactive\n") && applied.contains("NTP=10.0.2.2"), "the site's time server:\n{applied}");
    assert_eq!(healthz(&api).await["status"], "ok", "the console answers at the same address");

    // systemd in the guest rates the unit as the offline check does.
    let said = vm.serial.run("systemd-analyze security tether.service --no-pager", Duration::from_secs(60));
    let inside = exposure_in(&said).unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    let (offline, _) = offline_exposure("tether.service");
    assert_eq!(inside, offline, "in the guest:\n{said}");
    let state = vm.serial.run(
        "systemctl is-active tether.service; systemctl --failed --no-legend; journalctl -b -o cat --no-pager | grep -i 'ordering cycle'",
        Duration::from_secs(30),
    );
    assert_eq!(state.trim(), "active", "tether.service active, no unit failed, no ordering cycle:\n{state}");

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
