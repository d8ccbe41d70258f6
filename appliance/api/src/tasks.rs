//! Task routes for people and automation.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState, parse_id};
use tether_base::ids::TaskId;
use tether_domain::auth::Scope;
use tether_domain::broker::{Broker, ListFilter, Revealed, Task, TaskRequest, TaskState};

const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_LIST: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    kind: String,
    input: serde_json::Value,
    #[serde(default)]
    labels: Vec<String>,
    /// Names of secrets the worker running it receives.
    #[serde(default)]
    secrets: Vec<String>,
    priority: Option<u8>,
    max_attempts: Option<u32>,
    timeout_s: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct LeaseView {
    worker: String,
    expires_at: String,
}

#[derive(Debug, Serialize)]
pub struct ErrorView {
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// A task as clients see it. Payloads only where the caller's scope allows.
#[derive(Debug, Serialize)]
pub struct TaskView {
    id: String,
    kind: String,
    state: TaskState,
    priority: u8,
    labels: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<String>,
    attempts: u32,
    max_attempts: u32,
    timeout_s: u64,
    created_by: String,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView>,
}

fn json_of(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

/// The task as `scope` may see it: payloads (opened from the vault) only
/// for a scope that covers them.
pub fn view(broker: &Broker, task: Task, scope: Scope) -> Result<TaskView, ApiError> {
    let revealed = if scope == Scope::Metadata { None } else { Some(broker.reveal(&task)?) };
    Ok(view_of(task, revealed))
}

/// The task with its payloads as given (`None`: metadata only).
fn view_of(task: Task, revealed: Option<Revealed>) -> TaskView {
    let (input, result, error) = match revealed {
        Some(r) => (Some(json_of(&r.input)), r.result.map(|r| json_of(&r)), r.error.map(|e| (e.code, Some(e.message)))),
        None => (None, None, task.error.map(|e| (e.code, None))),
    };
    TaskView {
        id: task.id.to_string(),
        kind: task.kind,
        state: task.state,
        priority: task.priority,
        labels: task.labels,
        secrets: task.secrets,
        attempts: task.attempts,
        max_attempts: task.max_attempts,
        timeout_s: task.timeout.as_secs(),
        created_by: task.created_by,
        created_at: task.created_at.to_rfc3339(),
        updated_at: task.updated_at.to_rfc3339(),
        finished_at: task.finished_at.map(|t| t.to_rfc3339()),
        not_before: task.not_before.map(|t| t.to_rfc3339()),
        lease: task
            .lease
            .filter(|_| task.state == TaskState::Leased)
            .map(|l| LeaseView { worker: l.worker.to_string(), expires_at: l.expires_at.to_rfc3339() }),
        input,
        result,
        error: error.map(|(code, message)| ErrorView { code, message }),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::InvalidRequest(format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"))
    })?;
    Ok(Some(key.to_owned()))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let input = serde_json::to_vec(&body.input).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let request = TaskRequest {
        kind: body.kind,
        input: input.clone(),
        labels: body.labels,
        secrets: body.secrets,
        priority: body.priority,
        max_attempts: body.max_attempts,
        timeout_s: body.timeout_s,
    };
    let new = request.validate()?;
    let (task, created) = state.broker.create(&caller.origin, &caller.principal, new, key).await?;
    if created {
        state.monitor.task_created();
    }
    // A task just created has only the input, which is at hand: answer
    // without opening what was sealed a moment ago. A replay may have moved on.
    let shown = match (created, caller.scope) {
        (_, Scope::Metadata) => view_of(task, None),
        (true, _) => view_of(task, Some(Revealed { input, result: None, error: None })),
        (false, scope) => view(&state.broker, task, scope)?,
    };
    let mut response = (StatusCode::CREATED, axum::Json(shown)).into_response();
    if !created {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The task, if the caller may see it at all. Someone else's task is "not
/// found" to a developer: its existence is not theirs to learn.
pub(super) fn visible(state: &AppState, caller: &Caller, id: TaskId) -> Result<Task, ApiError> {
    let task = state.broker.get(id)?;
    if caller.scope == Scope::Own && task.created_by != caller.principal {
        return Err(ApiError::NotFound);
    }
    Ok(task)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    wait: Option<u64>,
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<GetQuery>,
) -> Result<axum::Json<TaskView>, ApiError> {
    let id: TaskId = parse_id(&id)?;
    let mut task = visible(&state, &caller, id)?;
    if let Some(wait) = query.wait.filter(|w| *w > 0) {
        let longest = state.config.limits.request_timeout.saturating_sub(Duration::from_secs(5));
        task = state.broker.wait_finished(id, Duration::from_secs(wait).min(longest)).await?;
    }
    Ok(axum::Json(view(&state.broker, task, caller.scope)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TaskList {
    tasks: Vec<TaskView>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<TaskList>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let filter = ListFilter {
        state: query.state.map(|s| s.parse()).transpose().map_err(ApiError::InvalidRequest)?,
        created_by: (caller.scope == Scope::Own).then(|| caller.principal.clone()),
        before: query
            .before
            .map(|b| b.parse())
            .transpose()
            .map_err(|_| ApiError::InvalidRequest("before must be a task id".into()))?,
        limit,
    };
    let tasks = state.broker.list(&filter)?;
    let next_before = (tasks.len() == limit).then(|| tasks.last().map(|t| t.id.to_string())).flatten();
    Ok(axum::Json(TaskList {
        tasks: tasks.into_iter().map(|t| view(&state.broker, t, caller.scope)).collect::<Result<_, _>>()?,
        next_before,
    }))
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TaskView>, ApiError> {
    let id: TaskId = parse_id(&id)?;
    visible(&state, &caller, id)?;
    let task = state.broker.cancel(&caller.origin, id).await?;
    Ok(axum::Json(view(&state.broker, task, caller.scope)?))
}
