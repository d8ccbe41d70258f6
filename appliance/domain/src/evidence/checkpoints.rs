//! Signed checkpoints in the chain: a record naming an earlier record's
//! seq and hash, signed with the audit key, every [`EVERY_RECORDS`] records
//! or every interval (whichever comes first) while anything was written.
//! A checkpoint forwarded to a SIEM pins the chain up to it: the log
//! cannot later be rewritten or cut back past it unnoticed.

use std::sync::Arc;
use std::time::Duration;

use super::signing::{self, Purpose, SigningError};
use crate::audit::{Event, Head, Origin, Record, Resource};
use crate::vault::Vault;
use tether_base::clock::{SharedClock, Timestamp};
use tether_store::{self as store, Collection, ReadTx, Store};

pub const EVENT: &str = "audit.checkpoint";
/// A checkpoint at least this often, counted in records.
pub const EVERY_RECORDS: u64 = 1000;
/// How often the writer looks whether one is due.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The newest checkpoint written: what it covers and where it is.
const NEWEST: Collection<Written> = Collection::new("audit_checkpoint_newest");
const NEWEST_KEY: &[u8] = b"newest";

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Written {
    covers: u64,
    /// The checkpoint record's own seq.
    seq: u64,
}

/// When the oldest record no checkpoint covers was written; `None` when
/// every record is covered (or none are kept). A checkpoint covers every
/// record up to the one it names.
pub fn oldest_unchecked(tx: &ReadTx) -> Result<Option<Timestamp>, store::Error> {
    let Some(head) = crate::audit::head(tx)? else { return Ok(None) };
    let written = tx.get(NEWEST, NEWEST_KEY)?;
    let first = match written {
        Some(w) => w.covers + 1,
        None => crate::audit::anchor(tx)?.map_or(0, |a| a.seq + 1),
    };
    let newest = written.map(|w| w.seq);
    match (first..=head.seq).find(|seq| Some(*seq) != newest) {
        Some(seq) => crate::audit::time_of(tx, seq),
        None => Ok(None),
    }
}

/// The last checkpoint written (the seq it covers, and when).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Last {
    pub covers: u64,
    pub at: Timestamp,
}

/// Whether a checkpoint is due, given the head now. The checkpoint record
/// itself does not make another one due.
pub fn due(head: Head, last: Option<Last>, now: Timestamp, interval: Duration) -> bool {
    match last {
        None => true,
        Some(last) => {
            let new_records = head.seq.saturating_sub(last.covers + 1);
            new_records + 1 >= EVERY_RECORDS || (new_records > 0 && now.since(last.at) >= interval)
        }
    }
}

/// The covered seq, its hash and the signature a checkpoint record carries.
pub fn read_details(record: &Record) -> Option<(u64, [u8; 32], String)> {
    let d = &record.metadata.details;
    let seq = d.get("covers_seq")?.parse().ok()?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(d.get("covers_hash")?, &mut hash).ok()?;
    Some((seq, hash, d.get("signature")?.clone()))
}

/// A checkpoint on its own: what an auditor downloads to pin the log as it
/// stands, and later checks an export against
/// (`tether audit verify --checkpoint FILE --public-key KEY --file EXPORT`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The checkpoint's own record.
    pub seq: u64,
    pub written_at: String,
    /// The record it vouches for, and that record's hash: every record up
    /// to it is pinned by the hash chain.
    pub covers_seq: u64,
    pub covers_hash: String,
    /// ECDSA P-256 over the checkpoint purpose, `covers_seq` and `covers_hash`.
    pub signature: String,
    pub key_id: String,
}

impl Signed {
    /// Whether `key` made this checkpoint's signature.
    pub fn verifies(&self, key: &signing::PublicKey) -> bool {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&self.covers_hash, &mut hash).is_ok()
            && key.id() == self.key_id
            && key.verifies(Purpose::Checkpoint, self.covers_seq, &hash, &self.signature)
    }
}

/// The newest checkpoint written, as a document of its own (`None` before
/// the first, or once retention has moved it into an archive segment).
pub fn newest(tx: &ReadTx) -> Result<Option<Signed>, store::Error> {
    let Some(written) = tx.get(NEWEST, NEWEST_KEY)? else { return Ok(None) };
    let Some(record) = crate::audit::record_at(tx, written.seq)? else { return Ok(None) };
    let Some((covers_seq, covers_hash, signature)) = read_details(&record) else { return Ok(None) };
    Ok(Some(Signed {
        seq: record.seq,
        written_at: record.timestamp.clone(),
        covers_seq,
        covers_hash: hex::encode(covers_hash),
        signature,
        key_id: record.metadata.details.get("key_id").cloned().unwrap_or_default(),
    }))
}

