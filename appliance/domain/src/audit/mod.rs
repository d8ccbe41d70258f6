//! The audit log: an append-only hash chain in the store.
//!
//! Every state change appends its record inside the same write transaction
//! as the change ([`append`] takes the [`WriteTx`]), so there is no action
//! without a record and no record without its action.
//!
//! Each record is stored as its canonical encoding — compact JSON with the
//! fields in the order of [`Record`] — together with
//! `hash = SHA-256(prev_hash || canonical)`. The exact hashed bytes are kept,
//! so verification never depends on re-serialising. The chain head (last seq
//! and hash) is stored too, so deleting the newest records is detected.
//!
//! Audit records never carry secrets: token secrets, task inputs and results
//! stay out; tokens appear by their public id only.

pub mod alerts;
pub(crate) mod chain;
pub mod search;
pub mod siem;
pub mod sinks;
pub mod tally;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use chain::{
    Head, LOG_TABLE, Verified, VerifyError, anchor, append, export_jsonl, head, newest_time, record_at, time_of,
    verify, verify_from,
};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: ActorKind,
    pub id: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An API token (its public id, never the secret).
    Token,
    /// An enrolled worker, by its certificate identity.
    Worker,
    /// The appliance itself (lease expiry, init).
    System,
    /// Someone who has not (successfully) authenticated.
    Anonymous,
    /// A person signed in to the console (by account name).
    User,
}

impl Actor {
    pub fn system() -> Actor {
        Actor { kind: ActorKind::System, id: "tether".into(), roles: Vec::new() }
    }

    pub fn anonymous() -> Actor {
        Actor { kind: ActorKind::Anonymous, id: "-".into(), roles: Vec::new() }
    }
}

/// Where a request came from; carried into every record it causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub actor: Actor,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Origin {
    pub fn system() -> Origin {
        Origin { actor: Actor::system(), source_ip: None, user_agent: None }
    }

    /// `tether install`, run by the operator at the host while the
    /// appliance is stopped.
    pub fn installer() -> Origin {
        Origin {
            actor: Actor { kind: ActorKind::System, id: "installer".into(), roles: Vec::new() },
            ..Origin::system()
        }
    }
}

/// What was touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl Resource {
    pub fn new(kind: &str, id: impl ToString) -> Resource {
        Resource { kind: kind.into(), id: id.to_string() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

/// One thing that happened, before it is placed in the chain.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: &'static str,
    pub action: &'static str,
    pub resource: Resource,
    pub outcome: Outcome,
    /// Event-specific facts (attempt numbers, lease ids, reasons). Never secrets.
    pub details: BTreeMap<String, String>,
}

impl Event {
    pub fn new(event_type: &'static str, action: &'static str, resource: Resource) -> Event {
        Event { event_type, action, resource, outcome: Outcome::Success, details: BTreeMap::new() }
    }

    pub fn outcome(mut self, outcome: Outcome) -> Event {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, key: &str, value: impl ToString) -> Event {
        self.details.insert(key.into(), value.to_string());
        self
    }
}

/// The whitepaper's metadata block, plus event details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// A record as it stands in the chain. Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub timestamp: String,
    pub event_type: String,
    pub actor: Actor,
    pub resource: Resource,
    pub action: String,
    pub result: Outcome,
    pub metadata: Metadata,
    /// Hex SHA-256 of the previous record (all zeros for the genesis record).
    pub prev_hash: String,
}

#[cfg(test)]
mod tests;
