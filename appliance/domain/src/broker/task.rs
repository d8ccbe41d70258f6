//! The task record, its states, and the validation of new tasks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;
use crate::vault::secrets::{self, SecretRef};
use crate::vault::{Keys, Place, Sealed};
use tether_base::clock::Timestamp;
use tether_base::ids::{LeaseId, TaskId, WorkerId};
use tether_base::labels;

pub const MAX_PRIORITY: u8 = 9;
pub const DEFAULT_PRIORITY: u8 = 5;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_ATTEMPTS_LIMIT: u32 = 100;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Leased,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Leased => "leased",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [TaskState::Queued, TaskState::Leased, TaskState::Succeeded, TaskState::Failed, TaskState::Cancelled]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// The worker currently (or last) holding a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub worker: WorkerId,
    pub id: LeaseId,
    pub expires_at: Timestamp,
    /// The secret versions delivered with this lease.
    pub secrets: Vec<SecretRef>,
}

/// Why a task failed, as the worker (or the broker) reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: String,
    pub message: String,
}

/// A [`TaskError`] as stored: the code is a short identifier (it is audited
/// too); the message may quote the task's data, so it is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredError {
    pub code: String,
    pub message: Sealed,
}

/// The sealed fields of a task, opened for someone allowed to see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revealed {
    /// The input as JSON text.
    pub input: Vec<u8>,
    /// The result as JSON text, once succeeded.
    pub result: Option<Vec<u8>>,
    pub error: Option<TaskError>,
}

/// The table the task record lives in: part of every sealed field's place.
pub(super) const TABLE: &str = "tasks";

/// Where a field of task `id` is sealed; `key` is `id.to_key()`.
pub(super) fn place<'a>(key: &'a [u8; 16], field: &'static str) -> Place<'a> {
    Place::new(TABLE, key, field)
}

/// Seals an error's message for task `id`.
pub(super) fn seal_error(keys: &Keys, id: TaskId, error: TaskError) -> Result<StoredError, crate::vault::Error> {
    let key = id.to_key();
    Ok(StoredError { code: error.code, message: keys.encrypt(place(&key, "error"), error.message.as_bytes())? })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub kind: String,
    /// The input as JSON text, sealed.
    pub input: Sealed,
    pub labels: Vec<String>,
    /// Names of the secrets the task needs, sorted.
    pub secrets: Vec<String>,
    pub priority: u8,
    pub state: TaskState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub lease: Option<Lease>,
    /// The result as JSON text, sealed, once succeeded.
    pub result: Option<Sealed>,
    pub error: Option<StoredError>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// While queued after a retry: not to be leased before this.
    pub not_before: Option<Timestamp>,
    pub idempotency_key: Option<String>,
    /// Where the task sits in the queue index while it is ready.
    pub(super) queue_key: Option<Vec<u8>>,
}

impl Task {
    /// A new task, queued, its input sealed for it.
    pub(super) fn queued(
        keys: &Keys,
        new: NewTask,
        principal: &str,
        now: Timestamp,
        idempotency_key: Option<String>,
    ) -> Result<Task, crate::vault::Error> {
        let id = TaskId::new();
        let input = keys.encrypt(place(&id.to_key(), "input"), &new.input)?;
        Ok(Task {
            id,
            kind: new.kind,
            input,
            labels: new.labels,
            secrets: new.secrets,
            priority: new.priority,
            state: TaskState::Queued,
            attempts: 0,
            max_attempts: new.max_attempts,
            timeout: new.timeout,
            lease: None,
            result: None,
            error: None,
            created_by: principal.into(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            not_before: None,
            idempotency_key,
            queue_key: None,
        })
    }

    /// Whether a key older than `current` sealed any field.
    pub(super) fn sealed_before(&self, current: u32) -> bool {
        let old = |s: &Sealed| s.key_version().is_none_or(|v| v < current);
        old(&self.input)
            || self.result.as_ref().is_some_and(old)
            || self.error.as_ref().is_some_and(|e| old(&e.message))
    }

    /// Seals again under the current key every field an older key sealed;
    /// says whether anything changed.
    pub(super) fn refresh_seals(&mut self, keys: &Keys) -> Result<bool, crate::vault::Error> {
        let key = self.id.to_key();
        let mut changed = false;
        if let Some(input) = keys.refresh(place(&key, "input"), &self.input)? {
            self.input = input;
            changed = true;
        }
        if let Some(result) = &self.result
            && let Some(fresh) = keys.refresh(place(&key, "result"), result)?
        {
            self.result = Some(fresh);
            changed = true;
        }
        if let Some(error) = &mut self.error
            && let Some(fresh) = keys.refresh(place(&key, "error"), &error.message)?
        {
            error.message = fresh;
            changed = true;
        }
        Ok(changed)
    }

    /// Opens the sealed fields.
    pub fn reveal(&self, keys: &Keys) -> Result<Revealed, crate::vault::Error> {
        let key = self.id.to_key();
        let input = keys.decrypt(place(&key, "input"), &self.input)?;
        let result = self.result.as_ref().map(|r| keys.decrypt(place(&key, "result"), r)).transpose()?;
        let error = match &self.error {
            Some(e) => {
                let message = keys.decrypt(place(&key, "error"), &e.message)?;
                Some(TaskError { code: e.code.clone(), message: String::from_utf8_lossy(&message).into_owned() })
            }
            None => None,
        };
        Ok(Revealed { input, result, error })
    }
}

/// A validated request for a new task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub kind: String,
    pub input: Vec<u8>,
    pub labels: Vec<String>,
    pub secrets: Vec<String>,
    pub priority: u8,
    pub max_attempts: u32,
    pub timeout: Duration,
}

