//! Installing from the USB stick, at the console and unattended.
//!
//! At the console: the installer lists the machine's disks by model and
//! size, numbering those it offers and saying why it does not offer the
//! others (the stick itself, a read-only disk); a wrong name typed to
//! confirm writes nothing; the right one asks for the host name and the
//! address (a wrong one asked again), installs, and the machine starts
//! from its disk into first boot with that name and address.
//!
//! Unattended, as a site does it for a machine with a blank disk: the image written to a USB stick (here a copy of it, on qemu's
//! USB storage), an answer file put on the stick's EFI system partition
//! (the disk, a host name, a static address), and the machine started
//! from the stick. The installer copies the image onto the internal disk,
//! reads it back, gives the disk partition GUIDs of its own and the
//! firmware an entry for it, and restarts; the machine then starts from
//! its own disk with the stick still plugged in (none of the stick's
//! partitions is used: its root slot and data partition have the same
//! names and contents), takes the answer file's name and address, and is
//! set up and serves.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{BOOT_WITHIN, Machine, OnReboot, Vm, ca_on_the_machine, copy, image, set_up, unseal};

const SHELL: Duration = Duration::from_secs(60);
/// The address qemu's user network forwards the console port to, given statically.
const ANSWERS: &str = "# tether-install.toml\n\
    disk = \"auto\"\n\
    hostname = \"tether-installed\"\n\
    [network]\n\
    address = \"10.0.2.15/24\"\n\
    gateway = \"10.0.2.2\"\n";

