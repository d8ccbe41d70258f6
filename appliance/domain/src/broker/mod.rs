//! The task broker: lifecycle, leases, dispatch and long-poll waiters.
//!
//! State lives in the store; every transition is one store operation that
//! also appends its audit record. In memory there are only waiters: parked
//! worker polls ([`waiters`]) and clients waiting for a task to finish, both
//! woken after the commit that concerns them.
//!
//! Leases are fenced: each lease has an id, and a heartbeat or completion
//! must name the current one, so a task is completed exactly once even when a
//! slow worker's lease was reassigned.
//!
//! This module holds no HTTP types and never reads the system time.

pub mod events;
mod expiry;
pub mod offers;
mod ops;
mod reseal;
mod settings;
pub mod task;
pub mod upgrade;
mod waiters;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::audit::Origin;
use crate::metrics::{FinalState, Metrics};
use crate::vault::secrets::{self, SecretError, SecretRef, SecretValue};
use crate::vault::{self, Vault};
use ops::{Claim, Dispatch, Report};
pub use ops::{Completion, Depth, Heartbeat, ListFilter};
pub use settings::Settings;
pub use task::{Lease, NewTask, Revealed, StoredError, Task, TaskError, TaskRequest, TaskState};
use tether_base::clock::SharedClock;
use tether_base::ids::{LeaseId, TaskId, WorkerId};
use tether_store::{self as store, Store};
use waiters::{Handout, Waiters};

/// A task leased to a poll, opened for the worker that holds the lease.
#[derive(Debug)]
pub struct Delivery {
    pub task: Task,
    /// The input in the clear.
    pub input: Vec<u8>,
    /// The secret values the lease carries.
    pub secrets: Vec<(SecretRef, SecretValue)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such task")]
    NotFound,
    #[error("{0}")]
    InvalidTask(String),
    #[error("the lease is not the task's current lease")]
    LeaseStale,
    #[error("the task has already finished")]
    AlreadyFinished,
    #[error("this idempotency key was already used for a different request")]
    IdempotencyConflict,
    #[error("the broker is shutting down")]
    Draining,
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Vault(#[from] vault::Error),
    /// A task names a secret that does not exist or may not go to its kind.
    #[error("{0}")]
    SecretRefused(String),
    /// A worker's report would take the task's event log past its bound.
    #[error("{0}")]
    EventsFull(String),
}

impl From<SecretError> for Error {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Vault(v) => Error::Vault(v),
            refused => Error::SecretRefused(refused.to_string()),
        }
    }
}

/// The broker service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    store: Store,
    clock: SharedClock,
    vault: Arc<Vault>,
    settings: Arc<Settings>,
    waiters: Arc<Waiters>,
    finished: broadcast::Sender<TaskId>,
    /// The id of every task whose event log grew.
    changes: broadcast::Sender<TaskId>,
    metrics: Arc<Metrics>,
}

/// A worker as the broker needs to know it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: WorkerId,
    /// Sorted.
    pub labels: Arc<Vec<String>>,
}