/// A request as a client sent it, before validation.
#[derive(Debug, Clone, Default)]
pub struct TaskRequest {
    pub kind: String,
    pub input: Vec<u8>,
    pub labels: Vec<String>,
    pub secrets: Vec<String>,
    pub priority: Option<u8>,
    pub max_attempts: Option<u32>,
    pub timeout_s: Option<u64>,
}

impl TaskRequest {
    /// Checks every field and fills defaults. Labels come back sorted and unique.
    pub fn validate(self) -> Result<NewTask, Error> {
        let invalid = |m: String| Err(Error::InvalidTask(m));
        if !labels::is_valid_name(&self.kind) {
            return invalid(format!("kind must be {}", labels::NAME_RULE));
        }
        let labels = labels::normalize(self.labels).map_err(Error::InvalidTask)?;
        let mut secrets = self.secrets;
        if secrets.len() > secrets::MAX_PER_TASK {
            return invalid(format!("a task may name at most {} secrets", secrets::MAX_PER_TASK));
        }
        if let Some(bad) = secrets.iter().find_map(|s| secrets::check_name(s).err()) {
            return invalid(bad);
        }
        secrets.sort();
        secrets.dedup();
        let priority = self.priority.unwrap_or(DEFAULT_PRIORITY);
        if priority > MAX_PRIORITY {
            return invalid(format!("priority must be 0-{MAX_PRIORITY} (higher runs first)"));
        }
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            return invalid(format!("max_attempts must be 1-{MAX_ATTEMPTS_LIMIT}"));
        }
        let timeout = self.timeout_s.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return invalid(format!("timeout_s must be 1-{}", MAX_TIMEOUT.as_secs()));
        }
        Ok(NewTask { kind: self.kind, input: self.input, labels, secrets, priority, max_attempts, timeout })
    }
}

/// How long to wait before attempt `attempts + 1`, after `attempts` failed.
pub fn retry_delay(attempts: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: &str) -> TaskRequest {
        TaskRequest { kind: kind.into(), input: b"{}".to_vec(), ..TaskRequest::default() }
    }

    #[test]
    fn validation_fills_defaults_and_names_the_bad_field() {
        let ok = req("echo").validate().unwrap();
        assert_eq!(
            (ok.priority, ok.max_attempts, ok.timeout),
            (DEFAULT_PRIORITY, DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT)
        );
        let cases: [(TaskRequest, &str); 6] = [
            (req(""), "kind"),
            (req("has space"), "kind"),
            (TaskRequest { priority: Some(10), ..req("echo") }, "priority"),
            (TaskRequest { max_attempts: Some(0), ..req("echo") }, "max_attempts"),
            (TaskRequest { timeout_s: Some(0), ..req("echo") }, "timeout_s"),
            (TaskRequest { labels: vec!["gpu".into(), "a/b".into()], ..req("echo") }, "label"),
        ];
        for (r, field) in cases {
            match r.validate() {
                Err(Error::InvalidTask(m)) => {
                    assert!(m.contains(field), "{m} should mention {field}")
                }
                other => panic!("expected an error about {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn labels_are_sorted_and_deduplicated() {
        let t = TaskRequest { labels: vec!["b".into(), "a".into(), "b".into()], ..req("echo") }.validate().unwrap();
        assert_eq!(t.labels, ["a", "b"]);
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let b = Duration::from_secs(1);
        let cap = Duration::from_secs(10);
        let got: Vec<u64> = (1..=6).map(|a| retry_delay(a, b, cap).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(retry_delay(200, b, cap), cap);
    }
}
