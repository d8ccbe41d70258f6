//! The worker protocol: the routes of the worker gateway and the JSON bodies
//! the appliance and the worker agent exchange over them, one definition for
//! both sides so they cannot drift apart.
//!
//! Requests refuse fields they do not know (a typo is an error, not a
//! silently ignored option); replies accept them, so a worker keeps working
//! against a newer appliance that says more.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// Enrollment: a token and a CSR, on a connection without a certificate.
pub const ENROLL: &str = "/worker/v1/enroll";
/// The long poll for tasks.
pub const POLL: &str = "/worker/v1/poll";
/// A heartbeat for a leased task (route pattern; see [`heartbeat_path`]).
pub const HEARTBEAT: &str = "/worker/v1/tasks/{id}/heartbeat";
/// A leased task's report (route pattern; see [`complete_path`]).
pub const COMPLETE: &str = "/worker/v1/tasks/{id}/complete";
/// What a running task's worker reports: progress, output (route pattern;
/// see [`progress_path`]).
pub const PROGRESS: &str = "/worker/v1/tasks/{id}/progress";
/// What a worker runs: its handlers, and the commands and their
/// parameters (sent once it reached the broker; the agent card's skills).
pub const OFFERS: &str = "/worker/v1/offers";
/// Certificate renewal, with the current certificate.
pub const RENEW: &str = "/worker/v1/renew";

/// [`HEARTBEAT`] for `task`.
pub fn heartbeat_path(task: &str) -> String {
    HEARTBEAT.replace("{id}", task)
}

/// [`PROGRESS`] for `task`.
pub fn progress_path(task: &str) -> String {
    PROGRESS.replace("{id}", task)
}

/// [`COMPLETE`] for `task`.
pub fn complete_path(task: &str) -> String {
    COMPLETE.replace("{id}", task)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub csr_pem: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Enrolled {
    pub worker_id: String,
    pub cert_pem: String,
    /// Every CA the worker must trust.
    pub ca_pem: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// How many tasks the worker can take now (default 1).
    pub max_tasks: Option<u32>,
    /// How long the appliance may hold the poll open (default: its maximum).
    pub wait_s: Option<u64>,
}

/// A secret delivered with a lease: wiped when dropped, masked in Debug.
#[derive(Serialize, Deserialize)]
pub struct DeliveredSecret {
    pub name: String,
    pub version: u32,
    value_base64: Zeroizing<String>,
}

impl DeliveredSecret {
    pub fn new(name: String, version: u32, value: &[u8]) -> DeliveredSecret {
        let value_base64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(value));
        DeliveredSecret { name, version, value_base64 }
    }

    /// The value's bytes; `None` if what arrived does not decode.
    pub fn value(&self) -> Option<Zeroizing<Vec<u8>>> {
        base64::engine::general_purpose::STANDARD.decode(self.value_base64.as_bytes()).ok().map(Zeroizing::new)
    }
}

impl std::fmt::Debug for DeliveredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeliveredSecret({}@{}, ***)", self.name, self.version)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LeasedTask {
    pub id: String,
    pub kind: String,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<DeliveredSecret>,
    pub lease_id: String,
    /// RFC 3339.
    pub lease_expires_at: String,
    pub timeout_s: u64,
    pub attempt: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PollReply {
    pub tasks: Vec<LeasedTask>,
    pub lease_s: u64,
    pub heartbeat_s: u64,
    /// During a CA rotation: every CA the worker must trust from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// During a CA rotation: this worker's newest certificate is from a CA
    /// that does not issue now, so it should renew at once, not when due.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub renew_now: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_id: String,
}

/// What a worker runs, as its `worker.toml` says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offers {
    /// The task kinds it takes: `echo`, `command`, `llm.chat`.
    pub kinds: Vec<String>,
    /// For `command`: each command it allows and its parameters, as a JSON
    /// Schema of the `params` object.
    #[serde(default)]
    pub commands: Vec<OfferedCommand>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferedCommand {
    pub name: String,
    pub params_schema: serde_json::Value,
}

/// A running task's progress and output since the last report; at least
/// one of the three.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    pub lease_id: String,
    /// 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the task printed since the last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProgressReply {
    /// The number of the last event the report added to the task's log.
    pub seq: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The task was cancelled: stop working on it.
    pub cancel: bool,
    /// RFC 3339.
    pub lease_expires_at: String,
}

/// What a worker reports for a leased task.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "outcome")]
pub enum Report {
    Succeeded { lease_id: String, result: Value },
    Failed { lease_id: String, error: ReportedError },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedError {
    /// A stable, machine-readable code (1-64 characters).
    pub code: String,
    pub message: String,
    /// Whether another attempt could succeed.
    #[serde(default)]
    pub retryable: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CompleteReply {
    /// The task's state after the report: `succeeded`, `failed`, or
    /// `queued` when a failure will be retried.
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Renewed {
    pub cert_pem: String,
    /// Every CA the worker must trust.
    pub ca_pem: String,
    /// RFC 3339.
    pub not_after: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_tagged_by_its_outcome_and_refuses_unknown_fields() {
        let failed = Report::Failed {
            lease_id: "l".into(),
            error: ReportedError { code: "timeout".into(), message: "took too long".into(), retryable: true },
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["error"]["code"], "timeout");
        let typo = serde_json::json!({"outcome": "succeeded", "lease_id": "l", "result": {}, "reslt": 1});
        assert!(serde_json::from_value::<Report>(typo).is_err());
    }

    #[test]
    fn a_reply_with_fields_this_worker_does_not_know_still_reads() {
        let newer = serde_json::json!({"cancel": false, "lease_expires_at": "2026-12-03T00:00:00Z", "hint": 1});
        assert!(!serde_json::from_value::<HeartbeatReply>(newer).unwrap().cancel);
    }

    #[test]
    fn a_delivered_secret_round_trips_and_never_shows_its_value() {
        let secret = DeliveredSecret::new("db".into(), 3, b"hunter2");
        assert_eq!(format!("{secret:?}"), "DeliveredSecret(db@3, ***)");
        let back: DeliveredSecret = serde_json::from_value(serde_json::to_value(&secret).unwrap()).unwrap();
        assert_eq!(back.value().unwrap().as_slice(), b"hunter2");
        assert_eq!(complete_path("t1"), "/worker/v1/tasks/t1/complete");
    }
}
