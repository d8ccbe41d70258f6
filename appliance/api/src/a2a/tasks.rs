//! What the endpoint and its streams share: a broker task shown as an A2A
//! task, a message made into a task, and how a failure is answered.

use serde_json::{Map, Value};

use super::card::{self, Skill};
use super::wire::{self, Dialect, RpcError, TaskFacts, code};
use crate::extract::Caller;
use crate::{ApiError, AppState};
use tether_base::ids::TaskId;
use tether_domain::auth::Scope;
use tether_domain::broker::{self, Task, TaskRequest};

/// Why a call was not answered: a JSON-RPC error, or one the JSON API
/// gives too (its HTTP status: a sealed vault, a store that cannot write).
pub enum Failure {
    Rpc(RpcError),
    Api(ApiError),
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Self {
        Failure::Rpc(e)
    }
}

impl From<broker::Error> for Failure {
    fn from(e: broker::Error) -> Self {
        match e {
            broker::Error::NotFound => Failure::Rpc(RpcError::new(code::TASK_NOT_FOUND, "no such task")),
            broker::Error::AlreadyFinished => {
                Failure::Rpc(RpcError::new(code::TASK_NOT_CANCELABLE, "the task has already finished"))
            }
            broker::Error::InvalidTask(m) | broker::Error::SecretRefused(m) => {
                Failure::Rpc(RpcError::new(code::INVALID_PARAMS, m))
            }
            broker::Error::IdempotencyConflict => Failure::Rpc(RpcError::new(
                code::INVALID_PARAMS,
                "this messageId was already sent with a different message",
            )),
            other => Failure::Api(other.into()),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound => Failure::Rpc(RpcError::new(code::TASK_NOT_FOUND, "no such task")),
            other => Failure::Api(other),
        }
    }
}

pub fn param<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a Value, RpcError> {
    params.get(name).ok_or_else(|| RpcError::new(code::INVALID_PARAMS, format!("`params.{name}` is missing")))
}

pub fn task_id(params: &Map<String, Value>) -> Result<TaskId, RpcError> {
    let id = param(params, "id")?.as_str().unwrap_or_default();
    id.parse().map_err(|_| RpcError::new(code::TASK_NOT_FOUND, "no such task (a task id is a UUID)"))
}

/// The task as A2A shows it to `scope` (metadata only: no result, no
/// failure message).
pub fn shown(state: &AppState, task: &Task, scope: Scope, dialect: Dialect) -> Result<Value, Failure> {
    let revealed = if scope == Scope::Metadata { None } else { Some(state.broker.reveal(task)?) };
    let result: Option<Value> =
        revealed.as_ref().and_then(|r| r.result.as_deref()).map(|r| serde_json::from_slice(r).unwrap_or(Value::Null));
    let message = revealed.as_ref().and_then(|r| r.error.as_ref()).map(|e| e.message.as_str());
    let error = task.error.as_ref().map(|e| (e.code.as_str(), message));
    let updated_at = task.updated_at.to_rfc3339();
    let skill = skill_of(state, task);
    let facts = TaskFacts {
        id: &task.id.to_string(),
        state: task.state,
        updated_at: &updated_at,
        result: result.as_ref(),
        error,
        skill: &skill,
    };
    Ok(wire::task(&facts, dialect))
}

/// The skill a task was made for (its kind, or the command it runs).
fn skill_of(state: &AppState, task: &Task) -> String {
    if task.kind != "command" {
        return task.kind.clone();
    }
    let command = state
        .broker
        .reveal(task)
        .ok()
        .and_then(|r| serde_json::from_slice::<Value>(&r.input).ok())
        .and_then(|input| input["command"].as_str().map(str::to_owned));
    command.map_or_else(|| task.kind.clone(), |c| Skill::Command(c).id())
}

/// Makes the message's task; with `wait`, waits for it to end.
pub async fn create(state: &AppState, caller: &Caller, params: &Map<String, Value>) -> Result<Task, Failure> {
    let message = param(params, "message")?;
    let offered = card::skills(state)?;
    let only = (offered.len() == 1).then(|| offered.keys().next().cloned()).flatten();
    let (skill_id, input) = wire::task_input(message, only.as_deref())?;
    if !offered.contains_key(&skill_id) {
        let known: Vec<&str> = offered.keys().map(String::as_str).collect();
        let message = format!("no worker offers the skill {skill_id:?}; the card lists {}", known.join(", "));
        return Err(RpcError::new(code::INVALID_PARAMS, message).into());
    }
    let (kind, input) = Skill::from_id(&skill_id).task(input);
    let request = TaskRequest { kind, input: input.to_string().into_bytes(), ..TaskRequest::default() };
    let new = request.validate()?;
    let key = message.get("messageId").and_then(Value::as_str).filter(|k| !k.is_empty()).map(str::to_owned);
    let (task, created) = state.broker.create(&caller.origin, &caller.principal, new, key).await?;
    if created {
        state.monitor.task_created();
    }
    Ok(task)
}
