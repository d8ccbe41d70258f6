//! `tether image`: the firmware image as it leaves the release manager
//! (`pack`: signed into an image bundle), reaches a USB stick (`write`:
//! verified, the stick checked and confirmed, written, read back) and a
//! machine's disk from there (`install`, on the stick's installer), and
//! the site's settings applied at boot (`apply-site`). The work is
//! [`crate::firmware::writer`]'s, [`crate::firmware::installer`]'s and
//! [`crate::firmware::site`]'s.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::keyfile::read_private_key;
use super::progress::{Meter, size};
use super::release::{BuildArgs, TrustArgs};
use super::site_questions;
use crate::firmware::installer::{self, Answers, Stick};
use crate::firmware::{site, writer};
use tether_domain::firmware;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Sign a disk image (firmware-image/build.sh's tether.img) into an image bundle.
    Pack {
        image: PathBuf,
        /// The release key (PKCS#8 PEM) it is signed with.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Write the firmware image onto a USB stick (root): its signature and
    /// digest checked first, then the stick (a whole disk with nothing on
    /// it mounted or in use), then written, flushed and read back.
    Write {
        /// The image bundle (tether-VERSION-COMMIT.img.bundle, beside the image).
        bundle: PathBuf,
        /// The stick, e.g. /dev/sdb (`lsblk` lists the disks).
        device: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// Do not ask before writing (scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Install the appliance onto this machine's internal disk, from the
    /// USB stick it started from (root; the stick's installer): copied,
    /// read back, given partition GUIDs of its own and booted first. The
    /// status screen asks for the disk; so does this, without one named.
    Install {
        /// The disk, e.g. /dev/sda, or `auto` (the one internal disk there
        /// is). Without it, the disks are listed with why any is not offered.
        disk: Option<String>,
        /// Take the disk, host name and network from this answer file
        /// (tether-install.toml; the stick's is /boot/tether-install.toml).
        #[arg(long, value_name = "FILE", conflicts_with = "disk")]
        answers: Option<PathBuf>,
        /// At boot: install from --answers if the file is there (without
        /// asking), reboot once installed; no file, nothing to do.
        #[arg(long, requires = "answers")]
        unattended: bool,
        /// Do not ask before erasing the disk.
        #[arg(long)]
        yes: bool,
        /// Restart into the installed system once done.
        #[arg(long)]
        reboot: bool,
    },
    /// Apply the site's settings kept in the appliance's data directory
    /// (host name, a static address, time servers): at boot before the
    /// network starts, and when the console changes them (root;
    /// tether-site.service, tether-site.path).
    ApplySite {
        #[arg(long, value_name = "DIR", default_value = site::DATA_DIR)]
        data_dir: PathBuf,
        /// Also tell the running network and time services (a change while
        /// the machine runs; at boot they start after this).
        #[arg(long)]
        reload: bool,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let mut meter = Meter::new();
    match cmd {
        Command::Install { disk, answers, unattended, yes, reboot } => {
            install(disk, answers, unattended, yes || unattended, reboot || unattended)
        }
        Command::ApplySite { data_dir, reload } => {
            let applied = site::apply(&data_dir, &site::Targets::this_machine())?;
            if reload {
                site::reload_services(&applied)?;
            }
            println!("{}", site::describe(&applied));
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack { image, key, out, build } => {
            let key = read_private_key(&key)?;
            let BuildArgs { release_version, commit, built } = build;
            let manifest = firmware::pack_image(&image, release_version, commit, built, &key, &out, &mut |p| {
                meter.show(p.stage, p.done, p.total)
            })?;
            println!(
                "packed the tether {} image ({}) signed by {}",
                manifest.version,
                size(manifest.image().size),
                key.public().fingerprint()
            );
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Write { bundle, device, trust, yes } => {
            let keys = trust.keys()?;
            let mut confirm = |target: &writer::Target| -> anyhow::Result<bool> {
                if yes {
                    return Ok(true);
                }
                confirmed("Write the image to", target)
            };
            match writer::write(&bundle, &device, &keys, &mut confirm, &mut |p| meter.show(p.stage, p.done, p.total))? {
                None => {
                    eprintln!("not confirmed: nothing was written to {}", device.display());
                    Ok(ExitCode::FAILURE)
                }
                Some(done) => {
                    println!(
                        "wrote the tether {} image to {} and read it back: SHA-256 {}",
                        done.manifest.version,
                        device.display(),
                        done.sha256
                    );
                    println!("  it is safe to remove the stick");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// `tether image install`: the disk chosen (named, from the answers, or
/// asked for), confirmed by its name unless told not to ask, installed.
fn install(
    disk: Option<String>,
    answers_file: Option<PathBuf>,
    unattended: bool,
    yes: bool,
    reboot: bool,
) -> anyhow::Result<ExitCode> {
    if !installer::running() {
        anyhow::bail!(
            "this machine did not start from the Tether USB stick ({} is not there): the installer runs only there",
            installer::MARKER
        );
    }
    let answers = match &answers_file {
        Some(path) => match Answers::read(path)? {
            Some(answers) => Some(answers),
            None if unattended => {
                println!("no answer file at {}: the installer waits at the console", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            None => anyhow::bail!("there is no answer file at {}", path.display()),
        },
        None => None,
    };
    let _lock = installer::lock()?;
    let stick = Stick::this()?;
    let wanted = match (&answers, disk) {
        (Some(answers), _) => answers.disk.clone(),
        (None, Some(disk)) => disk,
        (None, None) => {
            for c in installer::candidates(&stick)? {
                let model = if c.model.is_empty() { "no model given" } else { &c.model };
                match c.refused {
                    None => println!("{:<14} {:<24} {:>10}", c.device.display(), model, size(c.bytes)),
                    Some(why) => {
                        println!("{:<14} {:<24} {:>10}  not offered: {why}", c.device.display(), model, size(c.bytes))
                    }
                }
            }
            println!("install with: tether image install DISK");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let target = installer::choose(&stick, &wanted)?;
    if !yes && !confirmed("Erase and install the appliance on", &target)? {
        eprintln!("not confirmed: nothing was written to {}", target.device.display());
        return Ok(ExitCode::FAILURE);
    }
    let site = match &answers {
        Some(answers) => answers.site(),
        None if yes => site::Site::default(),
        None => site_questions::ask(&mut std::io::stdin().lock(), &mut std::io::stdout())?,
    };
    println!("installing onto {}: {}", target.device.display(), site::describe(&site));
    let mut meter = Meter::new();
    let installed = installer::install(&stick, &target, &site, &mut |p| meter.show(p.stage, p.done, p.total))?;
    println!(
        "installed the appliance onto {} and read it back ({}, SHA-256 {})",
        target.device.display(),
        size(installed.bytes),
        installed.sha256
    );
    if let Err(why) = &installed.boot_entry {
        println!("  the firmware was not told to start from it ({why}):");
        println!("  take the USB stick out, then restart the machine (systemctl reboot)");
        return Ok(ExitCode::FAILURE);
    }
    println!("  the machine starts from it next; the USB stick may stay in or be taken out");
    if !reboot {
        println!("  restart when ready: systemctl reboot");
        return Ok(ExitCode::SUCCESS);
    }
    println!("restarting");
    let status = std::process::Command::new("systemctl").arg("reboot").status()?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Asks "`doing` DISK (model, size)?" and whether the disk's name is typed
/// back: the one answer that cannot be given by reflex.
fn confirmed(doing: &str, target: &writer::Target) -> anyhow::Result<bool> {
    print!(
        "{doing} {} ({}, {})? Everything on it is lost.\nType {} and Enter to go on: ",
        target.device.display(),
        if target.model.is_empty() { "no model given" } else { &target.model },
        size(target.bytes),
        target.name
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == target.name)
}
