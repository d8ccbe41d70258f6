//! Appending to, verifying and exporting the hash chain.

use std::io::Write;

use serde::{Deserialize, Serialize};
use tether_base::crypto::primitives::digest::{SHA256, digest};
use tether_base::files::IoError;

use super::{Event, Metadata, Origin, Record};
use tether_base::bounded;
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, Order, ReadTx, WriteTx};

/// A record as stored: the exact bytes that were hashed, and the hash.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    canonical: Vec<u8>,
    hash: [u8; 32],
}

/// The newest record's sequence number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// Records under `[RECORD][seq]`, and the head under `[HEAD]`: one table, and
/// the head sorts right after the newest record, so appending dirties the
/// same page for both (each table a commit touches costs it time).
/// The audit log's table (tests refuse writes to it to show failing closed).
pub const LOG_TABLE: &str = "audit_log";
const LOG: Collection<Entry> = Collection::new(LOG_TABLE);
const RECORD: u8 = 0;
const HEAD_KEY: &[u8] = &[1];
/// Where the chain starts once older records are archived: the last
/// archived record's seq and hash, which the first kept record links to.
const ANCHOR: Collection<Head> = Collection::new("audit_anchor");
const ANCHOR_KEY: &[u8] = b"anchor";
pub(crate) const GENESIS_PREV: [u8; 32] = [0; 32];

#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    Record(Stored),
    Head(Head),
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [RECORD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn head_of(entry: Option<Entry>) -> Option<Head> {
    match entry {
        Some(Entry::Head(h)) => Some(h),
        _ => None,
    }
}

pub(crate) fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(32 + canonical.len());
    input.extend_from_slice(prev);
    input.extend_from_slice(canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, &input).as_ref());
    out
}

/// Appends `event` to the chain inside the caller's transaction and returns
/// its sequence number.
pub fn append(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, event: Event) -> Result<u64, store::Error> {
    let head = head_of(tx.get(LOG, HEAD_KEY)?);
    let (seq, prev) = match head {
        Some(h) => (h.seq + 1, h.hash),
        None => (0, GENESIS_PREV),
    };
    // Whatever came from outside (a path, a name, a user agent) is kept
    // only up to `bounded::STORED` bytes: the input does not decide the
    // record's size.
    let mut actor = origin.actor.clone();
    actor.id = bounded::stored(actor.id);
    let mut resource = event.resource;
    resource.id = bounded::stored(resource.id);
    let details = event.details.into_iter().map(|(k, v)| (bounded::stored(k), bounded::stored(v))).collect();
    let record = Record {
        seq,
        timestamp: now.to_rfc3339(),
        event_type: event.event_type.into(),
        actor,
        resource,
        action: event.action.into(),
        result: event.outcome,
        metadata: Metadata {
            source_ip: origin.source_ip.map(|ip| ip.to_string()),
            user_agent: origin.user_agent.clone().map(bounded::stored),
            details,
        },
        prev_hash: hex::encode(prev),
    };
    let canonical = serde_json::to_vec(&record).map_err(|e| store::Error::Storage(e.into()))?;
    let hash = chain_hash(&prev, &canonical);
    tx.put(LOG, &record_key(seq), &Entry::Record(Stored { canonical, hash }))?;
    tx.put(LOG, HEAD_KEY, &Entry::Head(Head { seq, hash }))?;
    Ok(seq)
}

/// What a successful verification saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: Option<Head>,
}

