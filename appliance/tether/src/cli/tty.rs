//! The machine's own console as its screens use it (`tether screen`, and
//! the installer's screen): a line typed within a while, and the console
//! for what they run to write on.

use std::io::BufRead;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Context;
use zeroize::Zeroizing;

/// How often a screen looks for a change.
pub const LOOK_EVERY: Duration = Duration::from_secs(2);

pub enum Typed {
    Nothing,
    Line(Zeroizing<String>),
    HungUp,
}

/// What a screen shows: drawn again only when it changed, or after
/// something else wrote on the console ([`Shown::forget`]).
#[derive(Default)]
pub struct Shown(String);

impl Shown {
    pub fn show(&mut self, screen: String) -> std::io::Result<()> {
        use std::io::Write;
        if screen != self.0 {
            print!("\x1b[H\x1b[2J{screen}");
            std::io::stdout().flush()?;
            self.0 = screen;
        }
        Ok(())
    }

    pub fn forget(&mut self) {
        self.0.clear();
    }
}

/// A line typed on the console within `wait`.
pub fn typed_line(wait: Duration) -> anyhow::Result<Typed> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdin = std::io::stdin();
    let timeout = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(Typed::Nothing),
        Ok(_) => {}
        Err(e) => return Err(e).context("cannot wait for the console"),
    }
    let mut line = Zeroizing::new(String::new());
    if stdin.lock().read_line(&mut line).context("cannot read the console")? == 0 {
        return Ok(Typed::HungUp);
    }
    let keep = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(keep);
    Ok(Typed::Line(line))
}

/// The console as a file descriptor, for what runs here to write its
/// errors on (the screen's own stderr is the journal).
pub fn console() -> anyhow::Result<std::os::fd::OwnedFd> {
    std::io::stdout().as_fd().try_clone_to_owned().context("the console")
}

/// Runs this program with `args` on the console (its prompts, progress and
/// errors shown here); if it fails, says `failed` and waits for Enter (or
/// `wait`), so what it said can be read before the screen comes back.
pub fn run_here(args: &[&std::ffi::OsStr], failed: &str, wait: Duration) -> anyhow::Result<()> {
    let status =
        std::process::Command::new(std::env::current_exe()?).args(args).stderr(console()?).status().with_context(
            || format!("cannot run tether {}", args.first().map(|a| a.to_string_lossy()).unwrap_or_default()),
        )?;
    if !status.success() {
        println!("\n{failed} (the reason is above). Press Enter.");
        typed_line(wait)?;
    }
    Ok(())
}
