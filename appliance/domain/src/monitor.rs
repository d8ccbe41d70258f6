//! Watches that raise alerts from what the appliance sees go by: a worker
//! gone silent, and the creation of tasks or of credentials (API tokens,
//! LLM keys) far from its usual level.
//!
//! Both are kept in memory (a restart starts them over) and raise each
//! alert once, re-arming only when the condition has cleared.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tether_base::clock::{SharedClock, Timestamp};
use tether_base::ids::WorkerId;
use tether_store::Store;

/// Minutes of volume the baseline is made of.
const BASELINE_MINUTES: usize = 60;
/// Minutes of history needed before volume is judged at all.
const MIN_BASELINE: usize = 10;
/// Deviations from the baseline mean that count as anomalous.
const SIGMAS: f64 = 2.0;
/// A floor under the standard deviation, so a perfectly steady baseline
/// (σ = 0) does not call one extra task an anomaly.
const MIN_SIGMA: f64 = 1.0;
const MINUTE: Duration = Duration::from_secs(60);

/// Whether `count` is more than [`SIGMAS`] deviations from `history`'s mean
/// (with the deviation at least [`MIN_SIGMA`]); `None` until the history
/// is long enough to say.
pub fn anomalous(history: &[u64], count: u64) -> Option<bool> {
    if history.len() < MIN_BASELINE {
        return None;
    }
    let n = history.len() as f64;
    let mean = history.iter().map(|c| *c as f64).sum::<f64>() / n;
    let variance = history.iter().map(|c| (*c as f64 - mean).powi(2)).sum::<f64>() / n;
    let sigma = variance.sqrt().max(MIN_SIGMA);
    Some((count as f64 - mean).abs() > SIGMAS * sigma)
}

/// How many of one kind of thing were made, minute by minute.
#[derive(Debug, Default)]
struct Volume {
    /// Made per finished minute, oldest first.
    history: VecDeque<u64>,
    current: u64,
    minute_started: Option<Timestamp>,
    alerted: bool,
}

#[derive(Debug, Default)]
struct Silence {
    /// Requests in flight per worker (a parked long-poll, mostly): while
    /// one is, the worker is connected.
    open: HashMap<WorkerId, usize>,
    /// When each request began or ended.
    last_seen: HashMap<WorkerId, Timestamp>,
    alerted: HashSet<WorkerId>,
}

/// A worker's request in flight: the worker counts as connected until this
/// drops — its answer sent, or its connection lost (which drops the
/// request's future: a killed worker is noticed then, not when its
/// long-poll would have ended).
#[derive(Debug)]
pub struct Presence {
    monitor: Arc<Monitor>,
    worker: WorkerId,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let now = self.monitor.clock.now();
        let mut s = self.monitor.silence.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = s.open.get_mut(&self.worker) {
            *open -= 1;
            if *open == 0 {
                s.open.remove(&self.worker);
            }
        }
        s.last_seen.insert(self.worker, now);
    }
}

/// The watches. Share one.
#[derive(Debug)]
pub struct Monitor {
    store: Store,
    clock: SharedClock,
    /// A worker is silent once it has not been heard from for this long.
    silent_after: Duration,
    started: Timestamp,
    tasks: Mutex<Volume>,
    /// API tokens and LLM keys.
    keys: Mutex<Volume>,
    silence: Mutex<Silence>,
    /// One look at a time: a look that finds nothing waits for one under
    /// way to have written what it found.
    looking: tokio::sync::Mutex<()>,
}

impl Monitor {
    /// The newest `limit` alerts, whoever raised them.
    pub fn alerts(&self, limit: usize) -> Result<Vec<crate::audit::alerts::Alert>, tether_store::Error> {
        self.store.read(|tx| crate::audit::alerts::list(tx, limit))
    }

    /// `silent_after`: how long a worker may go without a request in
    /// flight before it counts as silent (more than the longest a busy
    /// worker waits between heartbeats).
    pub fn new(store: Store, clock: SharedClock, silent_after: Duration) -> Monitor {
        let started = clock.now();
        Monitor {
            store,
            clock,
            silent_after,
            started,
            tasks: Mutex::default(),
            keys: Mutex::default(),
            silence: Mutex::default(),
            looking: tokio::sync::Mutex::default(),
        }
    }

    /// A request from `worker` begins (any request over its certificate);
    /// it is connected while the guard lives.
    pub fn presence(self: &Arc<Self>, worker: WorkerId) -> Presence {
        let now = self.clock.now();
        let mut s = self.silence.lock().unwrap_or_else(PoisonError::into_inner);
        *s.open.entry(worker).or_default() += 1;
        s.last_seen.insert(worker, now);
        s.alerted.remove(&worker);
        Presence { monitor: self.clone(), worker }
    }

    /// When each worker heard from since this start was last heard from
    /// (a request of its began or ended).
    pub fn last_seen(&self) -> HashMap<WorkerId, Timestamp> {
        self.silence.lock().unwrap_or_else(PoisonError::into_inner).last_seen.clone()
    }

