//! The broker's store operations. Each runs inside one group-commit write
//! transaction and, following the store's rule, checks everything before its
//! first write. Each appends the audit records for what it changes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::events;
use super::task::{MAX_PRIORITY, StoredError, retry_delay, seal_error};
use super::waiters::{Handout, Mailbox, Waiters};
use super::{Error, Lease, NewTask, Settings, Task, TaskError, TaskState, WorkerView};
use crate::audit::{self, Event, Origin, Outcome, Resource};
use crate::vault::secrets::{self, Grant, SecretRef};
use crate::vault::{Keys, Sealed};
use tether_base::clock::Timestamp;
use tether_base::ids::{LeaseId, TaskId, WorkerId};
use tether_base::labels::labels_match;
use tether_base::secret::sha256_fields;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Every task, keyed by id (UUIDv7, so key order is creation order).
pub(super) const TASKS: Collection<Task> = Collection::new(super::task::TABLE);
/// The schedule: ready tasks, leases and retry backoffs, as three key spaces
/// of one table. Every table a commit touches costs it pages and time
/// (measured: 0.27 ms for one to three tables, 0.48 ms for six), so the
/// common operations touch `tasks`, this, and the audit log, nothing more.
pub(super) const SCHEDULE: Collection<Slot> = Collection::new("task_schedule");
/// `[READY][MAX_PRIORITY - priority][enqueued_at][task id]`: a forward scan
/// yields highest priority first, then first in, first out.
const READY: u8 = b'q';
/// `[LEASED][expires_at][task id]`.
pub(super) const LEASED: u8 = b'l';
/// `[DELAYED][not_before][task id]`: waiting out a retry backoff.
pub(super) const DELAYED: u8 = b'd';
/// `SHA-256(principal, key)` -> the task that key created.
pub(super) const IDEMPOTENCY: Collection<IdempotencyEntry> = Collection::new("task_idempotency");

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Slot {
    /// Labels are copied here so matching a worker needs no task lookups.
    Ready { task: TaskId, labels: Vec<String> },
    /// A lease expiry or a backoff's end.
    Due(TaskId),
}

/// The work in the schedule: ready to lease, leased, and waiting out a
/// retry backoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    pub ready: u64,
    pub leased: u64,
    pub delayed: u64,
}

/// Counts the schedule's three key spaces (live work only: finished tasks
/// have no slot, so this does not grow with history).
pub(super) fn depth(tx: &ReadTx) -> Result<Depth, store::Error> {
    let mut depth = Depth::default();
    tx.scan(SCHEDULE, None, Order::Ascending, |key, _: Slot| {
        match key.first() {
            Some(&READY) => depth.ready += 1,
            Some(&LEASED) => depth.leased += 1,
            Some(&DELAYED) => depth.delayed += 1,
            _ => {}
        }
        Ok(true)
    })?;
    Ok(depth)
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct IdempotencyEntry {
    pub(super) task: TaskId,
    pub(super) request: [u8; 32],
}

/// What a worker reports when it is done with a task.
#[derive(Debug, Clone)]
pub enum Completion {
    /// The result as JSON text.
    Succeeded { result: Vec<u8> },
    /// A retryable failure goes back to the queue while attempts remain.
    Failed { error: TaskError, retryable: bool },
}

/// A [`Completion`] with its data sealed, as the store operation takes it.
#[derive(Debug, Clone)]
pub(super) enum Report {
    Succeeded { result: Sealed },
    Failed { error: StoredError, retryable: bool },
}

/// An idempotency key's slot (`SHA-256(principal, key)`) and the keyed
/// digest of the request that used it.
pub(super) type Idempotency = ([u8; 32], [u8; 32]);

/// Where `principal`'s idempotency `key` is recorded, and the digest of the
/// request `new` it is used for. The digest is keyed, so the store holds
/// nothing that confirms a guessed input.
pub(super) fn idempotency(keys: &Keys, principal: &str, key: &str, new: &NewTask) -> Idempotency {
    let slot = sha256_fields(&[principal.as_bytes(), key.as_bytes()]);
    let request = keys.digest(
        "task idempotency",
        &[
            new.kind.as_bytes(),
            &new.input,
            new.labels.join("\n").as_bytes(),
            new.secrets.join("\n").as_bytes(),
            &[new.priority],
            &new.max_attempts.to_be_bytes(),
            &new.timeout.as_millis().to_be_bytes(),
        ],
    );
    (slot, request)
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub cancel: bool,
    pub lease_expires_at: Timestamp,
}

/// Where tasks that become ready go: straight to a parked poll that can run
/// them (leased in the same transaction, delivered the moment it commits),
/// or into the queue. The keys seal the reason when a task must fail.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dispatch<'a> {
    pub waiters: &'a Waiters,
    pub lease: Duration,
    pub keys: &'a Keys,
}

