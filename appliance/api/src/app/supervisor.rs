//! Telling systemd how the appliance is, by sd_notify(3): `READY=1` once it
//! serves (the store open, both listeners bound), `STATUS=` kept true
//! ("sealed — waiting for unseal", "serving, N workers online",
//! "degraded: …"), `WATCHDOG=1` from the health loop, `STOPPING=1` when it
//! stops. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.
//!
//! The health loop pings the watchdog only after the store has committed a
//! small write: an appliance stuck on its disk (or with its runtime wedged)
//! stops pinging, and systemd restarts it after `WatchdogSec=`. A disk that
//! refuses writes (full, failing) answers at once: the loop goes on and the
//! status says degraded, since a restart would not help.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sd_notify::NotifyState;
use serde_json::{Map, Value};

use crate::AppState;
use crate::admin::Condition;

/// How often the health loop looks when systemd asked for no watchdog.
const LOOK_EVERY: Duration = Duration::from_secs(10);
/// The status file's name for the fingerprint of the certificate the
/// console serves (setup mode's self-signed one, then the serving one).
pub const CONSOLE_CERTIFICATE: &str = "certificate_fingerprint";

/// The service manager to tell, if there is one, and the status file to
/// keep, if one was asked for.
#[derive(Debug, Clone)]
pub struct Supervisor {
    notify: bool,
    /// Half the watchdog timeout systemd set (`WATCHDOG_USEC`), if it set one.
    ping_every: Option<Duration>,
    board: Option<Arc<StatusFile>>,
}

/// The status as a file, for the host's status screen (`tether screen` on
/// the appliance's tty1): the line `STATUS=` says, beside facts only the
/// console of the machine should show (where to connect, which
/// certificate to expect, and on first boot the setup code). Replaced
/// whole at each change, readable by its owner only.
#[derive(Debug)]
struct StatusFile {
    path: PathBuf,
    /// The facts and the last status line.
    shown: Mutex<Map<String, Value>>,
}

impl StatusFile {
    fn write(&self, change: impl FnOnce(&mut Map<String, Value>)) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut shown);
        let text = Value::Object(shown.clone()).to_string();
        if let Err(e) = tether_base::files::write_private(&self.path, text.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }
}

impl Supervisor {
    /// As the environment says (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Supervisor {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = if notify { sd_notify::watchdog_enabled() } else { None };
        Supervisor { notify, ping_every: watchdog.map(|timeout| timeout / 2), board: None }
    }

    /// Keeps the status in `path` too (see [`StatusFile`]).
    pub fn with_status_file(mut self, path: PathBuf) -> Supervisor {
        self.board = Some(Arc::new(StatusFile { path, shown: Mutex::new(Map::new()) }));
        self
    }

    /// Replaces the facts the status file shows beside the status line (a
    /// JSON object; anything else shows nothing).
    pub fn show(&self, facts: Value) {
        if let Some(board) = &self.board {
            board.write(|shown| {
                let status = shown.remove("status");
                *shown = match facts {
                    Value::Object(facts) => facts,
                    _ => Map::new(),
                };
                if let Some(status) = status {
                    shown.insert("status".into(), status);
                }
            });
        }
    }

    /// Sets one fact the status file shows, the others kept.
    pub fn fact(&self, key: &str, value: Value) {
        if let Some(board) = &self.board {
            board.write(|shown| {
                shown.insert(key.into(), value);
            });
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    fn ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Some(board) = &self.board {
            for state in states {
                if let NotifyState::Status(line) = state {
                    board.write(|shown| {
                        shown.insert("status".into(), Value::from(*line));
                    });
                }
            }
        }
        if self.notify
            && let Err(e) = sd_notify::notify(states)
        {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }
}

/// What the appliance is doing, as one line for `systemctl status`.
pub fn describe(state: &AppState) -> String {
    let health = crate::admin::health(state);
    let serving = || {
        let online = state.monitor.online(state.clock.now()).unwrap_or(0);
        if online == 1 { "serving, 1 worker online".to_owned() } else { format!("serving, {online} workers online") }
    };
    match health.status {
        Condition::Ok => serving(),
        Condition::DiskLow => format!("{}; disk low", serving()),
        Condition::Sealed => "sealed — waiting for unseal".into(),
        Condition::Draining => "stopping: finishing what runs".into(),
        Condition::AuditDegraded => {
            "degraded: the audit log cannot be written (disk full or failing); nothing changes until it can".into()
        }
        Condition::Degraded => format!("degraded: stopped early: {}", health.tasks_stopped.join(", ")),
    }
}

/// The health loop: proves the store commits, says the status, pings the
/// watchdog; at every ping interval, and at once when the vault changes.
/// Setup mode's watchdog: it has no store to prove yet, so it pings while
/// its runtime runs (a wedged one stops pinging). Never returns.
pub async fn keep_alive(supervisor: Supervisor) {
    let Some(every) = supervisor.ping_every else { return std::future::pending().await };
    loop {
        supervisor.ping();
        tokio::time::sleep(every).await;
    }
}

pub async fn run(state: AppState, supervisor: Supervisor) {
    let every = supervisor.ping_every.unwrap_or(LOOK_EVERY);
    let mut vault = state.vault.changes();
    let mut said = String::new();
    let mut console_certificate = None;
    loop {
        let now = state.clock.now();
        if let Err(e) = state.store.prove_writable(now.as_millis()).await {
            tracing::debug!(error = %e, "the health probe could not write");
        }
        let status = describe(&state);
        if status != said {
            supervisor.status(&status);
            said = status;
        }
        // Renewed or replaced (SIGHUP), the console's certificate is the
        // one `tether health` pins.
        let serving = state.certs.console_fingerprint().ok();
        if serving.is_some() && serving != console_certificate {
            supervisor.fact(CONSOLE_CERTIFICATE, Value::from(serving.clone()));
            console_certificate = serving;
        }
        if supervisor.ping_every.is_some() {
            supervisor.ping();
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = vault.changed() => if changed.is_err() { return },
        }
    }
}
