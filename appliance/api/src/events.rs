//! `GET /api/v1/events`: the console's live views, as Server-Sent Events,
//! each kind only to a role that may read it:
//!
//! - `overview` (`worker_read`), now and every [`TICK`]: the queue's depth,
//!   how many tasks finished since the last one, workers enrolled and
//!   polling, whether the vault is sealed;
//! - `audit` (`audit_read`): the records appended since the last one, at
//!   most [`AUDIT_BATCH`] per event, with the newest seq as the event id, so
//!   a browser that reconnects (`Last-Event-ID`) misses none;
//! - `vault` (everyone): the vault's status whenever it changes.
//!
//! A session's stream ends when the session does; streaming does not keep
//! it alive (only requests do).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::AppState;
use super::extract::Caller;
use tether_base::ids::TaskId;
use tether_domain::audit::search;
use tether_domain::auth::{Permission, Via, grant};
use tether_domain::broker::Depth;

/// How often the overview is sent and the session and the audit log looked at.
pub const TICK: Duration = Duration::from_secs(2);
/// The most audit records one event carries.
pub const AUDIT_BATCH: usize = 200;

#[derive(Debug, Serialize)]
struct Overview {
    at: String,
    queue: Depth,
    /// Tasks that finished (succeeded, failed or were cancelled) since the
    /// previous overview.
    finished: u64,
    workers: Workers,
    sealed: bool,
}

#[derive(Debug, Serialize)]
struct Workers {
    /// Enrolled and not revoked.
    enrolled: usize,
    /// With a poll parked now: online and idle.
    polling: usize,
}

/// One stream's place.
struct Follower {
    state: AppState,
    session: Option<[u8; 32]>,
    overview: bool,
    /// The last audit record sent, when the caller may read the log.
    audit: Option<Option<u64>>,
    finished: broadcast::Receiver<TaskId>,
    vault: watch::Receiver<u64>,
    ticks: tokio::time::Interval,
    ready: VecDeque<Event>,
}

pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let may = |p| grant(caller.role, p).is_some();
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let audit = may(Permission::AuditRead)
        .then(|| resume.or_else(|| state.store.read(tether_domain::audit::head).ok().flatten().map(|h| h.seq)));
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follower = Follower {
        session: match caller.via {
            Via::Session { key, .. } => Some(key),
            Via::Token { .. } => None,
        },
        overview: may(Permission::WorkerRead),
        audit,
        finished: state.broker.finished_news(),
        vault: state.vault.changes(),
        ticks,
        ready: VecDeque::new(),
        state,
    };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(event) = f.ready.pop_front() {
                return Some((Ok(event), f));
            }
            tokio::select! {
                _ = f.ticks.tick() => {
                    if !f.session_alive() {
                        return None;
                    }
                    f.tick();
                }
                changed = f.vault.changed() => {
                    changed.ok()?;
                    if let Ok(status) = f.state.vault.status() {
                        f.push("vault", &status, None);
                    }
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

impl Follower {
    fn session_alive(&self) -> bool {
        self.session.is_none_or(|key| matches!(self.state.accounts.live_session(&key), Ok(Some(_))))
    }

    fn push(&mut self, kind: &str, data: &impl Serialize, id: Option<u64>) {
        if let Ok(mut event) = Event::default().event(kind).json_data(data) {
            if let Some(id) = id {
                event = event.id(id.to_string());
            }
            self.ready.push_back(event);
        }
    }

    /// Queues what a tick has to say. A view that cannot be read now (the
    /// vault sealed, the store busy) is left out of this tick, not fatal.
    fn tick(&mut self) {
        let finished = self.count_finished();
        if self.overview
            && let Some(overview) = self.overview(finished)
        {
            self.push("overview", &overview, None);
        }
        if let Some(last) = self.audit {
            let records = self.state.store.read(|tx| search::after(tx, last, AUDIT_BATCH)).unwrap_or_default();
            if let Some(newest) = records.last().map(|r| r.seq) {
                self.push("audit", &records, Some(newest));
                self.audit = Some(Some(newest));
            }
        }
    }

    fn overview(&self, finished: u64) -> Option<Overview> {
        let enrolled = self.state.authority.workers().ok()?.iter().filter(|w| !w.revoked).count();
        Some(Overview {
            at: self.state.clock.now().to_rfc3339(),
            queue: self.state.broker.depth().ok()?,
            finished,
            workers: Workers { enrolled, polling: self.state.broker.parked_workers().len() },
            sealed: self.state.vault.status().ok()?.sealed,
        })
    }

    /// Tasks finished since the last tick (a receiver that fell behind is
    /// told how many it missed).
    fn count_finished(&mut self) -> u64 {
        let mut count = 0u64;
        loop {
            match self.finished.try_recv() {
                Ok(_) => count += 1,
                Err(broadcast::error::TryRecvError::Lagged(missed)) => count += missed,
                Err(_) => return count,
            }
        }
    }
}
