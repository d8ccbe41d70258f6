//! `tether image`: the firmware image as it leaves the release manager
//! (`pack`: signed into an image bundle) and reaches a USB stick (`write`:
//! verified, the stick checked and confirmed, written, read back). The
//! work is [`crate::firmware::writer`]'s.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::keyfile::read_private_key;
use super::progress::{Meter, size};
use super::release::{BuildArgs, TrustArgs};
use crate::firmware::writer;
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
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let mut meter = Meter::new();
    match cmd {
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
                print!(
                    "Write the image to {} ({}, {})? Everything on it is lost.\nType {} and Enter to go on: ",
                    target.device.display(),
                    if target.model.is_empty() { "no model given" } else { &target.model },
                    size(target.bytes),
                    target.name
                );
                std::io::stdout().flush()?;
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                Ok(line.trim() == target.name)
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
