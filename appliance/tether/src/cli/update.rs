//! `tether update`: the firmware image's A/B update, run as root on the
//! appliance (the rescue shell, or the units of the image). The work is
//! [`crate::firmware`]'s; this file reads the flags, shows progress and
//! says what happened and what comes next.

use std::path::PathBuf;
use std::process::{Command as Process, ExitCode};

use anyhow::Context;
use serde_json::json;

use super::progress::{Meter, size};
use super::release::{TrustArgs, release_key};
use crate::firmware::boot::{Entry, Esp, Slot, Standing, entry_text};
use crate::firmware::{self, Machine, Pending, offer, settle};
use tether_domain::firmware::{Course, RootImage};
use tether_domain::release::Version;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a release bundle's firmware image to the slot that is not
    /// running, after checking its signature, every digest and that it is
    /// not older than what runs; the next boot tries it (kept once healthy,
    /// otherwise the running slot comes back by itself after 3 tries).
    Apply {
        /// The release bundle (with firmware/root.img), e.g. on a USB stick.
        bundle: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// Reboot into it once it is written.
        #[arg(long)]
        reboot: bool,
    },
    /// Apply the update the console handed over in DIR (run as root by
    /// tether-firmware-upload.service), keeping its progress there.
    #[command(hide = true)]
    ApplyUploaded { dir: PathBuf },
    /// Offer the newest firmware update on a USB stick on the status screen
    /// (run by tether-usb@.service when a stick appears; --withdraw when it goes).
    #[command(hide = true)]
    Offer {
        device: PathBuf,
        #[arg(long)]
        withdraw: bool,
    },
    /// The slots, what each runs, which booted and any pending update.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// At boot, before the appliance: keep the machine's id in the boot
    /// entries, and record what became of a pending update.
    #[command(hide = true)]
    Settle,
    /// Write a slot's first boot entry into an ESP being built (firmware-image/build.sh).
    #[command(hide = true)]
    BootEntry {
        #[arg(long)]
        esp: PathBuf,
        #[arg(long)]
        slot: String,
        #[arg(long)]
        partuuid: String,
        /// The root image's description (root.json).
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        release_version: Version,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let mut meter = Meter::new();
    match cmd {
        Command::Apply { bundle, trust, reboot } => {
            let keys = firmware::trusted_keys(trust.keys()?)?;
            let applied = firmware::apply(&bundle, &keys, &mut |p| meter.show(p.stage, p.done, p.total))?;
            applied_then(&applied, reboot)
        }
        Command::ApplyUploaded { dir } => {
            let applied = firmware::uploaded::apply(&dir, &firmware::trusted_keys(vec![release_key()])?)?;
            applied_then(&applied, true)
        }
        Command::Status { json } => status(json),
        Command::Offer { device, withdraw } => {
            let dir = std::path::Path::new(offer::OFFERS_DIR);
            if withdraw {
                offer::withdraw(dir, &device)?;
            } else if let Some(o) = offer::offer(dir, &device)? {
                println!("offered on the status screen: tether {} ({})", o.version, o.bundle.display());
            } else {
                println!("{} holds no firmware update", device.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Settle => {
            let machine = Machine::this()?;
            if settle::pin_machine_id(&machine)? {
                println!("the machine's id is kept in its boot entries from the next boot on");
            }
            match settle::settle(&machine)? {
                None => println!("no update to settle"),
                Some(course) => println!("{}", describe(course)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::BootEntry { esp, slot, partuuid, root, release_version } => {
            let slot = Slot::parse(&slot).context("--slot is a or b")?;
            let root: RootImage = serde_json::from_slice(&std::fs::read(&root)?)?;
            let esp = Esp { dir: esp };
            let (_, kernel_dir) = esp.slot_dir(slot);
            let entry = Entry { generation: 1, slot, standing: Standing::Blessed };
            std::fs::create_dir_all(esp.dir.join("loader/entries"))?;
            esp.write_entry(&entry, &entry_text(release_version, slot, &partuuid, &root, &kernel_dir, None))?;
            println!("{}", entry.file_name());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Says what was written and what comes next; reboots if asked.
fn applied_then(applied: &firmware::Applied, reboot: bool) -> anyhow::Result<ExitCode> {
    println!(
        "slot {} now holds tether {} ({}, root image {}); tether {} keeps running until the reboot",
        applied.slot,
        applied.to.version,
        &applied.to.commit[..12],
        size(applied.to.total_bytes()),
        applied.from.version
    );
    println!(
        "  the next boot tries slot {}: it is kept once the appliance is healthy; if it is not, slot {} comes \
         back by itself within 3 boots",
        applied.slot,
        applied.slot.other()
    );
    println!("  after the reboot the vault is sealed: unseal it (console, or `tether unseal`)");
    if !reboot {
        println!("  reboot when ready: systemctl reboot");
        return Ok(ExitCode::SUCCESS);
    }
    println!("rebooting");
    let status = Process::new("systemctl").arg("reboot").status().context("cannot run systemctl reboot")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn status(as_json: bool) -> anyhow::Result<ExitCode> {
    let machine = Machine::this()?;
    let booted = machine.cmdline.slot()?;
    let pending = Pending::read(&machine.state_dir)?;
    let mut slots = Vec::new();
    for slot in [Slot::A, Slot::B] {
        let entry = machine.esp.entry_of(slot)?;
        let version = match &entry {
            Some(e) => machine.esp.version_of(e)?,
            None => None,
        };
        slots.push(json!({
            "slot": slot.letter(),
            "booted": slot == booted,
            "entry": entry.map(|e| e.file_name()),
            "standing": entry.map(|e| standing(e.standing)),
            "version": version.map(|v| v.to_string()),
        }));
    }
    let report = json!({"booted": booted.letter(), "slots": slots, "pending": pending});
    if as_json {
        super::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    for s in &slots {
        let text = |key: &str| s[key].as_str().unwrap_or("-").to_owned();
        println!(
            "Slot {}{}  {}  {}",
            text("slot").to_uppercase(),
            if s["booted"] == true { " (running)" } else { "          " },
            match s["version"].as_str() {
                Some(v) => format!("tether {v}"),
                None => "empty".into(),
            },
            text("standing"),
        );
    }
    if let Some(p) = pending {
        println!(
            "Update        {} → {} to slot {}, written {}: {:?}",
            p.update.from,
            p.update.to,
            p.update.slot.to_uppercase(),
            p.update.staged_at,
            p.stage
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn standing(standing: Standing) -> String {
    match standing {
        Standing::Blessed => "kept".into(),
        Standing::Trial { left, .. } => format!("on trial, {left} tries left"),
        Standing::Bad { done } => format!("failed ({done} boots tried)"),
    }
}

fn describe(course: Course) -> String {
    match course {
        Course::Trial { tries_left } => {
            format!("booted the new slot on trial ({tries_left} tries left); it is kept once the appliance is healthy")
        }
        Course::Completed => "the update is complete: the new slot booted healthy and is kept".into(),
        Course::FellBack { boots } => {
            format!("the update failed: the new slot was not healthy in {boots} boots; the old slot runs again")
        }
        Course::Interrupted => {
            "the update was interrupted while writing; the old slot runs, the new one is removed".into()
        }
    }
}
