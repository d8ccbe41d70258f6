//! Finding records: newest first, filtered by who, what, on what, how it
//! ended and when. A search reads at most [`SCAN_LIMIT`] records per call,
//! so no query holds a read transaction for long however large the log;
//! `next_before` says where to go on.

use serde::Serialize;
use tether_base::clock::Timestamp;
use tether_store::{self as store, ReadTx};

use super::chain::{for_each_back_from, for_each_from};
use super::{Outcome, Record};

/// The most records one search reads.
pub const SCAN_LIMIT: usize = 20_000;
/// The most records one search returns.
pub const MAX_RESULTS: usize = 500;

/// What to look for. Text filters match case-insensitively anywhere in the
/// field: `actor` in the actor's id, `action` in the event type
/// (`task.created`), `resource` in `type:id` (`task:0193…`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<Outcome>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only records older than this seq (the previous page's `next_before`).
    pub before: Option<u64>,
    pub limit: usize,
}

#[derive(Debug, Serialize)]
pub struct Found {
    pub records: Vec<Record>,
    /// Pass as `before` to search on; absent once the log's start is reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
    /// How many records this search read.
    pub scanned: usize,
}

impl Query {
    fn matches(&self, record: &Record) -> bool {
        let has = |wanted: &Option<String>, field: &str| {
            wanted.as_ref().is_none_or(|w| field.to_ascii_lowercase().contains(&w.to_ascii_lowercase()))
        };
        let resource = format!("{}:{}", record.resource.kind, record.resource.id);
        let at = Timestamp::parse_rfc3339(&record.timestamp);
        has(&self.actor, &record.actor.id)
            && has(&self.action, &record.event_type)
            && has(&self.resource, &resource)
            && self.outcome.is_none_or(|o| o == record.result)
            && self.since.is_none_or(|since| at.is_some_and(|at| at >= since))
            && self.until.is_none_or(|until| at.is_some_and(|at| at <= until))
    }
}

/// The newest records matching `query`, up to `query.limit` (at most
/// [`MAX_RESULTS`]).
pub fn search(tx: &ReadTx, query: &Query) -> Result<Found, store::Error> {
    let limit = query.limit.clamp(1, MAX_RESULTS);
    let through = match query.before {
        Some(0) => return Ok(Found { records: Vec::new(), next_before: None, scanned: 0 }),
        Some(before) => before - 1,
        None => u64::MAX,
    };
    let (mut records, mut scanned, mut oldest) = (Vec::new(), 0usize, None);
    for_each_back_from(tx, through, |seq, canonical, _| {
        scanned += 1;
        oldest = Some(seq);
        // A record that does not parse is the chain's verifier's to report.
        if let Ok(record) = serde_json::from_slice::<Record>(canonical)
            && query.matches(&record)
        {
            records.push(record);
        }
        Ok(records.len() < limit && scanned < SCAN_LIMIT)
    })?;
    let next_before = oldest.filter(|seq| *seq > 0 && (records.len() == limit || scanned == SCAN_LIMIT));
    Ok(Found { records, next_before, scanned })
}

/// Up to `limit` records after seq `after` (from the start when `None`), in
/// order: the live tail's next batch.
pub fn after(tx: &ReadTx, after: Option<u64>, limit: usize) -> Result<Vec<Record>, store::Error> {
    let from = after.map_or(0, |seq| seq.saturating_add(1));
    let mut records = Vec::new();
    for_each_from(tx, from, |_, canonical, _| {
        if let Ok(record) = serde_json::from_slice::<Record>(canonical) {
            records.push(record);
        }
        Ok(records.len() < limit)
    })?;
    Ok(records)
}
