//! Usage per day, owner, key and model: what `GET /api/v1/llm/usage`
//! reports. Counted in the same transaction as each request's audit record,
//! from the model server's own token counts.

use serde::{Deserialize, Serialize};

use super::wire::Usage;
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// Keyed by `day \0 owner \0 key id \0 model` (days sort first).
const USAGE: Collection<Tally> = Collection::new("llm_usage");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub requests: u64,
    /// Requests that did not get an answer (refused, failed, cut off).
    pub failed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub owner: String,
    pub key_id: String,
    pub model: String,
    #[serde(flatten)]
    pub tally: Tally,
}

fn day_of(at: Timestamp) -> String {
    let t = at.to_offset_date_time();
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// One request, as counted.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub owner: &'a str,
    pub key_id: &'a str,
    pub model: &'a str,
    pub answered: bool,
    pub usage: Usage,
}

/// Counts one request.
pub fn count(tx: &mut WriteTx<'_>, at: Timestamp, request: Request<'_>) -> Result<(), store::Error> {
    let key = [day_of(at).as_str(), request.owner, request.key_id, request.model].join("\0");
    let mut tally = tx.get(USAGE, key.as_bytes())?.unwrap_or_default();
    tally.requests += 1;
    tally.failed += u64::from(!request.answered);
    tally.prompt_tokens += request.usage.prompt_tokens;
    tally.completion_tokens += request.usage.completion_tokens;
    tx.put(USAGE, key.as_bytes(), &tally)
}

/// The rows from `from` to `to` (days, inclusive), only `owner`'s when given.
pub fn report(tx: &ReadTx, from: &str, to: &str, owner: Option<&str>) -> Result<Vec<UsageRow>, store::Error> {
    let mut rows = Vec::new();
    tx.scan(USAGE, Some(from.as_bytes()), Order::Ascending, |key, tally: Tally| {
        let text = String::from_utf8_lossy(key);
        let mut parts = text.split('\0');
        let (Some(day), Some(who), Some(key_id), Some(model)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(true);
        };
        if day > to {
            return Ok(false);
        }
        if owner.is_none_or(|o| o == who) {
            rows.push(UsageRow {
                day: day.into(),
                owner: who.into(),
                key_id: key_id.into(),
                model: model.into(),
                tally,
            });
        }
        Ok(true)
    })?;
    Ok(rows)
}
