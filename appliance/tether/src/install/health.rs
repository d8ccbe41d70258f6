//! Does a release come up? The installer runs it as systemd would — as the
//! service user, against the data directory, with a notification socket of
//! the installer's own — and waits for `READY=1`, which the appliance sends
//! only once its store is open and both listeners answer. Then it stops it
//! (SIGTERM, as systemd does) and hands the directory back.
//!
//! The same check runs on a host and in a scratch root, so the tested path
//! is the one operators take; on a host systemd then starts the unit.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long an appliance that was asked to stop has to do so.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of its stderr a failure quotes.
const QUOTED_LINES: usize = 8;

/// How the release answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It said `READY=1`, with this status line.
    Ready { status: String },
    /// It did not, and this is why.
    Failed { reason: String },
}

/// Runs `binary serve` against `data_dir` as `owner` until it is ready, it
/// fails, or `timeout` passes; then stops it.
pub fn check(binary: &Path, data_dir: &Path, owner: (u32, u32), timeout: Duration) -> anyhow::Result<Health> {
    let scratch = Scratch::new(owner)?;
    let socket = scratch.path.join("notify");
    let listener = UnixDatagram::bind(&socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::os::unix::fs::chown(&socket, Some(owner.0), Some(owner.1))?;
    let stderr_path = scratch.path.join("stderr");
    let stderr = fs::File::create(&stderr_path)?;
    let child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NOTIFY_SOCKET", &socket)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // As the service user; std drops root's supplementary groups too.
        .uid(owner.0)
        .gid(owner.1)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return Ok(Health::Failed { reason: format!("it cannot be started: {e}") }),
    };
    let health = wait_ready(&mut child, &listener, timeout, &stderr_path);
    let stopped = stop(&mut child);
    match (health, stopped) {
        (Ok(Health::Ready { status }), Ok(exit)) if !exit.success() => Ok(Health::Failed {
            reason: format!("it was ready ({status}) but did not stop cleanly ({exit}): {}", tail(&stderr_path)),
        }),
        (health, Ok(_)) => health,
        (_, Err(e)) => Err(e),
    }
}

fn wait_ready(child: &mut Child, socket: &UnixDatagram, timeout: Duration, stderr: &Path) -> anyhow::Result<Health> {
    let deadline = Instant::now() + timeout;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut status = String::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                if let Some(s) = message.lines().find_map(|line| line.strip_prefix("STATUS=")) {
                    status = s.to_owned();
                }
                if message.lines().any(|line| line == "READY=1") {
                    let status = if status.is_empty() { "ready".into() } else { status };
                    return Ok(Health::Ready { status });
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("reading the notification socket"),
        }
        if let Some(exit) = child.try_wait()? {
            return Ok(Health::Failed { reason: format!("it stopped ({exit}) before it was ready: {}", tail(stderr)) });
        }
        if Instant::now() >= deadline {
            return Ok(Health::Failed {
                reason: format!("it was not ready within {} s: {}", timeout.as_secs(), tail(stderr)),
            });
        }
    }
}

/// Whether `binary` runs here as `owner` (`tether --version`): all a worker
/// host can check before it has an appliance to enrol with.
pub fn runs(binary: &Path, owner: (u32, u32)) -> anyhow::Result<Health> {
    let out = Command::new(binary)
        .arg("--version")
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(owner.0)
        .gid(owner.1)
        .output();
    Ok(match out {
        Ok(out) if out.status.success() => {
            let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_owned();
            Health::Ready { status: first }
        }
        Ok(out) => Health::Failed {
            reason: format!(
                "`tether --version` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("it wrote nothing on stderr")
            ),
        },
        Err(e) => Health::Failed { reason: format!("it cannot be started: {e}") },
    })
}

/// SIGTERM, then SIGKILL if it outlives [`STOP_TIMEOUT`].
fn stop(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(exit) = child.try_wait()? {
        return Ok(exit);
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(exit) = child.try_wait()? {
            return Ok(exit);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            return Ok(child.wait()?);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines the release wrote on stderr, for the operator.
fn tail(stderr: &Path) -> String {
    let text = fs::read_to_string(stderr).unwrap_or_default();
    let lines: Vec<_> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => "it wrote nothing on stderr".into(),
        n => lines[n.saturating_sub(QUOTED_LINES)..].join(" | "),
    }
}

/// A private directory for the socket and the captured stderr, owned by
/// the service user; removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(owner: (u32, u32)) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("tether-install-{}-{:x}", std::process::id(), fastrand::u64(..)));
        fs::DirBuilder::new().mode(0o700).create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
