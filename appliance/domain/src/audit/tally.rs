//! Failures from outside, tallied instead of written one by one.
//!
//! Anyone who can reach a listener can fail to authenticate, present a bad
//! enrollment token or be turned away while the disk is low, as fast as the
//! listener accepts requests. One audit record each would let them fill
//! the disk (measured before this existed: two anonymous connections took
//! a 300 MB data disk to full in 51 s). So such a failure is tallied:
//!
//! - the first of its kind from a source in a window (`audit_failure_window`,
//!   60 s) is recorded at once, so an attack shows without delay;
//! - the rest of that window are counted and recorded as **one** record
//!   when it ends: the first one's event with `repeated` (how many more),
//!   `first_at` and `last_at`;
//! - at most [`MAX_TALLIES`] sources are tallied apart in a window; the
//!   others share one tally with no source address, so a crowd of
//!   addresses costs no more than one;
//! - while the disk is low (the reserve given up) nothing is written: the
//!   tallies wait in memory and are written once space is back, so
//!   anonymous traffic never spends the space kept for the audit log of
//!   authenticated work;
//! - a record the store could not write (it was degraded: the disk filled
//!   past the reserve) is kept and written at a later flush, so a full disk
//!   loses no refusal.
//!
//! The kind is the event type, the resource type and the `reason` and
//! `credential` details: never the request's path or a name it carries,
//! which the client chooses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{Event, Origin};
use tether_base::clock::{SharedClock, Timestamp};
use tether_store::{self as store, Store};

/// Sources tallied apart within one window; the rest share one tally.
pub const MAX_TALLIES: usize = 64;
/// How often ended windows are looked for.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Records kept for a later flush after the store refused them. Each
/// window leaves at most one per kind and the kinds are bounded, so this is
/// reached only after many windows of a store that cannot write; then the
/// oldest are dropped, counted in the log.
const MAX_UNWRITTEN: usize = 16 * MAX_TALLIES;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    source: Option<IpAddr>,
    event_type: &'static str,
    resource_type: String,
    reason: Option<String>,
    credential: Option<String>,
}

#[derive(Debug)]
struct Tally {
    opened: Timestamp,
    last: Timestamp,
    /// Failures after the first (which was recorded at once, unless the disk was low).
    repeated: u64,
    /// The first failure of the window, kept to be written with the count.
    first: (Origin, Event),
    /// The first one is not written yet (the disk was low).
    first_unwritten: bool,
}

/// What [`FailureLog::note`] did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noted {
    /// Failures of this kind from this source in the current window, this one included.
    pub in_window: u64,
    /// When the current window ends.
    pub window_ends: Timestamp,
}

/// The tallies of one appliance. Share one.
pub struct FailureLog {
    store: Store,
    clock: SharedClock,
    window: Duration,
    /// Whether the disk is low now (then nothing is written).
    disk_low: Box<dyn Fn() -> bool + Send + Sync>,
    tallies: Mutex<HashMap<Kind, Tally>>,
    /// Records the store refused, oldest first: written at the next flush.
    unwritten: Mutex<Vec<(Origin, Event)>>,
}

impl std::fmt::Debug for FailureLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLog").field("window", &self.window).finish_non_exhaustive()
    }
}

impl FailureLog {
    pub fn new(
        store: Store,
        clock: SharedClock,
        window: Duration,
        disk_low: impl Fn() -> bool + Send + Sync + 'static,
    ) -> FailureLog {
        FailureLog {
            store,
            clock,
            window,
            disk_low: Box::new(disk_low),
            tallies: Mutex::default(),
            unwritten: Mutex::default(),
        }
    }

