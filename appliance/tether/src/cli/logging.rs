//! Where the log goes and in what shape: text for a person (no colour
//! unless it is read on a terminal, no timestamps of its own under systemd,
//! whose journal stamps every line) or JSON lines for a log shipper, on
//! stderr or into a file that rotates daily or by size and keeps a bounded
//! number of old files. stdout is for results and never carries the log.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;

/// The log's options, on the long-running commands (`serve`, `worker`);
/// the others log warnings on stderr as text.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// text, for a person; or json, one object per line (timestamp, level,
    /// target, fields), for a log shipper.
    #[arg(long, value_enum, env = "TETHER_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Write the log to this file instead of stderr (its directory must
    /// exist); old files are kept beside it as FILE.1, FILE.2… (by size) or
    /// FILE.DATE (daily).
    #[arg(long, value_name = "FILE", env = "TETHER_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// When the log file starts afresh: daily, or once it reaches
    /// --log-max-size.
    #[arg(long, value_enum, default_value_t = Rotation::Daily, requires = "log_file")]
    pub log_rotation: Rotation,
    /// With --log-rotation size: the largest a log file grows, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_max_size: u64,
    /// How many old log files are kept; older ones are deleted.
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub log_keep: u64,
}

impl Default for LogArgs {
    fn default() -> LogArgs {
        LogArgs {
            log_format: LogFormat::Text,
            log_file: None,
            log_rotation: Rotation::Daily,
            log_max_size: 100,
            log_keep: 7,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rotation {
    Daily,
    Size,
}

/// Sets up the log as `args` say, with more of it for each `-v`. Fails
/// (before anything runs) when the log file cannot be opened.
pub fn init(verbose: u8, args: &LogArgs) -> anyhow::Result<()> {
    let default = match verbose {
        0 => "warn,tether=info",
        1 => "info,tether=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    match &args.log_file {
        None => {
            // systemd sets JOURNAL_STREAM when stderr is the journal, which
            // stamps each line itself.
            let journal = std::env::var_os("JOURNAL_STREAM").is_some();
            install(args.log_format, filter, std::io::stderr, std::io::stderr().is_terminal(), !journal);
        }
        Some(path) => {
            let keep = usize::try_from(args.log_keep).unwrap_or(usize::MAX);
            match args.log_rotation {
                Rotation::Daily => {
                    let (dir, name) = split(path)?;
                    let appender = tracing_appender::rolling::Builder::new()
                        .rotation(tracing_appender::rolling::Rotation::DAILY)
                        .filename_prefix(name)
                        .max_log_files(keep + 1)
                        .build(dir)
                        .with_context(|| format!("cannot open the log file {}", path.display()))?;
                    install(args.log_format, filter, appender, false, true);
                }
                Rotation::Size => {
                    let file = SizeRotating::open(path, args.log_max_size << 20, keep)?;
                    install(args.log_format, filter, file, false, true);
                }
            }
        }
    }
    Ok(())
}

fn install<W>(format: LogFormat, filter: tracing_subscriber::EnvFilter, writer: W, ansi: bool, time: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match (format, time) {
        (LogFormat::Json, _) => builder.json().with_current_span(false).with_span_list(false).init(),
        (LogFormat::Text, true) => builder.with_ansi(ansi).init(),
        (LogFormat::Text, false) => builder.with_ansi(ansi).without_time().init(),
    }
}

fn split(path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let name = path.file_name().and_then(|n| n.to_str()).context("--log-file names no file")?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_owned()))
}

/// A log file that starts afresh once it would grow past `max` bytes: the
/// full one becomes FILE.1, FILE.1 becomes FILE.2, and so on up to `keep`;
/// the oldest is deleted. A line is never split across two files.
#[derive(Clone)]
struct SizeRotating(Arc<Mutex<Current>>);

struct Current {
    path: PathBuf,
    file: File,
    written: u64,
    max: u64,
    keep: usize,
}

impl SizeRotating {
    fn open(path: &Path, max: u64, keep: usize) -> anyhow::Result<SizeRotating> {
        let file = append(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(SizeRotating(Arc::new(Mutex::new(Current { path: path.to_owned(), file, written, max, keep }))))
    }
}

fn append(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))
}

impl Current {
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// One event's bytes, written to the file when the event is complete.
struct Line {
    to: SizeRotating,
    bytes: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let mut current = self.to.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let len = self.bytes.len() as u64;
        if current.written > 0 && current.written + len > current.max {
            // A log that cannot rotate goes on in the same file.
            let _ = current.rotate();
        }
        if current.file.write_all(&self.bytes).is_ok() {
            current.written += len;
        }
    }
}

impl<'w> MakeWriter<'w> for SizeRotating {
    type Writer = Line;

    fn make_writer(&'w self) -> Line {
        Line { to: self.clone(), bytes: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_file_moves_aside_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.log");
        let log = SizeRotating::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            let mut line = log.make_writer();
            line.write_all(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes()).unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        // 40 bytes a line: two to a file.
        assert_eq!(read("tether.log").lines().count(), 2);
        assert!(read("tether.log").starts_with("line 08"), "the newest lines in the file itself");
        assert!(read("tether.log.1").starts_with("line 06"));
        assert!(read("tether.log.2").starts_with("line 04"));
        assert!(!dir.path().join("tether.log.3").exists(), "no more than --log-keep old files");
    }
}
