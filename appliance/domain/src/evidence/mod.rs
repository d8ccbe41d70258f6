//! The audit log as evidence outside the appliance: the audit signing key
//! (sealed in the vault), signed checkpoints of the chain's head, sealed
//! exports and their offline verification, and retention, which moves old
//! records into signed segments with the chain anchored across the cut.
//!
//! Above the vault, which itself writes to the audit log; the log (`audit`)
//! knows nothing of keys.

pub mod checkpoints;
pub mod offline;
pub mod retention;
pub mod signing;
