//! Tasks' sealed fields brought under the newest data key after a
//! rotation, in batches (see `api::app::reseal`).

use super::ops::TASKS;
use super::{Error, Task};
use crate::vault::Keys;
use tether_base::ids::TaskId;
use tether_store::{self as store, Order, ReadTx, WriteTx};

/// Up to `limit` tasks after `after` (in id order), the ids of those a key
/// older than `current` sealed, and the last id looked at (`None` at the end).
pub(super) fn stale_seals(
    tx: &ReadTx,
    after: Option<TaskId>,
    current: u32,
    limit: usize,
) -> Result<(Vec<TaskId>, Option<TaskId>), store::Error> {
    let (mut stale, mut seen, mut last) = (Vec::new(), 0usize, None);
    let start = after.map(TaskId::to_key);
    tx.scan(TASKS, start.as_ref().map(|k| &k[..]), Order::Ascending, |_, task: Task| {
        if Some(task.id) == after {
            return Ok(true);
        }
        if task.sealed_before(current) {
            stale.push(task.id);
        }
        seen += 1;
        last = Some(task.id);
        Ok(seen < limit)
    })?;
    Ok((stale, if seen < limit { None } else { last }))
}

/// Seals again under the current key the fields of `ids` an older key
/// sealed. Every value is sealed before the first write.
pub(super) fn refresh_seals(tx: &mut WriteTx<'_>, keys: &Keys, ids: &[TaskId]) -> Result<usize, Error> {
    let mut refreshed = Vec::new();
    for id in ids {
        if let Some(mut task) = tx.get(TASKS, &id.to_key())?
            && task.refresh_seals(keys)?
        {
            refreshed.push(task);
        }
    }
    for task in &refreshed {
        tx.put(TASKS, &task.id.to_key(), task)?;
    }
    Ok(refreshed.len())
}