/// What a poll's look at the queue came to.
#[derive(Debug)]
pub(super) enum Claim {
    /// Tasks leased to the poll, and tasks failed on the way because the
    /// secrets they name can no longer be given to any worker.
    Leased {
        tasks: Vec<Task>,
        failed: Vec<TaskId>,
    },
    /// Nothing to claim; the poll is parked and its mailbox will hear.
    Parked,
    Draining,
}

/// Which tasks a listing returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<TaskState>,
    /// Only tasks created by this principal.
    pub created_by: Option<String>,
    /// Only tasks created before this one (for paging).
    pub before: Option<TaskId>,
    pub limit: usize,
}

pub(super) fn due_key(space: u8, t: Timestamp, id: TaskId) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(space);
    k.extend_from_slice(&t.to_key());
    k.extend_from_slice(&id.to_key());
    k
}

/// The time in a `LEASED` or `DELAYED` key.
pub(super) fn time_of(key: &[u8]) -> Timestamp {
    let mut b = [0u8; 8];
    b.copy_from_slice(key.get(1..9).unwrap_or(&[0; 8]));
    Timestamp::from_millis(u64::from_be_bytes(b))
}

pub(super) fn resource(id: TaskId) -> Resource {
    Resource::new("task", id)
}

/// Queues `task`, to be offered to workers holding every one of `labels`.
fn enqueue(tx: &mut WriteTx<'_>, now: Timestamp, task: &mut Task, labels: Vec<String>) -> Result<(), store::Error> {
    let mut key = vec![READY, MAX_PRIORITY - task.priority.min(MAX_PRIORITY)];
    key.extend_from_slice(&now.to_key());
    key.extend_from_slice(&task.id.to_key());
    tx.put(SCHEDULE, &key, &Slot::Ready { task: task.id, labels })?;
    task.queue_key = Some(key);
    task.not_before = None;
    Ok(())
}

/// The labels a worker needs for `task`: its own, and those the policies of
/// the secrets it names ask for. Sorted.
fn dispatch_labels(tx: &mut WriteTx<'_>, task: &Task) -> Result<Vec<String>, store::Error> {
    if task.secrets.is_empty() {
        return Ok(task.labels.clone());
    }
    let mut labels = task.labels.clone();
    labels.extend(secrets::required_labels(tx, &task.secrets)?);
    labels.sort();
    labels.dedup();
    Ok(labels)
}

/// Makes a task ready: leased at once to the oldest parked poll that can
/// run it, or queued. The caller stores the task afterwards.
pub(super) fn make_ready(tx: &mut WriteTx<'_>, now: Timestamp, task: &mut Task, d: Dispatch<'_>) -> Result<(), Error> {
    enter(tx, now, task, TaskState::Queued)?;
    task.lease = None;
    task.not_before = None;
    let labels = dispatch_labels(tx, task)?;
    let Some(reservation) = d.waiters.reserve(&labels) else {
        return Ok(enqueue(tx, now, task, labels)?);
    };
    match secrets::grant(tx, &task.kind, &task.secrets, &reservation.worker.labels)? {
        Grant::Deliver(refs) => {
            lease_to(tx, now, &reservation.origin, &reservation.worker, task, d.lease, refs)?;
            let handout = Handout::new(vec![task.clone()], d.keys);
            // The waiting worker hears before the caller that made the task
            // ready; if the batch aborts, the dropped reservation tells the
            // poll to look again.
            tx.after_commit(move || {
                if reservation.deliver(handout).is_err() {
                    tracing::debug!("a parked poll left before its task arrived; its lease will expire");
                }
            });
            Ok(())
        }
        // The dropped reservation sends that poll back to look again.
        Grant::Withhold => Ok(enqueue(tx, now, task, labels)?),
        Grant::Refuse(why) => refuse(tx, now, task, why, d.keys),
    }
}