/// The image on a stick with `answers` on its EFI system partition (the
/// image's first partition, at 1 MiB), as an operator copies it there.
fn stick_with(answers: &str, dir: &Path) -> std::path::PathBuf {
    let stick = dir.join("stick.img");
    copy(&image(), &stick);
    let file = dir.join("tether-install.toml");
    std::fs::write(&file, answers).unwrap();
    let copied = Command::new("mcopy")
        .arg("-i")
        .arg(format!("{}@@1M", stick.display()))
        .arg(&file)
        .arg("::/tether-install.toml")
        .status()
        .expect("mcopy (Debian: mtools; scripts/test.sh installs it)");
    assert!(copied.success(), "mcopy the answer file onto the stick's ESP");
    stick
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_console_the_disk_is_chosen_by_number_and_confirmed_by_name_then_installed() {
    // A second disk the installer must not offer: read-only.
    let dir = tempfile::tempdir().unwrap();
    let read_only = dir.path().join("read-only.img");
    std::fs::File::create(&read_only).unwrap().set_len(4 << 30).unwrap();
    let mut machine = Machine::blank(vec![read_only]);
    let stick = machine.dir.path().join("stick.img");
    copy(&image(), &stick);
    machine.boot_stick = Some(stick);
    let mut vm = Vm::start(&machine, OnReboot::BootAgain);

    let list = vm.serial.expect_within("Type the number of the disk to install onto", BOOT_WITHIN);
    let list = list.rsplit(": installer").next().unwrap_or_default().to_owned();
    let offered: Vec<&str> = list.lines().filter(|l| l.trim_start().starts_with("1  ")).collect();
    assert!(offered.len() == 1 && offered[0].contains("/dev/vda") && offered[0].contains("2.00 GiB"), "{list}");
    assert!(list.contains("not offered: /dev/sda is the USB stick this installer runs from"), "{list}");
    assert!(list.contains("not offered: /dev/vdb is read-only"), "{list}");

    // Confirmed with another name: nothing happens.
    vm.serial.type_line("1");
    vm.serial.expect("Type vda and Enter to go on: ");
    vm.serial.type_line("sda");
    vm.serial.expect("not confirmed: nothing was written to /dev/vda");
    vm.serial.expect("Press Enter.");
    vm.serial.type_line("");
    vm.serial.expect_within("Type the number of the disk to install onto", SHELL);
    vm.serial.type_line("1");
    vm.serial.expect("Type vda and Enter to go on: ");
    vm.serial.type_line("vda");
    // The site's settings, asked for: a wrong answer says why and is asked again.
    for (shown, typed) in [
        ("Host name [tether]: ", Some("tether-console")),
        ("[DHCP]: ", Some("10.0.2.15")),
        ("is not an address with its prefix length", None),
        ("[DHCP]: ", Some("10.0.2.15/24")),
        ("Gateway [none]: ", Some("10.0.2.2")),
        ("DNS servers, separated by spaces [none]: ", Some("")),
        ("[none: the machine's own clock]: ", Some("")),
    ] {
        vm.serial.expect(shown);
        if let Some(typed) = typed {
            vm.serial.type_line(typed);
        }
    }
    vm.serial.expect(
        "installing onto /dev/vda: host name tether-console; network static, 10.0.2.15/24 via 10.0.2.2; \
         time from the machine's clock alone",
    );
    let said = vm.serial.expect_within("restarting", Duration::from_secs(1200));
    assert!(said.contains("reading back: ") && said.contains("installed the appliance onto /dev/vda"), "{said}");

    // The machine starts from its disk, into first boot, with the name and address given.
    let rescue = "the machine's rescue passphrase";
    let (done, _) = set_up(&mut vm, rescue).await;
    assert!(done["ca_fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:")), "{done}");
    vm.serial.expect_within("CA             SHA-256 ", Duration::from_secs(120));
    vm.rescue_login(rescue);
    let site = vm.serial.run("hostname; ip -4 -o addr show scope global", SHELL);
    assert!(site.starts_with("tether-console\n"), "{site}");
    assert!(site.contains("inet 10.0.2.15/24") && !site.contains("dynamic"), "a static address:\n{site}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_file_on_the_stick_installs_onto_the_blank_disk_which_then_boots_and_serves() {
    let mut machine = Machine::blank(Vec::new());
    machine.boot_stick = Some(stick_with(ANSWERS, machine.dir.path()));
    let mut vm = Vm::start(&machine, OnReboot::BootAgain);

    // On the stick: the installer, not the appliance, and it goes by itself.
    vm.serial.expect_within("booted from the USB stick", BOOT_WITHIN);
    vm.serial.expect_within("installing onto /dev/vda", BOOT_WITHIN);
    let installing = Instant::now();
    let said = vm.serial.expect_within("restarting", Duration::from_secs(1200));
    let (install_took, installed_after) = (installing.elapsed(), vm.started.elapsed());
    assert!(said.contains("installed the appliance onto /dev/vda and read it back"), "{said}");
    assert!(said.contains("the machine starts from it next"), "the firmware has its entry:\n{said}");

    // From the disk: first boot as ever, the stick still in.
    let rescue = "the machine's rescue passphrase";
    let (done, _) = set_up(&mut vm, rescue).await;
    vm.serial.expect_within("CA             SHA-256 ", Duration::from_secs(120));
    vm.rescue_login(rescue);
    let ca_pem = ca_on_the_machine(&mut vm);
    unseal(&vm, &ca_pem, &done).await;
    let to_serving = vm.started.elapsed();

    // The running root and /data are the disk's, not the stick's.
    let root = vm.serial.run("ls /sys/block/dm-0/slaves; findmnt -no SOURCE /data", SHELL);
    assert_eq!(root.lines().collect::<Vec<_>>(), ["vda2", "/dev/vda4"], "{root}");
    // Every partition on the two disks is its own: the disk got new GUIDs.
    let uuids = vm.serial.run("lsblk -rno PARTUUID /dev/vda /dev/sda", SHELL);
    let mut seen: Vec<&str> = uuids.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(seen.len(), 8, "{uuids}");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8, "no PARTUUID shared between the disk and the stick:\n{uuids}");
    // The answer file's name and static address (no DHCP lease), and the
    // answer file itself left on the stick only.
    let site = vm.serial.run("hostname; ip -4 -o addr show scope global", SHELL);
    assert!(site.starts_with("tether-installed\n"), "{site}");
    assert!(site.contains("inet 10.0.2.15/24") && !site.contains("dynamic"), "a static address:\n{site}");
    let esp = vm.serial.run("ls /boot", SHELL);
    assert!(!esp.contains("tether-install.toml"), "{esp}");

    // The limit the copy works against, in this machine: reading the
    // image's bytes off the stick once, past the page cache.
    let image_mib = std::fs::metadata(image()).unwrap().len() >> 20;
    let read_ms = vm.serial.run(
        &format!(
            "s=$(date +%s%N); dd if=/dev/sda of=/dev/null bs=1M count={image_mib} iflag=direct status=none; \
             echo $(( ($(date +%s%N) - s) / 1000000 ))"
        ),
        Duration::from_secs(600),
    );
    let read_s = read_ms.trim().parse::<f64>().unwrap_or(f64::NAN) / 1000.0;
    println!(
        "install: unattended from the stick, copied, read back and finished in {:.0} s (reading the stick once: {read_s:.0} s), \
         restarting {:.0} s after qemu started; set up and serving from the disk {:.0} s",
        install_took.as_secs_f64(),
        installed_after.as_secs_f64(),
        to_serving.as_secs_f64()
    );
}