    /// Tallies one failure; writes it if it is the first of its kind from
    /// its source in the window (and the disk is not low).
    pub async fn note(&self, origin: Origin, mut event: Event) -> Noted {
        let now = self.clock.now();
        // Kept in memory until the window ends: no more of the input than
        // a record would keep.
        event.resource.id = tether_base::bounded::stored(std::mem::take(&mut event.resource.id));
        let hold = (self.disk_low)();
        let (noted, write_now) = {
            let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
            let mut kind = kind_of(&origin, &event);
            if !tallies.contains_key(&kind) && tallies.len() >= MAX_TALLIES {
                kind.source = None;
            }
            match tallies.get_mut(&kind) {
                Some(t) => {
                    t.repeated += 1;
                    t.last = now;
                    let noted = Noted { in_window: t.repeated + 1, window_ends: t.opened.plus(self.window) };
                    (noted, None)
                }
                None => {
                    let shared = kind.source.is_none() && origin.source_ip.is_some();
                    let mut first = (origin, event);
                    if shared {
                        first.0.source_ip = None;
                        first.1 = first.1.detail("sources", "many");
                    }
                    let write_now = (!hold).then(|| first.clone());
                    let tally =
                        Tally { opened: now, last: now, repeated: 0, first, first_unwritten: write_now.is_none() };
                    tallies.insert(kind, tally);
                    (Noted { in_window: 1, window_ends: now.plus(self.window) }, write_now)
                }
            }
        };
        if let Some(first) = write_now {
            self.write(vec![first]).await;
        }
        noted
    }

    /// Writes the records the store refused before, the tallies whose
    /// window has ended (all of them if `all`), and the first failure of
    /// those held back while the disk was low; nothing while it is low or
    /// the store cannot write.
    pub async fn flush(&self, all: bool) {
        if (self.disk_low)() || self.store.is_degraded() {
            return;
        }
        let now = self.clock.now();
        let records: Vec<(Origin, Event)> = {
            let mut records = std::mem::take(&mut *self.unwritten.lock().unwrap_or_else(PoisonError::into_inner));
            let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
            let ended: Vec<Kind> = tallies
                .iter()
                .filter(|(_, t)| all || now.since(t.opened) >= self.window)
                .map(|(k, _)| k.clone())
                .collect();
            records.extend(ended.into_iter().filter_map(|k| tallies.remove(&k)).filter_map(summary));
            for held in tallies.values_mut().filter(|t| t.first_unwritten) {
                held.first_unwritten = false;
                records.push(held.first.clone());
            }
            records
        };
        if !records.is_empty() {
            self.write(records).await;
        }
    }

    /// Flushes ended windows every second, for ever.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush(false).await;
        }
    }

    /// Writes `records` in one transaction, or keeps them for the next
    /// flush if the store refuses.
    async fn write(&self, records: Vec<(Origin, Event)>) {
        let now = self.clock.now();
        let batch = records.clone();
        let written = self
            .store
            .write(move |tx| {
                for (origin, event) in batch {
                    super::append(tx, now, &origin, event)?;
                }
                Ok::<_, store::Error>(())
            })
            .await;
        if let Err(e) = written {
            if !matches!(e, store::Error::Degraded) {
                tracing::error!(error = %e, "could not write tallied failures to the audit log; kept for the next try");
            }
            let mut unwritten = self.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
            unwritten.extend(records);
            let over = unwritten.len().saturating_sub(MAX_UNWRITTEN);
            if over > 0 {
                unwritten.drain(..over);
                tracing::error!(
                    dropped = over,
                    "tallied failures the audit log could not take were dropped, oldest first"
                );
            }
        }
    }
}

fn kind_of(origin: &Origin, event: &Event) -> Kind {
    let detail = |k: &str| event.details.get(k).map(|v| tether_base::bounded::stored(v.clone()));
    Kind {
        source: origin.source_ip,
        event_type: event.event_type,
        resource_type: event.resource.kind.clone(),
        reason: detail("reason"),
        credential: detail("credential"),
    }
}