/// The first break found in the chain.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("audit chain broken at seq {seq}: {reason}")]
    ChainBroken { seq: u64, reason: &'static str },
    #[error("audit chain head names seq {head_seq} but the log ends at {last:?}")]
    HeadMismatch { head_seq: u64, last: Option<u64> },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The newest record's seq and hash, as the stored head says.
pub fn head(tx: &ReadTx) -> Result<Option<Head>, store::Error> {
    Ok(head_of(tx.get(LOG, HEAD_KEY)?))
}

/// When the newest record was written, as it says.
pub fn newest_time(tx: &ReadTx) -> Result<Option<Timestamp>, store::Error> {
    let Some(head) = head(tx)? else { return Ok(None) };
    time_of(tx, head.seq)
}

/// When record `seq` was written, as it says (`None` if it is not kept).
pub fn time_of(tx: &ReadTx, seq: u64) -> Result<Option<Timestamp>, store::Error> {
    Ok(record_at(tx, seq)?.and_then(|r| Timestamp::parse_rfc3339(&r.timestamp)))
}

/// Record `seq` (`None` if it is not kept, or does not parse).
pub fn record_at(tx: &ReadTx, seq: u64) -> Result<Option<Record>, store::Error> {
    let Some(Entry::Record(stored)) = tx.get(LOG, &record_key(seq))? else { return Ok(None) };
    Ok(serde_json::from_slice(&stored.canonical).ok())
}

/// Walks the whole chain and checks every link and the head.
pub fn verify(tx: &ReadTx) -> Result<Verified, VerifyError> {
    verify_from(tx, None)
}

/// Checks the links after `verified` — a head an earlier walk verified,
/// whose record must still hash as it did — up to the head; from the
/// chain's start without one (or once it was archived past). `records`
/// counts the records walked.
pub fn verify_from(tx: &ReadTx, verified: Option<Head>) -> Result<Verified, VerifyError> {
    let anchor = tx.get(ANCHOR, ANCHOR_KEY)?;
    let (mut expected_seq, mut prev) = match (verified, anchor) {
        (Some(v), a) if a.is_none_or(|a| v.seq > a.seq) => {
            let still = matches!(tx.get(LOG, &record_key(v.seq))?, Some(Entry::Record(s)) if s.hash == v.hash);
            if !still {
                return Err(VerifyError::ChainBroken { seq: v.seq, reason: "a record verified earlier has changed" });
            }
            (v.seq + 1, v.hash)
        }
        (_, Some(anchor)) => (anchor.seq + 1, anchor.hash),
        (_, None) => (0, GENESIS_PREV),
    };
    let first = expected_seq;
    let mut broken: Option<VerifyError> = None;
    tx.scan(LOG, Some(&record_key(expected_seq)), Order::Ascending, |key, entry| {
        let Entry::Record(stored) = entry else { return Ok(false) };
        let seq = key.get(1..).and_then(|k| k.try_into().ok()).map(u64::from_be_bytes).unwrap_or(u64::MAX);
        let fail = |reason| VerifyError::ChainBroken { seq: expected_seq, reason };
        if seq != expected_seq {
            broken = Some(fail("a record is missing or out of order"));
            return Ok(false);
        }
        let record: Record = match serde_json::from_slice(&stored.canonical) {
            Ok(r) => r,
            Err(_) => {
                broken = Some(fail("the record does not parse"));
                return Ok(false);
            }
        };
        if record.seq != seq {
            broken = Some(fail("the record's seq does not match its position"));
        } else if record.prev_hash != hex::encode(prev) {
            broken = Some(fail("prev_hash does not match the previous record"));
        } else if chain_hash(&prev, &stored.canonical) != stored.hash {
            broken = Some(fail("the record's hash does not match its contents"));
        }
        if broken.is_some() {
            return Ok(false);
        }
        prev = stored.hash;
        expected_seq += 1;
        Ok(true)
    })?;
    if let Some(e) = broken {
        return Err(e);
    }
    let last = match verified {
        Some(v) if first == v.seq + 1 => Some(expected_seq - 1),
        _ => (expected_seq > first).then(|| expected_seq - 1),
    };
    let head = head_of(tx.get(LOG, HEAD_KEY)?);
    match (head, last) {
        (None, None) => {}
        (Some(h), Some(l)) if h.seq == l && h.hash == prev => {}
        (Some(h), _) => {
            return Err(VerifyError::HeadMismatch { head_seq: h.seq, last });
        }
        (None, Some(_)) => {
            return Err(VerifyError::ChainBroken { seq: 0, reason: "records exist but no head" });
        }
    }
    Ok(Verified { records: expected_seq - first, head })
}

/// Where the kept chain starts, if older records were archived.
pub fn anchor(tx: &ReadTx) -> Result<Option<Head>, store::Error> {
    tx.get(ANCHOR, ANCHOR_KEY)
}

/// Removes records `..=last` (archived) and anchors the chain at `last`.
pub(crate) fn prune_through(tx: &mut WriteTx<'_>, first: u64, last: Head) -> Result<(), store::Error> {
    for seq in first..=last.seq {
        tx.delete(LOG, &record_key(seq))?;
    }
    tx.put(ANCHOR, ANCHOR_KEY, &last)
}

/// Hands each record from seq `from` on (its seq, canonical bytes and
/// hash) to `visit`, in order, until it returns `false`.
pub(crate) fn for_each_from(
    tx: &ReadTx,
    from: u64,
    visit: impl FnMut(u64, &[u8], &[u8; 32]) -> Result<bool, store::Error>,
) -> Result<(), store::Error> {
    scan_records(tx, from, Order::Ascending, visit)
}

/// As [`for_each_from`], newest first, from seq `through` down.
pub(crate) fn for_each_back_from(
    tx: &ReadTx,
    through: u64,
    visit: impl FnMut(u64, &[u8], &[u8; 32]) -> Result<bool, store::Error>,
) -> Result<(), store::Error> {
    scan_records(tx, through, Order::Descending, visit)
}

fn scan_records(
    tx: &ReadTx,
    start: u64,
    order: Order,
    mut visit: impl FnMut(u64, &[u8], &[u8; 32]) -> Result<bool, store::Error>,
) -> Result<(), store::Error> {
    tx.scan(LOG, Some(&record_key(start)), order, |key, entry| {
        // Records sort before the head: past the last record, the scan is done.
        let Entry::Record(stored) = entry else { return Ok(false) };
        let seq = key.get(1..).and_then(|k| k.try_into().ok()).map(u64::from_be_bytes).unwrap_or(u64::MAX);
        visit(seq, &stored.canonical, &stored.hash)
    })
}

/// Writes records `from..` as JSON lines (the canonical record plus its
/// hash). Returns how many were written and the last one's seq and hash.
pub fn export_jsonl(tx: &ReadTx, from: u64, out: &mut impl Write) -> Result<(u64, Option<Head>), store::Error> {
    export_range(tx, from, u64::MAX, out)
}

/// [`export_jsonl`] for records `from..=through`.
pub(crate) fn export_range(
    tx: &ReadTx,
    from: u64,
    through: u64,
    out: &mut impl Write,
) -> Result<(u64, Option<Head>), store::Error> {
    let mut written = 0u64;
    let mut last = None;
    let mut io_error = None;
    for_each_from(tx, from, |seq, canonical, hash| {
        if seq > through {
            return Ok(false);
        }
        if let Err(e) = out.write_all(&with_hash(canonical, hash)) {
            io_error = Some(e);
            return Ok(false);
        }
        written += 1;
        last = Some(Head { seq, hash: *hash });
        Ok(true)
    })?;
    if let Some(e) = io_error {
        return Err(IoError::new("write the audit export", e).into());
    }
    Ok((written, last))
}

/// The canonical JSON object with `"hash"` appended as its last field, and a newline.
pub(super) fn with_hash(canonical: &[u8], hash: &[u8; 32]) -> Vec<u8> {
    let body = canonical.strip_suffix(b"}").unwrap_or(canonical);
    let mut line = Vec::with_capacity(canonical.len() + 80);
    line.extend_from_slice(body);
    line.extend_from_slice(format!(",\"hash\":\"{}\"}}\n", hex::encode(hash)).as_bytes());
    line
}

#[cfg(test)]
pub(super) mod testing {
    //! Lets tests corrupt the chain the way an attacker with disk access would.
    use super::*;

    pub fn tamper(tx: &mut WriteTx<'_>, seq: u64, edit: impl FnOnce(&mut Vec<u8>)) -> Result<(), store::Error> {
        let key = record_key(seq);
        if let Some(Entry::Record(mut stored)) = tx.get(LOG, &key)? {
            edit(&mut stored.canonical);
            tx.put(LOG, &key, &Entry::Record(stored))?;
        }
        Ok(())
    }

    pub fn remove(tx: &mut WriteTx<'_>, seq: u64) -> Result<(), store::Error> {
        tx.delete(LOG, &record_key(seq)).map(|_| ())
    }
}
