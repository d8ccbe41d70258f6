//! Tasks as the broker core stored them, before the vault: input, result
//! and error message in plaintext, idempotency digests unkeyed. The upgrade
//! (`crate::upgrade`) seals them where they lie, a batch per transaction.

use std::time::Duration;

use serde::Deserialize;

use super::ops::{IDEMPOTENCY, Idempotency, IdempotencyEntry, TASKS, idempotency};
use super::task::{TABLE, place, seal_error};
use super::{Error, Lease, NewTask, Task, TaskError, TaskState};
use crate::vault::Keys;
use tether_base::clock::Timestamp;
use tether_base::ids::{LeaseId, TaskId, WorkerId};
use tether_store::{Collection, Order, ReadTx, WriteTx};

/// The same table as [`TASKS`], read with the broker core's record layout.
const PLAINTEXT_TASKS: Collection<PlaintextTask> = Collection::new(TABLE);

/// The broker core's task record, field for field (postcard is positional).
#[derive(Deserialize)]
struct PlaintextTask {
    id: TaskId,
    kind: String,
    input: Vec<u8>,
    labels: Vec<String>,
    priority: u8,
    state: TaskState,
    attempts: u32,
    max_attempts: u32,
    timeout: Duration,
    lease: Option<PlaintextLease>,
    result: Option<Vec<u8>>,
    error: Option<TaskError>,
    created_by: String,
    created_at: Timestamp,
    updated_at: Timestamp,
    finished_at: Option<Timestamp>,
    not_before: Option<Timestamp>,
    idempotency_key: Option<String>,
    queue_key: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct PlaintextLease {
    worker: WorkerId,
    id: LeaseId,
    expires_at: Timestamp,
}

/// A batch sealed by [`seal_plaintext_tasks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedBatch {
    pub tasks: usize,
    /// The last task sealed: the next batch starts after it.
    pub last: TaskId,
}

/// Seals up to `limit` plaintext tasks after `after` (every task after it
/// must still be plaintext) and keys their idempotency digests. `None` when
/// no task is left.
pub fn seal_plaintext_tasks(
    tx: &mut WriteTx<'_>,
    keys: &Keys,
    after: Option<TaskId>,
    limit: usize,
) -> Result<Option<SealedBatch>, Error> {
    let mut batch = Vec::with_capacity(limit);
    // The scan's start is inclusive and `after` is sealed already (it would
    // not decode as plaintext): start at the least key above it, its key
    // with a zero byte appended.
    let start = after.map(|id| [&id.to_key()[..], &[0]].concat());
    tx.scan(PLAINTEXT_TASKS, start.as_deref(), Order::Ascending, |_, task: PlaintextTask| {
        batch.push(task);
        Ok(batch.len() < limit)
    })?;
    let Some(last) = batch.last().map(|t| t.id) else {
        return Ok(None);
    };
    let mut sealed = Vec::with_capacity(batch.len());
    for plain in batch {
        sealed.push(seal(keys, plain)?);
    }
    let tasks = sealed.len();
    for (task, keyed) in sealed {
        if let Some((slot, request)) = keyed {
            tx.put(IDEMPOTENCY, &slot, &IdempotencyEntry { task: task.id, request })?;
        }
        tx.put(TASKS, &task.id.to_key(), &task)?;
    }
    Ok(Some(SealedBatch { tasks, last }))
}

/// The task in today's layout, and its idempotency digest keyed.
fn seal(keys: &Keys, plain: PlaintextTask) -> Result<(Task, Option<Idempotency>), Error> {
    let key = plain.id.to_key();
    let keyed = plain.idempotency_key.as_deref().map(|idempotency_key| {
        let request = NewTask {
            kind: plain.kind.clone(),
            input: plain.input.clone(),
            labels: plain.labels.clone(),
            secrets: Vec::new(),
            priority: plain.priority,
            max_attempts: plain.max_attempts,
            timeout: plain.timeout,
        };
        idempotency(keys, &plain.created_by, idempotency_key, &request)
    });
    let input = zeroize::Zeroizing::new(plain.input);
    let task = Task {
        id: plain.id,
        kind: plain.kind,
        input: keys.encrypt(place(&key, "input"), &input)?,
        labels: plain.labels,
        secrets: Vec::new(),
        priority: plain.priority,
        state: plain.state,
        attempts: plain.attempts,
        max_attempts: plain.max_attempts,
        timeout: plain.timeout,
        lease: plain.lease.map(|l| Lease { worker: l.worker, id: l.id, expires_at: l.expires_at, secrets: Vec::new() }),
        result: plain.result.map(|r| keys.encrypt(place(&key, "result"), &zeroize::Zeroizing::new(r))).transpose()?,
        error: plain.error.map(|e| seal_error(keys, plain.id, e)).transpose()?,
        created_by: plain.created_by,
        created_at: plain.created_at,
        updated_at: plain.updated_at,
        finished_at: plain.finished_at,
        not_before: plain.not_before,
        idempotency_key: plain.idempotency_key,
        queue_key: plain.queue_key,
    };
    Ok((task, keyed))
}

/// How many tasks the store holds.
pub fn count_tasks(tx: &ReadTx) -> Result<u64, tether_store::Error> {
    tx.count(TASKS)
}
