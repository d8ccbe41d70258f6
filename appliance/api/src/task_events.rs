//! `GET /api/v1/tasks/{id}/events`: one task followed live, as Server-Sent
//! Events — `state` (each state it enters), `progress` (a percentage and a
//! message from its worker) and `output` (what it printed), each with its
//! number in the task's log as the event id. A client that reconnects with
//! `Last-Event-ID` (or `?after=`) gets exactly what it had not seen. The
//! stream starts with everything so far and ends after the final state.
//! Roles that see metadata only get states and percentages, never a
//! message or output.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState, parse_id};
use tether_base::ids::TaskId;
use tether_domain::auth::{Scope, Via};
use tether_domain::broker::events::TaskEvent;

/// Events read from the log at a time.
const BATCH: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event number (as `Last-Event-ID` does).
    after: Option<u32>,
}

struct Follower<R> {
    state: AppState,
    id: TaskId,
    /// The last event read.
    after: Option<u32>,
    changes: broadcast::Receiver<TaskId>,
    session: Option<[u8; 32]>,
    /// What each event is sent as (none, one or more events).
    render: R,
    ready: VecDeque<Event>,
    done: bool,
}

pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id: TaskId = parse_id(&id)?;
    super::tasks::visible(&state, &caller, id)?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| ApiError::InvalidRequest("Last-Event-ID must be an event number".into()))?,
        ),
        None => query.after,
    };
    let metadata_only = caller.scope == Scope::Metadata;
    let render = move |event: TaskEvent| {
        let seq = event.seq();
        let shown = if metadata_only { event.metadata_only() } else { Some(event) };
        shown
            .and_then(|event| {
                let kind = match &event {
                    TaskEvent::State { .. } => "state",
                    TaskEvent::Progress { .. } => "progress",
                    TaskEvent::Output { .. } => "output",
                };
                Event::default().event(kind).id(seq.to_string()).json_data(&event).ok()
            })
            .into_iter()
            .collect()
    };
    Ok(Sse::new(follow(state, &caller, id, resume, render)).keep_alive(KeepAlive::default()))
}

/// Task `id`'s events after `after`, live, each sent as `render` makes it,
/// until its final state (or the caller's session) ends.
pub fn follow<R>(
    state: AppState,
    caller: &Caller,
    id: TaskId,
    after: Option<u32>,
    render: R,
) -> impl Stream<Item = Result<Event, Infallible>> + use<R>
where
    R: FnMut(TaskEvent) -> Vec<Event> + Send + 'static,
{
    let follower = Follower {
        // Subscribed before the first read: no change between the two is missed.
        changes: state.broker.changes(),
        state,
        id,
        after,
        session: match caller.via {
            Via::Session { key, .. } => Some(key),
            Via::Token { .. } => None,
        },
        render,
        ready: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(event) = f.ready.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done || !f.session_alive() {
                return None;
            }
            if f.read() {
                continue;
            }
            f.wait().await?;
        }
    })
}

impl<R: FnMut(TaskEvent) -> Vec<Event>> Follower<R> {
    fn session_alive(&self) -> bool {
        self.session.is_none_or(|key| matches!(self.state.accounts.live_session(&key), Ok(Some(_))))
    }

    /// Queues what the log holds past the last event read; says whether it
    /// found any. One that cannot be read now (the vault sealed) waits for
    /// the next change.
    fn read(&mut self) -> bool {
        let Ok(events) = self.state.broker.events(self.id, self.after, BATCH) else {
            return false;
        };
        let found = !events.is_empty();
        for event in events {
            self.after = Some(event.seq());
            if let TaskEvent::State { state, .. } = &event
                && state.is_final()
            {
                self.done = true;
            }
            self.ready.extend((self.render)(event));
        }
        found
    }

    /// Until the task's log grows (or, fallen behind, it may have); `None`
    /// when the broker is gone.
    async fn wait(&mut self) -> Option<()> {
        loop {
            match self.changes.recv().await {
                Ok(id) if id == self.id => return Some(()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(()),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