    /// A task was created.
    pub fn task_created(&self) {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).current += 1;
    }

    /// A credential was made: an API token or an LLM key.
    pub fn key_created(&self) {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).current += 1;
    }

    /// One look at every watch; raises what is due. Returns the alerts raised.
    pub async fn check(&self) -> Result<usize, tether_store::Error> {
        let _one_look = self.looking.lock().await;
        let now = self.clock.now();
        let mut raised = 0;
        for (worker, quiet) in self.silent_workers(now)? {
            let subject = worker.to_string();
            let details = [("silent_for_s", quiet.as_secs().to_string())];
            self.store
                .write(move |tx| crate::audit::alerts::raise(tx, now, "worker_silent", &subject, &details))
                .await?;
            raised += 1;
        }
        let volumes = [
            (&self.tasks, "task_volume", "tasks", "tasks_last_minute"),
            (&self.keys, "key_volume", "keys", "keys_last_minute"),
        ];
        for (volume, kind, subject, counted) in volumes {
            let anomaly = volume_anomaly(&mut volume.lock().unwrap_or_else(PoisonError::into_inner), now);
            if let Some((count, mean)) = anomaly {
                let details = [(counted, count.to_string()), ("baseline_per_minute", format!("{mean:.1}"))];
                self.store.write(move |tx| crate::audit::alerts::raise(tx, now, kind, subject, &details)).await?;
                raised += 1;
            }
        }
        Ok(raised)
    }

    /// Active workers not heard from within `silent_after` (counted from
    /// this start for those not heard from since), each once.
    fn silent_workers(&self, now: Timestamp) -> Result<Vec<(WorkerId, Duration)>, tether_store::Error> {
        let silent = self.silent(now)?;
        let mut s = self.silence.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(silent.into_iter().filter(|(id, _)| s.alerted.insert(*id)).collect())
    }

    /// Every active worker not heard from within `silent_after` (counted
    /// from this start for those not heard from since), and for how long.
    pub fn silent(&self, now: Timestamp) -> Result<Vec<(WorkerId, Duration)>, tether_store::Error> {
        Ok(self.quiet_for(now)?.into_iter().filter(|(_, quiet)| *quiet > self.silent_after).collect())
    }

    /// How many active workers were heard from within `silent_after`.
    pub fn online(&self, now: Timestamp) -> Result<usize, tether_store::Error> {
        Ok(self.quiet_for(now)?.iter().filter(|(_, quiet)| *quiet <= self.silent_after).count())
    }

    /// Every active worker, and how long since it was heard from (since
    /// this start, or its enrollment if later, for those not heard from;
    /// none for one with a request in flight).
    fn quiet_for(&self, now: Timestamp) -> Result<Vec<(WorkerId, Duration)>, tether_store::Error> {
        let workers = self.store.read(crate::pki::list_workers)?;
        let s = self.silence.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(workers
            .into_iter()
            .filter(|w| !w.revoked)
            .map(|w| {
                let connected = s.open.contains_key(&w.id);
                let since = s.last_seen.get(&w.id).copied().unwrap_or(self.started.max(w.enrolled_at));
                (w.id, if connected { Duration::ZERO } else { now.since(since) })
            })
            .collect())
    }

    /// Looks every `every`, for as long as the appliance runs.
    pub async fn run(self: std::sync::Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.check().await {
                Ok(_) | Err(tether_store::Error::Degraded) => {}
                Err(e) => tracing::warn!(error = %e, "the alert watches could not look; retrying"),
            }
        }
    }
}

/// Closes finished minutes; the last one's count and the baseline mean
/// if it is anomalous and no alert is standing.
fn volume_anomaly(v: &mut Volume, now: Timestamp) -> Option<(u64, f64)> {
    let started = *v.minute_started.get_or_insert(now);
    if now.since(started) < MINUTE {
        return None;
    }
    let count = std::mem::take(&mut v.current);
    v.minute_started = Some(now);
    let history: Vec<u64> = v.history.iter().copied().collect();
    let verdict = anomalous(&history, count);
    v.history.push_back(count);
    if v.history.len() > BASELINE_MINUTES {
        v.history.pop_front();
    }
    match verdict {
        Some(true) if !v.alerted => {
            v.alerted = true;
            let mean = history.iter().sum::<u64>() as f64 / history.len() as f64;
            Some((count, mean))
        }
        Some(false) => {
            v.alerted = false;
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_beyond_two_deviations_of_the_baseline_is_anomalous() {
        let steady = [10u64, 12, 9, 11, 10, 10, 11, 9, 12, 10];
        assert_eq!(anomalous(&steady[..9], 100), None, "too little history to judge");
        assert_eq!(anomalous(&steady, 11), Some(false));
        assert_eq!(anomalous(&steady, 14), Some(true), "mean 10.4, σ 1.0: 14 is beyond 2σ");
        assert_eq!(anomalous(&steady, 0), Some(true), "a drop counts too");
        let flat = [5u64; 12];
        assert_eq!(anomalous(&flat, 6), Some(false), "σ has a floor of one task");
        assert_eq!(anomalous(&flat, 8), Some(true));
    }
}