/// The record a window leaves: nothing if its one failure was written
/// already; the first failure itself if it was held back; else the first
/// failure's event with the count.
fn summary(t: Tally) -> Option<(Origin, Event)> {
    if t.repeated == 0 && !t.first_unwritten {
        return None;
    }
    let (origin, mut event) = t.first;
    if t.repeated > 0 {
        event = event
            .detail("repeated", t.repeated)
            .detail("first_at", t.opened.to_rfc3339())
            .detail("last_at", t.last.to_rfc3339());
    }
    Some((origin, event))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::audit::{Actor, Outcome, Resource};
    use tether_base::clock::ManualClock;

    fn failure(ip: [u8; 4], path: &str) -> (Origin, Event) {
        let origin =
            Origin { actor: Actor::anonymous(), source_ip: Some(IpAddr::from(ip)), user_agent: Some("curl".into()) };
        let event = Event::new("auth.failed", "authenticate", Resource::new("route", path))
            .outcome(Outcome::Failure)
            .detail("reason", "missing");
        (origin, event)
    }

    fn log_lines(store: &Store) -> Vec<String> {
        let mut out = Vec::new();
        store.read(|tx| super::super::export_jsonl(tx, 0, &mut out)).unwrap();
        String::from_utf8(out).unwrap().lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn a_flood_from_one_source_costs_two_records_a_window_and_nothing_while_the_disk_is_low() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_000_000)));
        let low = Arc::new(AtomicBool::new(false));
        let is_low = low.clone();
        let window = Duration::from_secs(60);
        let log = FailureLog::new(store.clone(), clock.clone(), window, move || is_low.load(Ordering::Relaxed));
        let huge = format!("/api/v1/{}", "a".repeat(60_000));
        for i in 0..200u64 {
            let (o, e) = failure([10, 0, 0, 1], &huge);
            let noted = log.note(o, e).await;
            assert_eq!(noted.in_window, i + 1);
        }
        assert_eq!(log_lines(&store).len(), 1, "the first is written at once");
        log.flush(false).await;
        assert_eq!(log_lines(&store).len(), 1, "the window has not ended");
        clock.advance(window);
        log.flush(false).await;
        let lines = log_lines(&store);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains(r#""repeated":"199""#), "{}", lines[1]);
        assert!(lines.iter().all(|l| l.len() < 2_000), "the path is clipped");

        // The disk low: counted, not written; written once space is back.
        low.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            let (o, e) = failure([10, 0, 0, 2], "/api/v1/tasks");
            log.note(o, e).await;
        }
        log.flush(false).await;
        assert_eq!(log_lines(&store).len(), 2);
        low.store(false, Ordering::Relaxed);
        log.flush(false).await;
        assert_eq!(log_lines(&store).len(), 3, "the held-back first, once space is back");
        clock.advance(window);
        log.flush(false).await;
        let lines = log_lines(&store);
        assert_eq!(lines.len(), 4, "and the window's count when it ends");
        assert!(lines[3].contains(r#""repeated":"2""#), "{}", lines[3]);
    }

    #[tokio::test]
    async fn a_crowd_of_addresses_shares_one_tally() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_000_000)));
        let log = FailureLog::new(store.clone(), clock.clone(), Duration::from_secs(60), || false);
        for i in 0..1_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            let (o, e) = failure([10, a, b, c], &format!("/p/{i}"));
            log.note(o, e).await;
        }
        log.flush(true).await;
        let lines = log_lines(&store);
        // MAX_TALLIES addresses apart, then one shared first record, and its count.
        assert_eq!(lines.len(), MAX_TALLIES + 2, "{}", lines.len());
        let shared = lines.last().unwrap();
        assert!(shared.contains(r#""sources":"many""#) && shared.contains(r#""source_ip":null"#), "{shared}");
        assert!(shared.contains(&format!(r#""repeated":"{}""#, 1_000 - MAX_TALLIES - 1)), "{shared}");
    }

    #[tokio::test]
    async fn a_failure_the_store_cannot_take_is_kept_and_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_000_000)));
        let log = FailureLog::new(store.clone(), clock.clone(), Duration::from_secs(60), || false);
        store.refuse_writes_to(Some(crate::audit::LOG_TABLE));
        for i in 0..3u8 {
            let (o, e) = failure([10, 0, 0, i], "/api/v1/tasks");
            log.note(o, e).await;
        }
        clock.advance(Duration::from_secs(60));
        log.flush(false).await;
        assert!(log_lines(&store).is_empty(), "nothing could be written");
        store.refuse_writes_to(None);
        log.flush(false).await;
        let lines = log_lines(&store);
        assert_eq!(lines.len(), 3, "each source's first failure, kept until the store could write: {lines:?}");
        log.flush(true).await;
        assert_eq!(log_lines(&store).len(), 3, "written once");
    }
}