impl Broker {
    pub fn new(
        store: Store,
        clock: SharedClock,
        vault: Arc<Vault>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Broker {
        let (finished, _) = broadcast::channel(1024);
        let (changes, _) = broadcast::channel(1024);
        Broker {
            store,
            clock,
            vault,
            settings: Arc::new(settings),
            waiters: Arc::default(),
            finished,
            changes,
            metrics,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Creates a task, or with an idempotency key already used by the same
    /// principal for the same request, returns the task it created then.
    /// The flag says whether this call created it.
    pub async fn create(
        &self,
        origin: &Origin,
        principal: &str,
        new: NewTask,
        idempotency_key: Option<String>,
    ) -> Result<(Task, bool), Error> {
        let now = self.clock.now();
        let keys = self.vault.keys()?;
        let idempotency = idempotency_key.as_deref().map(|key| ops::idempotency(&keys, principal, key, &new));
        let task = Task::queued(&keys, new, principal, now, idempotency_key)?;
        let origin = origin.clone();
        let (waiters, lease) = (self.waiters.clone(), self.settings.lease);
        let (task, created) = self
            .store
            .write(move |tx| {
                let d = Dispatch { waiters: &waiters, lease, keys: &keys };
                ops::create(tx, now, &origin, task, idempotency, d)
            })
            .await?;
        if created {
            self.metrics.tasks_created.inc();
            let _ = self.changes.send(task.id);
        }
        Ok((task, created))
    }

    /// Opens a task's sealed fields (input, result, error message).
    pub fn reveal(&self, task: &Task) -> Result<Revealed, Error> {
        Ok(task.reveal(&self.vault.keys()?)?)
    }

    /// Opens what a poll was handed, with the keys of the commit that leased
    /// it. A task that cannot be opened is left out: its lease runs out and
    /// the retry settles it (a secret deleted since the lease was granted
    /// fails it with `secret_unavailable`).
    fn open(&self, handout: Handout) -> Vec<Delivery> {
        let Some(keys) = handout.keys else { return Vec::new() };
        let open = |task: Task| -> Result<Delivery, Error> {
            let input = task.reveal(&keys)?.input;
            let refs = task.lease.as_ref().map(|l| l.secrets.as_slice()).unwrap_or_default();
            let secrets = refs
                .iter()
                .map(|r| Ok((r.clone(), secrets::open_value(&self.store, &keys, r)?)))
                .collect::<Result<_, Error>>()?;
            Ok(Delivery { task, input, secrets })
        };
        let mut delivered = Vec::with_capacity(handout.tasks.len());
        let now = self.clock.now();
        for task in handout.tasks {
            let id = task.id;
            if task.attempts == 1 {
                self.metrics.dispatched(now.since(task.created_at));
            }
            match open(task) {
                Ok(d) => delivered.push(d),
                Err(e) => tracing::warn!(task = %id, error = %e, "a leased task could not be opened; not delivered"),
            }
        }
        delivered
    }

    pub fn get(&self, id: TaskId) -> Result<Task, Error> {
        self.store.read(|tx| ops::get(tx, id))?.ok_or(Error::NotFound)
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Task>, Error> {
        Ok(self.store.read(|tx| ops::list(tx, filter))?)
    }

    /// The task once it has finished, or as it stands when `wait` runs out.
    pub async fn wait_finished(&self, id: TaskId, wait: Duration) -> Result<Task, Error> {
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let task = self.get(id)?;
            if task.state.is_final() {
                return Ok(task);
            }
            loop {
                tokio::select! {
                    news = finished.recv() => match news {
                        Ok(done) if done != id => continue,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return Ok(task),
                    },
                    () = tokio::time::sleep_until(deadline) => return self.get(id),
                }
            }
        }
    }

    pub async fn cancel(&self, origin: &Origin, id: TaskId) -> Result<Task, Error> {
        let now = self.clock.now();
        let origin = origin.clone();
        let task = self.store.write(move |tx| ops::cancel(tx, now, &origin, id)).await?;
        self.count_if_final(&task);
        let _ = self.finished.send(id);
        let _ = self.changes.send(id);
        Ok(task)
    }

    /// A worker's long-poll: returns as soon as at least one matching task is
    /// leased to it, or empty when `wait` runs out or the broker drains. Once
    /// a lease commits, its delivery no longer depends on the vault staying
    /// unsealed.
    pub async fn poll(
        &self,
        origin: &Origin,
        worker: &WorkerView,
        max_tasks: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let max_tasks = max_tasks.clamp(1, self.settings.max_tasks_per_poll);
        let deadline = tokio::time::Instant::now() + wait.min(self.settings.max_poll_wait);
        if !self.wait_unsealed(deadline).await {
            return Ok(Vec::new());
        }
        loop {
            let now = self.clock.now();
            let id = self.waiters.next_id();
            let (mailbox, mut delivered) = tokio::sync::oneshot::channel();
            let park = (tokio::time::Instant::now() < deadline).then_some((id, mailbox));
            let keys = self.vault.keys()?;
            let (origin, worker, waiters, lease, claim_keys) =
                (origin.clone(), worker.clone(), self.waiters.clone(), self.settings.lease, keys.clone());
            let claimed = self
                .store
                .write(move |tx| {
                    let d = Dispatch { waiters: &waiters, lease, keys: &claim_keys };
                    ops::claim_or_park(tx, now, &origin, &worker, max_tasks, d, park)
                })
                .await;
            match claimed {
                Ok(Claim::Leased { tasks, failed }) => {
                    for id in failed {
                        self.metrics.task_finished(FinalState::failed);
                        let _ = self.finished.send(id);
                        let _ = self.changes.send(id);
                    }
                    for task in &tasks {
                        let _ = self.changes.send(task.id);
                    }
                    return Ok(self.open(Handout::new(tasks, &keys)));
                }
                Ok(Claim::Draining) => return Ok(Vec::new()),
                Ok(Claim::Parked) => {}
                Err(e) => {
                    self.waiters.cancel(id);
                    return Err(e);
                }
            }
            tokio::select! {
                handed = &mut delivered => match handed {
                    Ok(handout) => return Ok(self.open(handout)),
                    // Reserved, but the reserving operation failed: look again.
                    Err(_) => continue,
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            if self.waiters.cancel(id) {
                return Ok(Vec::new());
            }
            // Reserved at the last moment: the delivery follows that commit.
            return Ok(self.open(delivered.await.unwrap_or_default()));
        }
    }

    /// Extends a lease; says whether the task was cancelled meanwhile.
    pub async fn heartbeat(&self, worker: WorkerId, id: TaskId, lease: LeaseId) -> Result<Heartbeat, Error> {
        let now = self.clock.now();
        let extend = self.settings.lease;
        self.store.write(move |tx| ops::heartbeat(tx, now, worker, id, lease, extend)).await
    }

    /// Records a worker's report. Only the holder of the current lease may report.
    pub async fn complete(
        &self,
        origin: &Origin,
        worker: WorkerId,
        id: TaskId,
        lease: LeaseId,
        completion: Completion,
    ) -> Result<Task, Error> {
        let now = self.clock.now();
        let keys = self.vault.keys()?;
        let report = match completion {
            Completion::Succeeded { result } => {
                Report::Succeeded { result: keys.encrypt(task::place(&id.to_key(), "result"), &result)? }
            }
            Completion::Failed { error, retryable } => {
                Report::Failed { error: task::seal_error(&keys, id, error)?, retryable }
            }
        };
        let origin = origin.clone();
        let (settings, waiters) = (self.settings.clone(), self.waiters.clone());
        let task = self
            .store
            .write(move |tx| {
                let d = Dispatch { waiters: &waiters, lease: settings.lease, keys: &keys };
                ops::complete(tx, now, &origin, worker, id, lease, report, &settings, d)
            })
            .await?;
        self.announce(&task);
        Ok(task)
    }

    /// Stores what the worker holding `lease` reports of task `id` while
    /// it runs; returns the number of the last event it added.
    pub async fn report_progress(
        &self,
        worker: WorkerId,
        id: TaskId,
        lease: LeaseId,
        progress: events::Progress,
    ) -> Result<u32, Error> {
        let now = self.clock.now();
        let keys = self.vault.keys()?;
        let seq = self
            .store
            .write(move |tx| {
                // Only from the holder of the current lease, while it runs.
                let (task, _) = ops::leased_to(tx, id, worker, lease)?;
                if task.state != TaskState::Leased {
                    return Err(Error::LeaseStale);
                }
                events::report(tx, &keys, now, id, progress)
            })
            .await?;
        let _ = self.changes.send(id);
        Ok(seq)
    }

    /// Keeps what `worker` says it runs (replacing what it said before).
    pub async fn set_offers(&self, worker: WorkerId, offers: tether_wire::Offers) -> Result<(), Error> {
        let now = self.clock.now();
        self.store.write(move |tx| offers::put(tx, now, worker, &offers)).await
    }

    /// What every worker said it runs, and when.
    pub fn offers(&self) -> Result<Vec<(WorkerId, tether_wire::Offers, tether_base::clock::Timestamp)>, Error> {
        self.store.read(offers::all)
    }

    /// The events of task `id` after number `after`, at most `limit`.
    pub fn events(&self, id: TaskId, after: Option<u32>, limit: usize) -> Result<Vec<events::TaskEvent>, Error> {
        let keys = self.vault.keys()?;
        self.store.read(|tx| events::list(tx, &keys, id, after, limit))
    }

    /// The id of every task whose event log grows (a receiver that falls
    /// behind is told how many it missed: it reads the log again).
    pub fn changes(&self) -> broadcast::Receiver<TaskId> {
        self.changes.subscribe()
    }

    /// Expires overdue leases and releases retries whose backoff has passed.
    /// Returns how many tasks it moved.
    /// Does nothing while the vault is sealed: leases do not run out while
    /// workers cannot report.
    pub async fn reap(&self) -> Result<usize, Error> {
        let now = self.clock.now();
        let Ok(keys) = self.vault.keys() else {
            return Ok(0);
        };
        if !self.store.read(|tx| expiry::anything_due(tx, now))? {
            return Ok(0);
        }
        let (settings, waiters) = (self.settings.clone(), self.waiters.clone());
        let (moved, expired) = self
            .store
            .write(move |tx| {
                let d = Dispatch { waiters: &waiters, lease: settings.lease, keys: &keys };
                expiry::reap(tx, now, &settings, d)
            })
            .await?;
        self.metrics.lease_expiries.inc_by(expired as u64);
        for task in &moved {
            self.announce(task);
        }
        Ok(moved.len())
    }

    /// Ends every lease `worker` holds, because it has been revoked: each
    /// task goes back in line (or fails with no attempts left). Returns how
    /// many tasks it moved.
    pub async fn release_worker(&self, worker: WorkerId) -> Result<usize, Error> {
        let now = self.clock.now();
        let keys = self.vault.keys()?;
        let (settings, waiters) = (self.settings.clone(), self.waiters.clone());
        let moved = self
            .store
            .write(move |tx| {
                let d = Dispatch { waiters: &waiters, lease: settings.lease, keys: &keys };
                expiry::release_worker(tx, now, worker, &settings, d)
            })
            .await?;
        for task in &moved {
            self.announce(task);
        }
        Ok(moved.len())
    }

    /// Runs [`Broker::reap`] every `every` until the broker drains. After
    /// every unseal (the first included) it first gives each running lease
    /// a full term, since its worker could not heartbeat while sealed.
    pub async fn run_reaper(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seal_changes = self.vault.watch();
        let mut grace_due = true;
        while !self.waiters.is_draining() {
            tick.tick().await;
            grace_due |= seal_changes.has_changed().unwrap_or(false);
            if self.vault.is_sealed() {
                continue;
            }
            if grace_due {
                seal_changes.mark_unchanged();
                match self.extend_leases().await {
                    Ok(n) if n > 0 => tracing::info!(leases = n, "leases extended after unseal"),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "could not extend leases after unseal; retrying");
                        continue;
                    }
                }
                grace_due = false;
            }
            match self.reap().await {
                Ok(_) => {}
                // The store says so once; the reaper simply waits it out.
                Err(Error::Store(tether_store::Error::Degraded)) => {}
                Err(e) => tracing::error!(error = %e, "lease reaper failed; retrying"),
            }
        }
    }

    /// Moves the tasks of one batch after `after` to the current data key.
    /// Returns how many changed and where the next batch starts (`None`:
    /// every task has been looked at).
    pub async fn refresh_seals(&self, after: Option<TaskId>) -> Result<(usize, Option<TaskId>), Error> {
        const BATCH: usize = 256;
        let keys = self.vault.keys()?;
        let current = keys.current_version()?;
        let (stale, next) = self.store.read(|tx| reseal::stale_seals(tx, after, current, BATCH))?;
        if stale.is_empty() {
            return Ok((0, next));
        }
        let moved = self.store.write(move |tx| reseal::refresh_seals(tx, &keys, &stale)).await?;
        Ok((moved, next))
    }

    /// [`Broker::refresh_seals`] for the tasks' event logs: a batch after
    /// `after` (an event's key); returns how many changed and where to go on.
    pub async fn refresh_event_seals(&self, after: Option<[u8; 20]>) -> Result<(usize, Option<[u8; 20]>), Error> {
        const BATCH: usize = 1024;
        let keys = self.vault.keys()?;
        Ok(self.store.write(move |tx| events::refresh_seals(tx, &keys, after, BATCH)).await?)
    }

    /// Gives every running lease at least one full term from now.
    pub async fn extend_leases(&self) -> Result<usize, Error> {
        let now = self.clock.now();
        let lease = self.settings.lease;
        self.store.write(move |tx| expiry::extend_leases(tx, now, lease)).await
    }

    /// Waits while the vault is sealed (polls wait rather than fail);
    /// `false` if `deadline` passes or the broker drains first.
    async fn wait_unsealed(&self, deadline: tokio::time::Instant) -> bool {
        const CHECK_DRAIN: Duration = Duration::from_millis(500);
        while self.vault.is_sealed() {
            if self.waiters.is_draining() || tokio::time::Instant::now() >= deadline {
                return false;
            }
            let slice = (tokio::time::Instant::now() + CHECK_DRAIN).min(deadline);
            self.vault.wait_unsealed(slice).await;
        }
        true
    }

    /// After a commit: tells clients waiting for a task that it finished.
    fn announce(&self, task: &Task) {
        let _ = self.changes.send(task.id);
        if self.count_if_final(task) {
            let _ = self.finished.send(task.id);
        }
    }

    /// Counts a task that reached its final state; says whether it had.
    fn count_if_final(&self, task: &Task) -> bool {
        let state = match task.state {
            TaskState::Succeeded => FinalState::succeeded,
            TaskState::Failed => FinalState::failed,
            TaskState::Cancelled => FinalState::cancelled,
            TaskState::Queued | TaskState::Leased => return false,
        };
        self.metrics.task_finished(state);
        true
    }

    /// Stops leasing and answers every parked poll at once.
    pub fn drain(&self) {
        self.waiters.drain();
    }

    pub fn is_draining(&self) -> bool {
        self.waiters.is_draining()
    }

    /// How many worker polls are parked right now.
    pub fn parked_polls(&self) -> usize {
        self.waiters.parked()
    }

    /// The work waiting and under way now.
    pub fn depth(&self) -> Result<Depth, Error> {
        Ok(self.store.read(ops::depth)?)
    }

    /// The id of every task as it finishes (for live counts; a receiver
    /// that falls behind is told how many it missed).
    pub fn finished_news(&self) -> broadcast::Receiver<TaskId> {
        self.finished.subscribe()
    }

    /// The workers with a poll parked now.
    pub fn parked_workers(&self) -> Vec<WorkerId> {
        self.waiters.parked_workers()
    }
}

#[cfg(test)]
mod tests;