/// Fails a task whose secrets can no longer be given to any worker. The
/// caller has taken it out of the schedule and stores it afterwards.
fn refuse(tx: &mut WriteTx<'_>, now: Timestamp, task: &mut Task, why: String, keys: &Keys) -> Result<(), Error> {
    let error = seal_error(keys, task.id, TaskError { code: "secret_unavailable".into(), message: why })?;
    task.queue_key = None;
    task.error = Some(error);
    finish(tx, task, now, TaskState::Failed)?;
    let event = Event::new("task.failed", "dispatch", resource(task.id))
        .outcome(Outcome::Failure)
        .detail("attempt", task.attempts)
        .detail("code", "secret_unavailable")
        .detail("will_retry", false);
    audit::append(tx, now, &Origin::system(), event)?;
    Ok(())
}

/// Puts a task back in line, after `delay` if it is not zero.
fn requeue(
    tx: &mut WriteTx<'_>,
    task: &mut Task,
    now: Timestamp,
    delay: Duration,
    d: Dispatch<'_>,
) -> Result<(), Error> {
    if delay.is_zero() {
        return make_ready(tx, now, task, d);
    }
    enter(tx, now, task, TaskState::Queued)?;
    task.lease = None;
    let at = now.plus(delay);
    task.not_before = Some(at);
    Ok(tx.put(SCHEDULE, &due_key(DELAYED, at, task.id), &Slot::Due(task.id))?)
}

/// Leases `task` to `worker` with the secret versions it carries, and
/// audits the lease and each delivery. The caller stores the task.
fn lease_to(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    worker: &WorkerView,
    task: &mut Task,
    lease_for: Duration,
    secrets: Vec<SecretRef>,
) -> Result<(), store::Error> {
    let lease = Lease { worker: worker.id, id: LeaseId::new(), expires_at: now.plus(lease_for), secrets };
    tx.put(SCHEDULE, &due_key(LEASED, lease.expires_at, task.id), &Slot::Due(task.id))?;
    task.queue_key = None;
    task.attempts += 1;
    enter(tx, now, task, TaskState::Leased)?;
    task.updated_at = now;
    let event = Event::new("task.leased", "lease", resource(task.id))
        .detail("worker", worker.id)
        .detail("attempt", task.attempts)
        .detail("lease_id", lease.id);
    audit::append(tx, now, origin, event)?;
    for r in &lease.secrets {
        audit::append(tx, now, origin, secrets::delivery_event(r, task.id, worker.id))?;
    }
    task.lease = Some(lease);
    Ok(())
}

pub(super) fn finish(
    tx: &mut WriteTx<'_>,
    task: &mut Task,
    now: Timestamp,
    state: TaskState,
) -> Result<(), store::Error> {
    enter(tx, now, task, state)?;
    task.finished_at = Some(now);
    task.updated_at = now;
    Ok(())
}

/// Moves `task` into `state`, noting the change in its event log.
fn enter(tx: &mut WriteTx<'_>, now: Timestamp, task: &mut Task, state: TaskState) -> Result<(), store::Error> {
    if task.state != state {
        task.state = state;
        events::state_changed(tx, now, task.id, state, task.attempts)?;
    }
    Ok(())
}

/// Stores a new task (built by the broker, its input sealed), or with an
/// idempotency key seen before, returns the task that key created.
pub(super) fn create(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    mut task: Task,
    idempotency: Option<Idempotency>,
    d: Dispatch<'_>,
) -> Result<(Task, bool), Error> {
    let mut fresh_slot = None;
    if let Some((slot, request)) = idempotency {
        if let Some(seen) = tx.get(IDEMPOTENCY, &slot)? {
            if seen.request != request {
                return Err(Error::IdempotencyConflict);
            }
            let task = tx.get(TASKS, &seen.task.to_key())?.ok_or(Error::NotFound)?;
            return Ok((task, false));
        }
        fresh_slot = Some((slot, request));
    }
    secrets::check_for_task(tx, &task.kind, &task.secrets)?;
    if let Some((slot, request)) = fresh_slot {
        tx.put(IDEMPOTENCY, &slot, &IdempotencyEntry { task: task.id, request })?;
    }
    let event = Event::new("task.created", "create", resource(task.id))
        .detail("kind", &task.kind)
        .detail("priority", task.priority)
        .detail("labels", task.labels.join(","))
        .detail("secrets", task.secrets.join(","));
    audit::append(tx, now, origin, event)?;
    events::state_changed(tx, now, task.id, TaskState::Queued, 0)?;
    make_ready(tx, now, &mut task, d)?;
    tx.put(TASKS, &task.id.to_key(), &task)?;
    Ok((task, true))
}

