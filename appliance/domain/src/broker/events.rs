//! A task's event log: its state changes as the broker makes them, and what
//! its worker reports while it runs — progress (a percentage and a message)
//! and output as it is printed — in order, each numbered so that a client
//! that lost its stream resumes after the last number it saw (SSE's
//! `Last-Event-ID`). Messages and output are sealed like results. One
//! task's log is bounded ([`MAX_EVENTS`], [`MAX_OUTPUT_BYTES`]).

use serde::{Deserialize, Serialize};

use super::Error;
use super::task::TaskState;
use crate::vault::{Keys, Place, Sealed};
use tether_base::clock::Timestamp;
use tether_base::ids::TaskId;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by the task's id and the event's number (big-endian): one task's
/// events sort together, in order.
const EVENTS: Collection<Stored> = Collection::new(EVENTS_TABLE);
const EVENTS_TABLE: &str = "task_events";
/// Per task: the next event's number and the output bytes stored so far.
const TALLIES: Collection<Tally> = Collection::new("task_event_tallies");

/// The most events one task keeps; reports beyond are refused.
pub const MAX_EVENTS: u32 = 10_000;
/// The most output one task keeps, in all.
pub const MAX_OUTPUT_BYTES: u64 = 1 << 20;
/// The longest progress message.
pub const MAX_MESSAGE_BYTES: usize = 512;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Stored {
    State { at: Timestamp, state: TaskState, attempt: u32 },
    Progress { at: Timestamp, percent: Option<u8>, message: Option<Sealed> },
    Output { at: Timestamp, text: Sealed },
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Tally {
    next: u32,
    output_bytes: u64,
}

/// One event, opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskEvent {
    State {
        seq: u32,
        #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
        at: Timestamp,
        state: TaskState,
        attempt: u32,
    },
    Progress {
        seq: u32,
        #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
        at: Timestamp,
        #[serde(skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Output {
        seq: u32,
        #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
        at: Timestamp,
        text: String,
    },
}

impl TaskEvent {
    pub fn seq(&self) -> u32 {
        match self {
            TaskEvent::State { seq, .. } | TaskEvent::Progress { seq, .. } | TaskEvent::Output { seq, .. } => *seq,
        }
    }

    /// The event without what only a payload reader may see (a progress
    /// message, output): for roles that see metadata only. `None`: nothing
    /// is left to show.
    pub fn metadata_only(self) -> Option<TaskEvent> {
        match self {
            TaskEvent::Progress { seq, at, percent, .. } => {
                percent.map(|percent| TaskEvent::Progress { seq, at, percent: Some(percent), message: None })
            }
            TaskEvent::Output { .. } => None,
            state => Some(state),
        }
    }
}

/// What a worker reports of a running task: output printed since its
/// last report and then (any of) a percentage and a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub percent: Option<u8>,
    pub message: Option<String>,
    pub output: Option<String>,
}

