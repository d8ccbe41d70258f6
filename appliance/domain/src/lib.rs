//! The services: each owns its transactions and writes its own audit
//! records, refusals included, in the same transaction as the change.
//!
//! From the bottom up (a module imports only those below it): the audit
//! log ([`audit`]); the vault ([`vault`]); the audit log as evidence
//! outside the appliance ([`evidence`]); the local CA and the worker
//! registry ([`pki`]); people and credentials ([`auth`]); the task broker
//! ([`broker`]); the LLM gateway ([`llm`]); and the jobs over them: the
//! disk's reserve ([`disk`]), the traffic watches ([`monitor`]), backups
//! ([`backup`]) and the upgrade of old data directories ([`upgrade`]).
//! Beside them, the signed bundles that carry models and releases into the
//! site ([`signed_bundle`], [`release`]), and the firmware image's update
//! that a release bundle may carry ([`firmware`]).

pub mod audit;
pub mod auth;
pub mod backup;
pub mod broker;
pub mod disk;
pub mod evidence;
pub mod firmware;
pub mod llm;
pub mod metrics;
pub mod monitor;
pub mod pki;
pub mod posture;
pub mod release;
pub mod signed_bundle;
pub mod upgrade;
pub mod vault;