pub(super) fn get(tx: &ReadTx, id: TaskId) -> Result<Option<Task>, store::Error> {
    tx.get(TASKS, &id.to_key())
}

pub(super) fn list(tx: &ReadTx, filter: &ListFilter) -> Result<Vec<Task>, store::Error> {
    let mut out = Vec::new();
    let start = filter.before.map(TaskId::to_key);
    tx.scan(TASKS, start.as_ref().map(|k| &k[..]), Order::Descending, |_, task: Task| {
        let wanted = Some(task.id) != filter.before
            && filter.state.is_none_or(|s| s == task.state)
            && filter.created_by.as_ref().is_none_or(|p| *p == task.created_by);
        if wanted {
            out.push(task);
        }
        Ok(out.len() < filter.limit)
    })?;
    Ok(out)
}

pub(super) fn cancel(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, id: TaskId) -> Result<Task, Error> {
    let mut task = tx.get(TASKS, &id.to_key())?.ok_or(Error::NotFound)?;
    if task.state.is_final() {
        return Err(Error::AlreadyFinished);
    }
    let was = task.state;
    if let Some(key) = task.queue_key.take() {
        tx.delete(SCHEDULE, &key)?;
    }
    if let Some(at) = task.not_before.take() {
        tx.delete(SCHEDULE, &due_key(DELAYED, at, id))?;
    }
    // The lease itself stays on the record, so the worker's next heartbeat is
    // told to stop rather than refused.
    if let Some(lease) = &task.lease {
        tx.delete(SCHEDULE, &due_key(LEASED, lease.expires_at, id))?;
    }
    finish(tx, &mut task, now, TaskState::Cancelled)?;
    tx.put(TASKS, &id.to_key(), &task)?;
    audit::append(tx, now, origin, Event::new("task.cancelled", "cancel", resource(id)).detail("was", was.as_str()))?;
    Ok(task)
}

/// Leases up to `max_tasks` ready tasks to `worker`; if there are none and
/// `park` is given, parks the poll (see [`Waiters`]).
pub(super) fn claim_or_park(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    worker: &WorkerView,
    max_tasks: u32,
    d: Dispatch<'_>,
    park: Option<(u64, Mailbox)>,
) -> Result<Claim, Error> {
    if d.waiters.is_draining() {
        return Ok(Claim::Draining);
    }
    let mut picked: Vec<(Vec<u8>, TaskId)> = Vec::new();
    tx.scan(SCHEDULE, Some(&[READY]), Order::Ascending, |key, slot| {
        if key.first() != Some(&READY) {
            return Ok(false);
        }
        if let Slot::Ready { task, labels } = slot
            && labels_match(&labels, &worker.labels)
        {
            picked.push((key.to_vec(), task));
        }
        Ok(picked.len() < max_tasks as usize)
    })?;
    // Every check reads before the first write.
    let mut plans = Vec::with_capacity(picked.len());
    for (queue_key, id) in picked {
        let task = tx.get(TASKS, &id.to_key())?.ok_or(Error::NotFound)?;
        match secrets::grant(tx, &task.kind, &task.secrets, &worker.labels)? {
            Grant::Deliver(refs) => plans.push((queue_key, task, Ok(refs))),
            Grant::Refuse(why) => plans.push((queue_key, task, Err(why))),
            Grant::Withhold => {}
        }
    }
    if plans.is_empty() {
        return Ok(match park {
            Some((id, mailbox)) => {
                d.waiters.park(id, origin.clone(), worker.clone(), mailbox);
                Claim::Parked
            }
            None => Claim::Leased { tasks: Vec::new(), failed: Vec::new() },
        });
    }
    let (mut tasks, mut failed) = (Vec::with_capacity(plans.len()), Vec::new());
    for (queue_key, mut task, plan) in plans {
        tx.delete(SCHEDULE, &queue_key)?;
        match plan {
            Ok(refs) => lease_to(tx, now, origin, worker, &mut task, d.lease, refs)?,
            Err(why) => refuse(tx, now, &mut task, why, d.keys)?,
        }
        tx.put(TASKS, &task.id.to_key(), &task)?;
        match task.state {
            TaskState::Leased => tasks.push(task),
            _ => failed.push(task.id),
        }
    }
    Ok(Claim::Leased { tasks, failed })
}

