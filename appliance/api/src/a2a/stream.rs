//! `SendStreamingMessage` and `SubscribeToTask` (`message/stream`,
//! `tasks/resubscribe`): Server-Sent Events, each a JSON-RPC answer to the
//! call — the task first, then a status update for each state it enters
//! and each progress report (the percentage and message as the status
//! message), an artifact update for each piece of output (appended to the
//! `output` artifact), the result artifact, and the final status, after
//! which the stream ends. Built from the task's event log, so nothing the
//! worker reported is missed.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::tasks::{self, Failure};
use super::wire::{self, Call, Dialect, Method, RpcError, code};
use crate::AppState;
use crate::extract::Caller;
use tether_domain::auth::Scope;
use tether_domain::broker::events::TaskEvent;
use tether_domain::broker::{Task, TaskState};

pub async fn answer(state: AppState, caller: Caller, scope: Scope, call: Call) -> Response {
    let task = match call.method {
        Method::SendStreamingMessage => tasks::create(&state, &caller, &call.params).await,
        _ => subscribed(&state, &caller, &call),
    };
    let task = match task {
        Ok(task) => task,
        Err(Failure::Rpc(e)) => return axum::Json(wire::error(&call.id, &e)).into_response(),
        Err(Failure::Api(e)) => return e.into_response(),
    };
    // The stream goes on from where the log stands now; the task as it
    // stands now comes first.
    let last = match state.broker.events(task.id, None, usize::MAX) {
        Ok(events) => events.last().map(TaskEvent::seq),
        Err(e) => return Failure::from(e).into_rpc(&call.id),
    };
    let first = match tasks::shown(&state, &task, scope, call.dialect) {
        Ok(shown) => shown,
        Err(f) => return f.into_rpc(&call.id),
    };
    let first = match call.dialect {
        Dialect::V1 => json!({"task": first}),
        Dialect::V03 => first,
    };
    let mut updates = Updates { state: state.clone(), task: task.clone(), scope, call, appended: false };
    let opening = updates.event(first);
    // A task that has ended has nothing more to say.
    let render = move |event: TaskEvent| updates.render(event);
    let rest = (!task.state.is_final()).then(|| crate::task_events::follow(state, &caller, task.id, last, render));
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter(opening.map(Ok)),
        futures_util::StreamExt::flatten(futures_util::stream::iter(rest)),
    );
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

fn subscribed(state: &AppState, caller: &Caller, call: &Call) -> Result<Task, Failure> {
    let id = call.params.get("id").and_then(Value::as_str).unwrap_or_default();
    let id = id.parse().map_err(|_| RpcError::new(code::TASK_NOT_FOUND, "no such task (a task id is a UUID)"))?;
    Ok(crate::tasks::visible(state, caller, id)?)
}

impl Failure {
    fn into_rpc(self, id: &Value) -> Response {
        match self {
            Failure::Rpc(e) => axum::Json(wire::error(id, &e)).into_response(),
            Failure::Api(e) => e.into_response(),
        }
    }
}

/// Turns the task's events into A2A stream responses.
struct Updates {
    state: AppState,
    task: Task,
    scope: Scope,
    call: Call,
    /// Whether the output artifact has had its first piece.
    appended: bool,
}

impl Updates {
    fn event(&self, result: Value) -> Option<Event> {
        Event::default().json_data(wire::result(&self.call.id, result)).ok()
    }

    fn status(&self, state: TaskState, timestamp: &str, message: Option<String>) -> Value {
        let dialect = self.call.dialect;
        let id = self.task.id.to_string();
        let mut status = json!({"state": wire::state_name(state, dialect), "timestamp": timestamp});
        if let Some(text) = message {
            status["message"] = wire::agent_message(&id, &text, dialect);
        }
        let mut update = json!({"taskId": id, "contextId": id, "status": status});
        match dialect {
            Dialect::V1 => json!({"statusUpdate": update}),
            Dialect::V03 => {
                update["kind"] = json!("status-update");
                update["final"] = json!(state.is_final());
                update
            }
        }
    }

    fn artifact(&self, artifact_id: &str, part: &Value, append: bool, last: bool) -> Value {
        let dialect = self.call.dialect;
        let id = self.task.id.to_string();
        let mut artifact =
            json!({"artifactId": artifact_id, "name": artifact_id, "parts": [wire::part(part, dialect)]});
        if dialect == Dialect::V03 {
            artifact["kind"] = json!("artifact");
        }
        let mut update =
            json!({"taskId": id, "contextId": id, "artifact": artifact, "append": append, "lastChunk": last});
        match dialect {
            Dialect::V1 => json!({"artifactUpdate": update}),
            Dialect::V03 => {
                update["kind"] = json!("artifact-update");
                update
            }
        }
    }

    fn render(&mut self, event: TaskEvent) -> Vec<Event> {
        let payload = self.scope != Scope::Metadata;
        let results: Vec<Value> = match event {
            TaskEvent::State { state, at, .. } => {
                let mut out = Vec::new();
                let timestamp = at.to_rfc3339();
                if state.is_final() {
                    // The task as it ended: its result artifact, or why it failed.
                    let ended = self.state.broker.get(self.task.id).ok();
                    let shown = ended.and_then(|t| tasks::shown(&self.state, &t, self.scope, self.call.dialect).ok());
                    if let Some(result) = shown.as_ref().and_then(|s| s.pointer("/artifacts/0/parts/0")) {
                        let value = result.get("data").or_else(|| result.get("text")).cloned().unwrap_or(Value::Null);
                        out.push(self.artifact("result", &value, false, true));
                    }
                    let why = shown.and_then(|s| s.pointer("/status/message/parts/0/text").cloned());
                    out.push(self.status(state, &timestamp, why.and_then(|w| w.as_str().map(str::to_owned))));
                } else {
                    out.push(self.status(state, &timestamp, None));
                }
                out
            }
            TaskEvent::Progress { percent, message, at, .. } => {
                let text = match (percent, message.filter(|_| payload)) {
                    (Some(p), Some(m)) => format!("{p}% {m}"),
                    (Some(p), None) => format!("{p}%"),
                    (None, Some(m)) => m,
                    (None, None) => return Vec::new(),
                };
                vec![self.status(TaskState::Leased, &at.to_rfc3339(), Some(text))]
            }
            TaskEvent::Output { text, .. } if payload => {
                let append = std::mem::replace(&mut self.appended, true);
                vec![self.artifact("output", &json!(text), append, false)]
            }
            TaskEvent::Output { .. } => Vec::new(),
        };
        results.into_iter().filter_map(|r| self.event(r)).collect()
    }
}
