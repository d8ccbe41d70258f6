//! Retention: records older than the retention period are written to a
//! signed segment file (a sealed export of their range, verifiable offline
//! like any export) and then pruned from the store. The chain is anchored
//! across the cut: the store keeps the last archived record's seq and hash,
//! which the first kept record links to, and `verify --file` checks that
//! consecutive segments (and the current export) link the same way.
//!
//! Nothing is pruned that a SIEM sink has not yet delivered, and the newest
//! record always stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::signing::SigningError;
use crate::audit::{Event, Origin, Record, Resource};
use crate::audit::{Head, chain};
use crate::vault::Keys;
use tether_base::clock::Timestamp;
use tether_base::files::IoError;
use tether_store::Store;

/// At most this many records go into one segment.
const SEGMENT_RECORDS: u64 = 100_000;

/// One archived segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub first: u64,
    pub last: u64,
    pub file: PathBuf,
}

/// The range of records older than `cutoff` that may go: from the first
/// kept record, not past the newest (which stays) nor past `deliverable`
/// (what every sink has delivered).
fn archivable(
    store: &Store,
    cutoff: Timestamp,
    deliverable: Option<u64>,
) -> Result<Option<(u64, Head)>, tether_store::Error> {
    store.read(|tx| {
        let Some(head) = chain::head(tx)? else { return Ok(None) };
        let limit = head.seq.saturating_sub(1).min(deliverable.unwrap_or(u64::MAX));
        let from = chain::anchor(tx)?.map_or(0, |a| a.seq + 1);
        let cutoff = cutoff.to_rfc3339();
        let mut range: Option<(u64, Head)> = None;
        chain::for_each_from(tx, from, |seq, canonical, hash| {
            if seq > limit || seq >= from + SEGMENT_RECORDS {
                return Ok(false);
            }
            let record: Record =
                serde_json::from_slice(canonical).map_err(|e| tether_store::Error::Storage(e.into()))?;
            // RFC 3339 in UTC with fixed width: text order is time order.
            if record.timestamp >= cutoff {
                return Ok(false);
            }
            range = Some((range.map_or(seq, |(first, _)| first), Head { seq, hash: *hash }));
            Ok(true)
        })?;
        Ok(range)
    })
}

/// Archives and prunes, as records age past `retention`, for as long as the
/// appliance runs (not while sealed: segments are signed).
pub async fn run(
    store: Store,
    vault: std::sync::Arc<crate::vault::Vault>,
    clock: tether_base::clock::SharedClock,
    retention: Duration,
    dir: PathBuf,
) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(keys) = vault.keys() else { continue };
        if store.is_degraded() {
            continue;
        }
        let deliverable = match store.read(crate::audit::sinks::delivered_by_all) {
            Ok(None) => None,
            Ok(Some(Some(through))) => Some(through),
            Ok(Some(None)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "audit retention: cannot read the sinks' cursors");
                continue;
            }
        };
        match archive_once(&store, &keys, clock.now(), retention, &dir, deliverable).await {
            Ok(Some(s)) => {
                tracing::info!(first = s.first, last = s.last, file = %s.file.display(), "archived and pruned old audit records")
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit retention could not archive; retrying"),
        }
    }
}

/// Archives what is older than `retention` into `dir`, then prunes it.
/// Returns the segment written, if any.
pub async fn archive_once(
    store: &Store,
    keys: &Keys,
    now: Timestamp,
    retention: Duration,
    dir: &Path,
    deliverable: Option<u64>,
) -> Result<Option<Segment>, SigningError> {
    let cutoff = now.minus(retention);
    let Some((first, last)) = archivable(store, cutoff, deliverable)? else { return Ok(None) };
    super::signing::ensure(store, keys).await?;
    let mut bytes = Vec::new();
    store.read(|tx| super::offline::export_range_sealed(tx, keys, first, last.seq, now, &mut bytes))?;
    let file = dir.join(format!("audit-{first:020}-{:020}.jsonl", last.seq));
    std::fs::create_dir_all(dir).map_err(|e| tether_store::Error::from(IoError::on("create", dir)(e)))?;
    tether_base::files::write_with_mode(&file, &bytes, 0o600).map_err(tether_store::Error::from)?;
    let digest = hex::encode(tether_base::secret::sha256(&bytes));
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    store
        .write(move |tx| {
            chain::prune_through(tx, first, last)?;
            let event = Event::new("audit.archived", "archive", Resource::new("audit_segment", &name))
                .detail("first_seq", first)
                .detail("last_seq", last.seq)
                .detail("last_hash", hex::encode(last.hash))
                .detail("sha256", &digest);
            crate::audit::append(tx, now, &Origin::system(), event)
        })
        .await?;
    Ok(Some(Segment { first, last: last.seq, file }))
}