/// The task, if `worker` holds its lease `lease` (the task may be cancelled).
pub(super) fn leased_to(
    tx: &mut WriteTx<'_>,
    id: TaskId,
    worker: WorkerId,
    lease: LeaseId,
) -> Result<(Task, Lease), Error> {
    let task = tx.get(TASKS, &id.to_key())?.ok_or(Error::NotFound)?;
    match &task.lease {
        Some(l) if l.id == lease && l.worker == worker => {
            let l = l.clone();
            Ok((task, l))
        }
        _ => Err(Error::LeaseStale),
    }
}

pub(super) fn heartbeat(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    worker: WorkerId,
    id: TaskId,
    lease: LeaseId,
    extend: Duration,
) -> Result<Heartbeat, Error> {
    let (mut task, current) = leased_to(tx, id, worker, lease)?;
    match task.state {
        TaskState::Cancelled => {
            return Ok(Heartbeat { cancel: true, lease_expires_at: current.expires_at });
        }
        TaskState::Leased => {}
        _ => return Err(Error::LeaseStale),
    }
    let expires_at = now.plus(extend).max(current.expires_at);
    tx.delete(SCHEDULE, &due_key(LEASED, current.expires_at, id))?;
    tx.put(SCHEDULE, &due_key(LEASED, expires_at, id), &Slot::Due(id))?;
    task.lease = Some(Lease { expires_at, ..current });
    task.updated_at = now;
    tx.put(TASKS, &id.to_key(), &task)?;
    Ok(Heartbeat { cancel: false, lease_expires_at: expires_at })
}

#[allow(clippy::too_many_arguments)] // one operation, each argument a distinct fact
pub(super) fn complete(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    worker: WorkerId,
    id: TaskId,
    lease: LeaseId,
    report: Report,
    settings: &Settings,
    d: Dispatch<'_>,
) -> Result<Task, Error> {
    let (mut task, current) = leased_to(tx, id, worker, lease)?;
    if task.state != TaskState::Leased {
        return Err(Error::LeaseStale);
    }
    tx.delete(SCHEDULE, &due_key(LEASED, current.expires_at, id))?;
    match report {
        Report::Succeeded { result } => {
            task.result = Some(result);
            task.error = None;
            finish(tx, &mut task, now, TaskState::Succeeded)?;
            let event = Event::new("task.completed", "complete", resource(id))
                .detail("worker", worker)
                .detail("attempt", task.attempts);
            audit::append(tx, now, origin, event)?;
        }
        Report::Failed { error, retryable } => {
            let retry = retryable && task.attempts < task.max_attempts;
            let event = Event::new("task.failed", "complete", resource(id))
                .outcome(Outcome::Failure)
                .detail("worker", worker)
                .detail("attempt", task.attempts)
                .detail("code", &error.code)
                .detail("will_retry", retry);
            audit::append(tx, now, origin, event)?;
            task.error = Some(error);
            task.updated_at = now;
            if retry {
                retry_task(tx, &mut task, now, settings, d)?;
            } else {
                finish(tx, &mut task, now, TaskState::Failed)?;
            }
        }
    }
    tx.put(TASKS, &id.to_key(), &task)?;
    Ok(task)
}

pub(super) fn retry_task(
    tx: &mut WriteTx<'_>,
    task: &mut Task,
    now: Timestamp,
    settings: &Settings,
    d: Dispatch<'_>,
) -> Result<(), Error> {
    let delay = retry_delay(task.attempts, settings.retry_backoff, settings.retry_backoff_max);
    // Audit the decision first: a zero delay may lease the task right away.
    let event = Event::new("task.requeued", "requeue", resource(task.id))
        .detail("attempt", task.attempts)
        .detail("delay_ms", delay.as_millis());
    audit::append(tx, now, &Origin::system(), event)?;
    requeue(tx, task, now, delay, d)?;
    Ok(())
}
