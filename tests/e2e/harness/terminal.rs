//! A console driven as a person at it would: read what it shows, type a
//! line. Over a child's pipes (`tether screen`) or a virtual machine's
//! serial port.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Terminal {
    input: Box<dyn Write + Send>,
    output: mpsc::Receiver<String>,
    /// What it showed that no `expect` has consumed yet.
    pub seen: String,
    /// Everything it showed, for a failure's message.
    pub all: String,
}

impl Terminal {
    pub fn new(mut output: impl Read + Send + 'static, input: impl Write + Send + 'static) -> Terminal {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Prompts end without a newline: pass on whatever arrives.
            let mut buf = [0u8; 4096];
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    break;
                }
            }
        });
        Terminal { input: Box::new(input), output: rx, seen: String::new(), all: String::new() }
    }

    /// Waits until it shows `text` (after what earlier calls consumed);
    /// consumes up to its end and returns what came before it.
    pub fn expect_within(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(more) => {
                    self.all.push_str(&more);
                    self.seen.push_str(&more);
                }
                Err(_) => panic!("the console never showed {text:?} within {timeout:?}; it showed:\n{}", self.all),
            }
        }
        let at = self.seen.find(text).unwrap();
        let before = self.seen[..at].to_owned();
        self.seen.drain(..at + text.len());
        before
    }

    pub fn expect(&mut self, text: &str) -> String {
        self.expect_within(text, Duration::from_secs(30))
    }

    pub fn type_line(&mut self, line: &str) {
        self.input.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// At the machine's status screen (`tether screen`): Enter, the rescue
    /// password, until the rescue shell says it runs.
    pub fn rescue_login(&mut self, password: &str) {
        self.expect("press Enter");
        self.type_line("");
        self.expect("Rescue password: ");
        self.type_line(password);
        self.expect("Rescue shell");
    }

    /// In a shell on it: runs `command` and returns what it printed
    /// (between two markers the typed line's echo does not contain).
    pub fn run(&mut self, command: &str, timeout: Duration) -> String {
        self.type_line(&format!("echo __BE''GIN__; {command}; echo __E''ND__"));
        self.expect_within("__BEGIN__", timeout);
        let out = self.expect_within("__END__", timeout);
        out.replace('\r', "").trim().to_owned()
    }
}