fn key(id: TaskId, seq: u32) -> [u8; 20] {
    let mut key = [0; 20];
    key[..16].copy_from_slice(&id.to_key());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Where a sealed field of event `key` is bound: moved to another event,
/// it no longer opens.
fn place<'a>(key: &'a [u8; 20], field: &'static str) -> Place<'a> {
    Place::new(EVENTS_TABLE, key, field)
}

fn put(tx: &mut WriteTx<'_>, id: TaskId, tally: &mut Tally, event: &Stored) -> Result<u32, store::Error> {
    let seq = tally.next;
    tx.put(EVENTS, &key(id, seq), event)?;
    tally.next += 1;
    Ok(seq)
}

/// Records that `id` is now in `state` (its `attempt`th lease, for one
/// leased). State changes are always kept, past the bound too: a watcher
/// must learn how its task ended.
pub(super) fn state_changed(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    id: TaskId,
    state: TaskState,
    attempt: u32,
) -> Result<(), store::Error> {
    let mut tally = tx.get(TALLIES, &id.to_key())?.unwrap_or_default();
    put(tx, id, &mut tally, &Stored::State { at: now, state, attempt })?;
    tx.put(TALLIES, &id.to_key(), &tally)
}

/// Stores a worker's report; returns the number of its last event.
pub(super) fn report(
    tx: &mut WriteTx<'_>,
    keys: &Keys,
    now: Timestamp,
    id: TaskId,
    progress: Progress,
) -> Result<u32, Error> {
    let mut tally = tx.get(TALLIES, &id.to_key())?.unwrap_or_default();
    let adds =
        u32::from(progress.percent.is_some() || progress.message.is_some()) + u32::from(progress.output.is_some());
    if tally.next.saturating_add(adds) > MAX_EVENTS {
        return Err(Error::EventsFull(format!("a task keeps at most {MAX_EVENTS} events")));
    }
    let output_bytes = progress.output.as_ref().map_or(0, |o| o.len() as u64);
    if tally.output_bytes + output_bytes > MAX_OUTPUT_BYTES {
        return Err(Error::EventsFull(format!("a task keeps at most {MAX_OUTPUT_BYTES} bytes of output")));
    }
    // Output first: a worker sends what was printed before the progress
    // line that ends its batch.
    let mut last = tally.next.saturating_sub(1);
    if let Some(output) = &progress.output {
        let text = keys.encrypt(place(&key(id, tally.next), "output"), output.as_bytes())?;
        last = put(tx, id, &mut tally, &Stored::Output { at: now, text })?;
        tally.output_bytes += output_bytes;
    }
    if progress.percent.is_some() || progress.message.is_some() {
        let message = match &progress.message {
            Some(m) => Some(keys.encrypt(place(&key(id, tally.next), "progress"), m.as_bytes())?),
            None => None,
        };
        last = put(tx, id, &mut tally, &Stored::Progress { at: now, percent: progress.percent, message })?;
    }
    tx.put(TALLIES, &id.to_key(), &tally)?;
    Ok(last)
}

/// The events of `id` after number `after` (from the first without), at
/// most `limit`, opened.
pub(super) fn list(
    tx: &ReadTx,
    keys: &Keys,
    id: TaskId,
    after: Option<u32>,
    limit: usize,
) -> Result<Vec<TaskEvent>, Error> {
    let start = key(id, after.map_or(0, |a| a.saturating_add(1)));
    let mut stored = Vec::new();
    tx.scan(EVENTS, Some(&start), Order::Ascending, |k, event: Stored| {
        if k.len() != 20 || k[..16] != id.to_key() {
            return Ok(false);
        }
        let seq = u32::from_be_bytes([k[16], k[17], k[18], k[19]]);
        if after.is_none_or(|a| seq > a) {
            stored.push((seq, event));
        }
        Ok(stored.len() < limit)
    })?;
    let open = |seq: u32, field: &'static str, sealed: &Sealed| -> Result<String, Error> {
        let bytes = keys.decrypt(place(&key(id, seq), field), sealed)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    stored
        .into_iter()
        .map(|(seq, event)| {
            Ok(match event {
                Stored::State { at, state, attempt } => TaskEvent::State { seq, at, state, attempt },
                Stored::Progress { at, percent, message } => TaskEvent::Progress {
                    seq,
                    at,
                    percent,
                    message: message.as_ref().map(|m| open(seq, "progress", m)).transpose()?,
                },
                Stored::Output { at, text } => TaskEvent::Output { seq, at, text: open(seq, "output", &text)? },
            })
        })
        .collect()
}

/// Seals again under the newest data key what an older one sealed, in the
/// events after `after` (an event's key; from the first without), at most
/// `limit` of them looked at. Returns how many changed and where to go on
/// (`None`: done).
pub(super) fn refresh_seals(
    tx: &mut WriteTx<'_>,
    keys: &Keys,
    after: Option<[u8; 20]>,
    limit: usize,
) -> Result<(usize, Option<[u8; 20]>), crate::vault::Error> {
    let mut batch = Vec::new();
    tx.scan(EVENTS, after.as_ref().map(|k| &k[..]), Order::Ascending, |k, event: Stored| {
        if let Ok(k) = <[u8; 20]>::try_from(k)
            && Some(k) != after
        {
            batch.push((k, event));
        }
        Ok(batch.len() < limit)
    })?;
    let next = (batch.len() == limit).then(|| batch[batch.len() - 1].0);
    let mut moved = 0;
    for (k, event) in batch {
        let fresh = match &event {
            Stored::State { .. } => None,
            Stored::Progress { at, percent, message: Some(m) } => keys
                .refresh(place(&k, "progress"), m)?
                .map(|m| Stored::Progress { at: *at, percent: *percent, message: Some(m) }),
            Stored::Progress { message: None, .. } => None,
            Stored::Output { at, text } => {
                keys.refresh(place(&k, "output"), text)?.map(|text| Stored::Output { at: *at, text })
            }
        };
        if let Some(fresh) = fresh {
            tx.put(EVENTS, &k, &fresh)?;
            moved += 1;
        }
    }
    Ok((moved, next))
}
