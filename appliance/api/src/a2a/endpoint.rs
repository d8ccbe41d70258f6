//! `POST /a2a/v1`: A2A's JSON-RPC binding over the broker. A message
//! becomes a task (its `messageId` the idempotency key, so a client that
//! sends it again gets the same task); the answer is that task, at once
//! with `returnImmediately`, else once it ends (bounded by the request
//! timeout). Streaming calls answer with Server-Sent Events built from the
//! task's event log. The route takes the same tokens, roles and audit as
//! the JSON API: no token is a 401 and a role without the method's
//! permission a 403, never a JSON-RPC error; a malformed call is one, with
//! its standard code.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::tasks::{Failure, create, shown, task_id};
use super::wire::{self, Call, Dialect, Method, RpcError, code};
use crate::extract::Caller;
use crate::{ApiError, AppState};
use tether_domain::auth::{Permission, Scope, grant, roles_with};
use tether_domain::broker::ListFilter;

/// The most tasks one `ListTasks` page holds.
const MOST_PER_PAGE: usize = 100;

pub async fn call(State(state): State<AppState>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(version) = headers.get("a2a-version").and_then(|v| v.to_str().ok())
        && !["1.0", "0.3"].contains(&version.trim())
    {
        let e =
            RpcError::new(code::VERSION_NOT_SUPPORTED, format!("A2A-Version {version} is not spoken here: 1.0 or 0.3"));
        return axum::Json(wire::error(&Value::Null, &e)).into_response();
    }
    let call = match wire::read_call(&body) {
        Ok(call) => call,
        Err((id, e)) => return axum::Json(wire::error(&id, &e)).into_response(),
    };
    let needed = match call.method {
        Method::SendMessage | Method::SendStreamingMessage => Permission::TaskCreate,
        Method::GetTask | Method::ListTasks | Method::SubscribeToTask => Permission::TaskRead,
        Method::CancelTask => Permission::TaskCancel,
    };
    let Some(scope) = grant(caller.role, needed) else {
        return ApiError::Forbidden { role: caller.role, needed: roles_with(needed) }.into_response();
    };
    let answered = match call.method {
        Method::SendMessage => send(&state, &caller, &call).await,
        Method::GetTask => get(&state, &caller, scope, &call),
        Method::ListTasks => list(&state, &caller, scope, &call),
        Method::CancelTask => cancel(&state, &caller, scope, &call).await,
        Method::SendStreamingMessage | Method::SubscribeToTask => {
            return super::stream::answer(state, caller, scope, call).await;
        }
    };
    match answered {
        Ok(result) => axum::Json(wire::result(&call.id, result)).into_response(),
        Err(Failure::Rpc(e)) => axum::Json(wire::error(&call.id, &e)).into_response(),
        Err(Failure::Api(e)) => e.into_response(),
    }
}

async fn send(state: &AppState, caller: &Caller, call: &Call) -> Result<Value, Failure> {
    let mut task = create(state, caller, &call.params).await?;
    let immediately =
        call.params.get("configuration").and_then(|c| c.get("returnImmediately")).and_then(Value::as_bool);
    // 0.3 said the opposite way: `blocking` (false: answer at once).
    let blocking = call.params.get("configuration").and_then(|c| c.get("blocking")).and_then(Value::as_bool);
    if !immediately.unwrap_or(false) && blocking.unwrap_or(true) {
        let longest = state.config.limits.request_timeout.saturating_sub(Duration::from_secs(5));
        task = state.broker.wait_finished(task.id, longest).await?;
    }
    let shown = shown(state, &task, Scope::All, call.dialect)?;
    Ok(match call.dialect {
        Dialect::V1 => json!({"task": shown}),
        Dialect::V03 => shown,
    })
}

fn get(state: &AppState, caller: &Caller, scope: Scope, call: &Call) -> Result<Value, Failure> {
    let id = task_id(&call.params)?;
    let task = super::super::tasks::visible(state, caller, id)?;
    shown(state, &task, scope, call.dialect)
}

fn list(state: &AppState, caller: &Caller, scope: Scope, call: &Call) -> Result<Value, Failure> {
    let p = &call.params;
    let limit = p.get("pageSize").and_then(Value::as_u64).map_or(50, |n| n.clamp(1, MOST_PER_PAGE as u64) as usize);
    let state_filter = match p.get("status").and_then(Value::as_str) {
        None | Some("TASK_STATE_UNSPECIFIED") => None,
        Some(name) => Some(
            wire::state_from_name(name)
                .ok_or_else(|| RpcError::new(code::INVALID_PARAMS, format!("no task state {name:?} here")))?,
        ),
    };
    let before = match p.get("pageToken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        Some(token) => Some(
            token.parse().map_err(|_| RpcError::new(code::INVALID_PARAMS, "`pageToken` is not one this agent gave"))?,
        ),
        None => None,
    };
    let created_by = (scope == Scope::Own).then(|| caller.principal.clone());
    let filter = ListFilter { state: state_filter, created_by, before, limit: limit + 1 };
    let mut tasks = state.broker.list(&filter)?;
    let next = (tasks.len() > limit).then(|| tasks[limit - 1].id.to_string());
    tasks.truncate(limit);
    let shown: Vec<Value> = tasks.iter().map(|t| shown(state, t, scope, call.dialect)).collect::<Result<_, _>>()?;
    Ok(json!({
        "tasks": shown,
        "nextPageToken": next.unwrap_or_default(),
        "pageSize": limit,
    }))
}

async fn cancel(state: &AppState, caller: &Caller, scope: Scope, call: &Call) -> Result<Value, Failure> {
    let id = task_id(&call.params)?;
    super::super::tasks::visible(state, caller, id)?;
    let task = state.broker.cancel(&caller.origin, id).await?;
    shown(state, &task, scope, call.dialect)
}
