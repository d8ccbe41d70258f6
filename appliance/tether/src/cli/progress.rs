//! Progress on long work (hashing, verifying, copying), shown on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A size as people read it.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / f64::from(1 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

/// A progress line on stderr: redrawn in place on a terminal, a line per
/// tenth otherwise (logs, CI).
pub struct Meter {
    terminal: bool,
    shown: Option<(&'static str, u64)>,
    last_drawn: Instant,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter::new()
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter { terminal: std::io::stderr().is_terminal(), shown: None, last_drawn: Instant::now() }
    }

    pub fn show(&mut self, stage: &'static str, done: u64, total: u64) {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let step = if self.terminal { percent } else { percent / 10 * 10 };
        let due = self.terminal && self.last_drawn.elapsed() >= Duration::from_millis(200);
        if self.shown == Some((stage, step)) && !due {
            return;
        }
        self.shown = Some((stage, step));
        self.last_drawn = Instant::now();
        let line = format!("{stage}: {} of {} ({percent}%)", size(done), size(total));
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
            if done >= total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}