/// Signs the head and appends the checkpoint (making the audit key first,
/// the first time). Returns what it covers.
pub async fn write(store: &Store, vault: &Vault, now: Timestamp) -> Result<Option<Last>, SigningError> {
    let keys = vault.keys()?;
    signing::ensure(store, &keys).await?;
    let signed = store.read(|tx| {
        let Some(head) = crate::audit::head(tx)? else { return Ok(None) };
        Ok::<_, SigningError>(Some((head, signing::sign(tx, &keys, Purpose::Checkpoint, head.seq, &head.hash)?)))
    })?;
    let Some((head, (signature, key_id))) = signed else { return Ok(None) };
    let event = Event::new(EVENT, "checkpoint", Resource::new("audit_log", head.seq))
        .detail("covers_seq", head.seq)
        .detail("covers_hash", hex::encode(head.hash))
        .detail("signature", signature)
        .detail("key_id", key_id);
    store
        .write(move |tx| {
            let seq = crate::audit::append(tx, now, &Origin::system(), event)?;
            tx.put(NEWEST, NEWEST_KEY, &Written { covers: head.seq, seq })
        })
        .await?;
    Ok(Some(Last { covers: head.seq, at: now }))
}

/// Writes checkpoints as they fall due, for as long as the appliance runs
/// (nothing while sealed: the key cannot be opened).
pub async fn run(store: Store, vault: Arc<Vault>, clock: SharedClock, interval: Duration) {
    let mut last: Option<Last> = None;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if vault.is_sealed() || store.is_degraded() {
            continue;
        }
        let now = clock.now();
        let head = match store.read(crate::audit::head) {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "audit checkpoint: cannot read the chain head");
                continue;
            }
        };
        if last.is_none() {
            // A start: count from here (the chain before was checkpointed
            // by the previous run, up to its last interval).
            last = Some(Last { covers: head.seq.saturating_sub(1), at: now });
        }
        if !due(head, last, now, interval) {
            continue;
        }
        match write(&store, &vault, now).await {
            Ok(Some(written)) => last = Some(written),
            Ok(None) => {}
            Err(SigningError::Vault(crate::vault::Error::Sealed)) => {}
            Err(e) => tracing::warn!(error = %e, "audit checkpoint not written; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn head(seq: u64) -> Head {
        Head { seq, hash: [0; 32] }
    }

    #[test]
    fn a_checkpoint_falls_due_every_thousand_records_or_each_interval_with_news() {
        let minute = Duration::from_secs(60);
        let last = Some(Last { covers: 99, at: T0 });
        // Record 100 is the checkpoint itself: nothing new.
        assert!(!due(head(100), last, T0.plus(minute * 5), minute), "no news, no checkpoint");
        assert!(!due(head(101), last, T0.plus(Duration::from_secs(59)), minute));
        assert!(due(head(101), last, T0.plus(minute), minute), "news and a minute passed");
        assert!(!due(head(1098), last, T0, minute));
        assert!(due(head(1099), last, T0, minute), "a thousand records since the last");
        assert!(due(head(0), None, T0, minute));
    }

    #[tokio::test]
    async fn the_newest_checkpoint_stands_alone_and_verifies_only_as_signed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let clock = std::sync::Arc::new(tether_base::clock::ManualClock::at(T0));
        let vault = crate::vault::unsealed_for_tests(&store, clock);
        assert_eq!(store.read(newest).unwrap(), None, "none before the first");
        let event = Event::new("test.happened", "test", Resource::new("thing", "1"));
        store.write(move |tx| crate::audit::append(tx, T0, &Origin::system(), event)).await.unwrap();
        let head = store.read(crate::audit::head).unwrap().unwrap();
        let written = write(&store, &vault, T0).await.unwrap().unwrap();

        let signed = store.read(newest).unwrap().unwrap();
        assert_eq!((signed.covers_seq, written.covers), (head.seq, head.seq));
        assert_eq!(signed.covers_hash, hex::encode(head.hash));
        assert_eq!(signed.seq, head.seq + 1, "the checkpoint is the record after what it covers");
        let key = signing::PublicKey::from_pem(&store.read(signing::public_key_pem).unwrap()).unwrap();
        assert!(signed.verifies(&key));
        let altered = Signed { covers_hash: hex::encode([9u8; 32]), ..signed.clone() };
        assert!(!altered.verifies(&key), "another hash");
        let moved = Signed { covers_seq: signed.covers_seq + 1, ..signed.clone() };
        assert!(!moved.verifies(&key), "another seq");
        let other_dir = tempfile::tempdir().unwrap();
        let other = Store::create(other_dir.path()).unwrap();
        let other_vault =
            crate::vault::unsealed_for_tests(&other, std::sync::Arc::new(tether_base::clock::ManualClock::at(T0)));
        signing::ensure(&other, &other_vault.keys().unwrap()).await.unwrap();
        let stranger = signing::PublicKey::from_pem(&other.read(signing::public_key_pem).unwrap()).unwrap();
        assert!(!signed.verifies(&stranger), "another appliance's key");
    }
}
