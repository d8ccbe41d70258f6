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

use std::time::Duration;

use sd_notify::NotifyState;

use crate::AppState;
use crate::admin::Condition;

/// How often the health loop looks when systemd asked for no watchdog.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// The service manager to tell, if there is one.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor {
    notify: bool,
    /// Half the watchdog timeout systemd set (`WATCHDOG_USEC`), if it set one.
    ping_every: Option<Duration>,
}

impl Supervisor {
    /// As the environment says (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Supervisor {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = if notify { sd_notify::watchdog_enabled() } else { None };
        Supervisor { notify, ping_every: watchdog.map(|timeout| timeout / 2) }
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
        if supervisor.ping_every.is_some() {
            supervisor.ping();
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = vault.changed() => if changed.is_err() { return },
        }
    }
}
