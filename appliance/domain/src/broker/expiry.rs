//! Leases that run out and backoffs that end: the reaper's store
//! operations, and releasing a revoked worker's leases. As in [`super::ops`],
//! each runs inside one write transaction, checks before its first write and
//! appends the audit records for what it changes.

use std::time::Duration;

use super::ops::{
    DELAYED, Dispatch, LEASED, SCHEDULE, Slot, TASKS, due_key, finish, make_ready, resource, retry_task, time_of,
};
use super::task::seal_error;
use super::{Error, Settings, Task, TaskError, TaskState};
use crate::audit::{self, Event, Origin, Outcome};
use tether_base::clock::Timestamp;
use tether_base::ids::{TaskId, WorkerId};
use tether_store::{self as store, Order, ReadTx, WriteTx};

/// Moves every lease that would run out within `term` to `now + term`.
pub(super) fn extend_leases(tx: &mut WriteTx<'_>, now: Timestamp, term: Duration) -> Result<usize, Error> {
    let until = now.plus(term);
    let short = due_keys(tx, LEASED, until)?;
    for (key, id) in &short {
        tx.delete(SCHEDULE, key)?;
        tx.put(SCHEDULE, &due_key(LEASED, until, *id), &Slot::Due(*id))?;
        if let Some(mut task) = tx.get(TASKS, &id.to_key())?
            && let Some(lease) = &mut task.lease
        {
            lease.expires_at = until;
            tx.put(TASKS, &id.to_key(), &task)?;
        }
    }
    Ok(short.len())
}

/// Whether [`reap`] has anything to do; a cheap read so idle ticks never write.
pub(super) fn anything_due(tx: &ReadTx, now: Timestamp) -> Result<bool, store::Error> {
    let mut due = false;
    for space in [LEASED, DELAYED] {
        tx.scan(SCHEDULE, Some(&[space]), Order::Ascending, |key, _: Slot| {
            due |= key.first() == Some(&space) && time_of(key) <= now;
            Ok(false)
        })?;
    }
    Ok(due)
}

/// The entries of `space` (LEASED or DELAYED) whose time has come.
fn due_keys(tx: &mut WriteTx<'_>, space: u8, now: Timestamp) -> Result<Vec<(Vec<u8>, TaskId)>, store::Error> {
    let mut due = Vec::new();
    tx.scan(SCHEDULE, Some(&[space]), Order::Ascending, |key, slot| {
        if key.first() != Some(&space) || time_of(key) > now {
            return Ok(false);
        }
        if let Slot::Due(id) = slot {
            due.push((key.to_vec(), id));
        }
        Ok(true)
    })?;
    Ok(due)
}

/// Why a lease ended before its worker reported.
#[derive(Debug, Clone, Copy)]
enum LeaseEnd {
    /// The worker stopped heartbeating.
    Expired,
    /// The worker's enrollment was revoked.
    WorkerRevoked,
}

impl LeaseEnd {
    fn code(self) -> &'static str {
        match self {
            LeaseEnd::Expired => "lease_expired",
            LeaseEnd::WorkerRevoked => "worker_revoked",
        }
    }

    fn event(self) -> &'static str {
        match self {
            LeaseEnd::Expired => "task.lease_expired",
            LeaseEnd::WorkerRevoked => "task.lease_revoked",
        }
    }

    fn error(self) -> TaskError {
        let message = match self {
            LeaseEnd::Expired => "the worker holding the lease stopped reporting",
            LeaseEnd::WorkerRevoked => "the worker holding the lease was revoked",
        };
        TaskError { code: self.code().into(), message: message.into() }
    }
}

/// Ends the leases under the schedule `keys`: each task goes back in line,
/// or fails when it has no attempts left. Returns the tasks it moved.
fn end_leases(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    keys: Vec<(Vec<u8>, TaskId)>,
    why: LeaseEnd,
    settings: &Settings,
    d: Dispatch<'_>,
) -> Result<Vec<Task>, Error> {
    // Sealed before the first write, as every operation must fail early.
    let mut reasons = Vec::with_capacity(keys.len());
    for (_, id) in &keys {
        reasons.push(seal_error(d.keys, *id, why.error())?);
    }
    let mut moved = Vec::new();
    for ((key, id), reason) in keys.into_iter().zip(reasons) {
        tx.delete(SCHEDULE, &key)?;
        let Some(mut task) = tx.get(TASKS, &id.to_key())? else {
            continue;
        };
        if task.state != TaskState::Leased {
            continue;
        }
        let worker = task.lease.as_ref().map(|l| l.worker.to_string()).unwrap_or_default();
        let event = Event::new(why.event(), "expire", resource(id))
            .outcome(Outcome::Failure)
            .detail("worker", &worker)
            .detail("attempt", task.attempts);
        audit::append(tx, now, &Origin::system(), event)?;
        task.error = Some(reason);
        task.updated_at = now;
        if task.attempts < task.max_attempts {
            retry_task(tx, &mut task, now, settings, d)?;
        } else {
            finish(tx, &mut task, now, TaskState::Failed)?;
            let event = Event::new("task.failed", "expire", resource(id))
                .outcome(Outcome::Failure)
                .detail("attempt", task.attempts)
                .detail("code", why.code())
                .detail("will_retry", false);
            audit::append(tx, now, &Origin::system(), event)?;
        }
        tx.put(TASKS, &id.to_key(), &task)?;
        moved.push(task);
    }
    Ok(moved)
}

/// Ends every lease `worker` holds (it has been revoked).
pub(super) fn release_worker(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    worker: WorkerId,
    settings: &Settings,
    d: Dispatch<'_>,
) -> Result<Vec<Task>, Error> {
    let mut held = Vec::new();
    for (key, id) in due_keys(tx, LEASED, Timestamp::from_millis(u64::MAX))? {
        let task = tx.get(TASKS, &id.to_key())?;
        if task.and_then(|t| t.lease).is_some_and(|lease| lease.worker == worker) {
            held.push((key, id));
        }
    }
    end_leases(tx, now, held, LeaseEnd::WorkerRevoked, settings, d)
}

/// Expires overdue leases (requeue or fail) and releases finished backoffs.
/// Returns the tasks moved and how many of them had a lease expire.
pub(super) fn reap(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    settings: &Settings,
    d: Dispatch<'_>,
) -> Result<(Vec<Task>, usize), Error> {
    let expired = due_keys(tx, LEASED, now)?;
    let released = due_keys(tx, DELAYED, now)?;
    let mut moved = end_leases(tx, now, expired, LeaseEnd::Expired, settings, d)?;
    let expired = moved.len();
    for (key, id) in released {
        tx.delete(SCHEDULE, &key)?;
        let Some(mut task) = tx.get(TASKS, &id.to_key())? else {
            continue;
        };
        if task.state != TaskState::Queued || task.not_before.is_none() {
            continue;
        }
        make_ready(tx, now, &mut task, d)?;
        tx.put(TASKS, &id.to_key(), &task)?;
        moved.push(task);
    }
    Ok((moved, expired))
}
