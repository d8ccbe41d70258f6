//! The broker's tunables.

use std::time::Duration;

/// Tunables, validated by the config module.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// The longest a worker's poll may be held open.
    pub max_poll_wait: Duration,
    /// The most tasks one poll may take.
    pub max_tasks_per_poll: u32,
    /// Delay before the first retry; doubles per attempt.
    pub retry_backoff: Duration,
    /// The longest delay between retries.
    pub retry_backoff_max: Duration,
}

impl Settings {
    /// How often a worker heartbeats a task it runs: three tries before
    /// the lease runs out.
    pub fn heartbeat(&self) -> Duration {
        (self.lease / 3).max(Duration::from_secs(1))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_secs(60),
            max_poll_wait: Duration::from_secs(30),
            max_tasks_per_poll: 32,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
        }
    }
}
