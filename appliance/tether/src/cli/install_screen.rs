//! The installer on the machine's own console, in place of the status
//! screen when the machine started from the Tether USB stick
//! ([`installer::running`]): the disks by number, model and size, with why
//! any is not offered; a number typed, `tether image install DISK` asks
//! for the disk's name to confirm and shows its progress here. With an
//! answer file on the stick the install runs by itself
//! (tether-install.service) and this only says so.

use std::path::Path;
use std::process::ExitCode;

use super::progress::size;
use super::tty::{LOOK_EVERY, Shown, Typed, run_here, typed_line};
use crate::firmware::installer::{self, Candidate, Stick};

/// How long a message waits for Enter before the list comes back.
const MESSAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn run() -> anyhow::Result<ExitCode> {
    let mut shown = Shown::default();
    loop {
        let unattended = Path::new(installer::ANSWERS_FILE).exists();
        let disks = Stick::this().and_then(|stick| installer::candidates(&stick));
        let screen = render(disks.as_deref().map_err(|e| format!("{e:#}")), unattended);
        shown.show(screen)?;
        match typed_line(LOOK_EVERY)? {
            Typed::Nothing => {}
            Typed::HungUp => return Ok(ExitCode::SUCCESS),
            Typed::Line(line) if !unattended => {
                let offered: Vec<Candidate> =
                    disks.unwrap_or_default().into_iter().filter(|c| c.refused.is_none()).collect();
                if let Some(disk) = line.trim().parse::<usize>().ok().and_then(|n| offered.get(n.wrapping_sub(1))) {
                    install(disk)?;
                }
                shown.forget();
            }
            Typed::Line(_) => {}
        }
    }
}

/// The installer's text: the disks, offered ones numbered.
fn render(disks: Result<&[Candidate], String>, unattended: bool) -> String {
    let mut out = format!("Tether appliance {}: installer\n\n", env!("CARGO_PKG_VERSION"));
    out.push_str("This machine started from the Tether USB stick. The appliance is installed onto\n");
    out.push_str("one of its disks; everything on that disk is erased.\n\n");
    if unattended {
        out.push_str("An answer file (tether-install.toml) is on the stick: the install runs by itself,\n");
        out.push_str("and the machine restarts into the installed appliance when it is done.\n");
        return out;
    }
    let disks = match disks {
        Ok(disks) => disks,
        Err(why) => {
            out.push_str(&format!("The disks cannot be listed: {why}\n"));
            return out;
        }
    };
    let mut number = 0;
    for disk in disks {
        let model = if disk.model.is_empty() { "no model given" } else { &disk.model };
        let line = format!("{:<14} {:<24} {:>10}", disk.device.display(), model, size(disk.bytes));
        match &disk.refused {
            None => {
                number += 1;
                out.push_str(&format!("  {number:>2}  {line}\n"));
            }
            Some(why) => out.push_str(&format!("      {line}\n        not offered: {why}\n")),
        }
    }
    out.push('\n');
    out.push_str(if number == 0 {
        "No disk here can take the appliance (the reasons are above). This list updates by itself.\n"
    } else {
        "Type the number of the disk to install onto and press Enter.\n"
    });
    out
}

/// `tether image install DISK --reboot` on this console: it asks for the
/// disk's name, shows its progress, and restarts the machine when done.
fn install(disk: &Candidate) -> anyhow::Result<()> {
    println!();
    let args = ["image".as_ref(), "install".as_ref(), "--reboot".as_ref(), disk.device.as_os_str()];
    run_here(&args, "Nothing was installed, or not all of it", MESSAGE_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_disks_are_numbered_and_the_others_say_why_not() {
        let disks = [
            Candidate {
                device: "/dev/sda".into(),
                model: "USB DISK".into(),
                bytes: 8 << 30,
                refused: Some("the USB stick this installer runs from".into()),
            },
            Candidate { device: "/dev/vda".into(), model: String::new(), bytes: 2 << 30, refused: None },
        ];
        let screen = render(Ok(&disks), false);
        assert!(screen.contains("   1  /dev/vda       no model given"), "{screen}");
        assert!(screen.contains("not offered: the USB stick this installer runs from"), "{screen}");
        assert!(screen.contains("Type the number"), "{screen}");
        assert!(render(Ok(&disks[..1]), false).contains("No disk here can take the appliance"));
        assert!(render(Ok(&disks), true).contains("the install runs by itself"));
    }
}
