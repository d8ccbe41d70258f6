//! `tether image write`, the USB writer, on loop devices standing in for
//! sticks (root, which CI has): a signed image is written and reads back
//! byte for byte; a tampered or foreign-signed image, a stick too small, a
//! stick with a mounted file system, a partition, a plain file and an
//! unconfirmed write are each refused with the stick untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::bin;

/// A file attached as a loop device; detached when dropped.
struct Stick {
    device: String,
}

impl Stick {
    fn new(file: &Path, mib: u64) -> Stick {
        std::fs::File::create(file).unwrap().set_len(mib << 20).unwrap();
        let out = Command::new("losetup").args(["--find", "--show", "--partscan"]).arg(file).output().unwrap();
        assert!(out.status.success(), "losetup (needs root: CI has it): {}", String::from_utf8_lossy(&out.stderr));
        Stick { device: String::from_utf8(out.stdout).unwrap().trim().to_owned() }
    }

    /// Its first `bytes` bytes.
    fn head(&self, bytes: usize) -> Vec<u8> {
        let mut all = std::fs::read(&self.device).unwrap();
        all.truncate(bytes);
        all
    }
}

impl Drop for Stick {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(format!("{}p1", self.device)).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// An image bundle of `image`, signed with `key`.
fn pack(image: &Path, key: &Path, out: &Path) -> PathBuf {
    run(Command::new(bin()).args(["image", "pack"]).arg(image).arg("--key").arg(key).arg("--out").arg(out).args([
        "--release-version",
        "0.1.0",
        "--commit",
        &"0".repeat(40),
        "--built",
        "2026-12-07T00:00:00Z",
    ]));
    out.to_owned()
}

/// `tether image write BUNDLE DEVICE --trust KEY [--yes]`, stdin `typed`.
fn write(bundle: &Path, device: &str, trust: &Path, yes: bool, typed: &str) -> (bool, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["image", "write"]).arg(bundle).arg(device).arg("--trust").arg(trust);
    if yes {
        cmd.arg("--yes");
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), typed.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_usb_writer_writes_only_a_signed_image_only_to_a_stick_nothing_uses_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);
    for key in ["release", "other"] {
        run(Command::new(bin()).args(["release", "keygen", "--out"]).arg(at(key)));
    }
    let trusted = at("release.pub");
    // An image: 6 MiB that differ from block to block.
    let image: Vec<u8> = (0..6u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(at("tether.img"), &image).unwrap();
    let good = pack(&at("tether.img"), &at("release"), &at("good.img.bundle"));
    let foreign = pack(&at("tether.img"), &at("other"), &at("foreign.img.bundle"));
    let mut bytes = std::fs::read(&good).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(at("tampered.img.bundle"), &bytes).unwrap();

    // Refused, the stick untouched (still all zeros).
    let stick = Stick::new(&at("stick"), 16);
    let zeros = vec![0u8; image.len()];
    for (bundle, says) in [(at("tampered.img.bundle"), "does not verify"), (foreign.clone(), "does not verify")] {
        let (ok, said) = write(&bundle, &stick.device, &trusted, true, "");
        assert!(!ok && said.contains(says), "{}: {said}", bundle.display());
    }
    let name = stick.device.trim_start_matches("/dev/").to_owned();
    let (ok, said) = write(&good, &stick.device, &trusted, false, "not-that-one\n");
    assert!(!ok && said.contains(&format!("Type {name} and Enter")) && said.contains("nothing was written"), "{said}");
    assert_eq!(stick.head(image.len()), zeros, "refusals write nothing");
    let small = Stick::new(&at("small"), 4);
    let (ok, said) = write(&good, &small.device, &trusted, true, "");
    assert!(!ok && said.contains("use a larger stick"), "{said}");
    let (ok, said) = write(&good, at("tether.img").to_str().unwrap(), &trusted, true, "");
    assert!(!ok && said.contains("is not a disk"), "{said}");

    // A stick with a mounted file system on a partition of it: refused, and
    // the partition itself is not a stick.
    let busy = Stick::new(&at("busy"), 16);
    run(Command::new("sfdisk")
        .arg("-q")
        .arg(&busy.device)
        .stdin(std::fs::File::open(write_file(&at("layout"), "start=2048, type=83\n")).unwrap()));
    // (The loop driver here takes no partition-table rescan: partx adds it.)
    run(Command::new("partx").arg("-a").arg(&busy.device));
    let part = format!("{}p1", busy.device);
    run(Command::new("mkfs.ext4").arg("-q").arg(&part));
    std::fs::create_dir(at("mnt")).unwrap();
    run(Command::new("mount").arg(&part).arg(at("mnt")));
    let (ok, said) = write(&good, &part, &trusted, true, "");
    assert!(!ok && said.contains("is a partition"), "{said}");
    let (ok, said) = write(&good, &busy.device, &trusted, true, "");
    assert!(!ok && said.contains("holds a mounted file system"), "{said}");

    // Confirmed by typing the stick's name: written, read back, the same bytes.
    let (ok, said) = write(&good, &stick.device, &trusted, false, &format!("{name}\n"));
    assert!(ok && said.contains("read it back"), "{said}");
    assert!(stick.head(image.len()) == image, "the stick holds the image");
}

fn write_file(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}
