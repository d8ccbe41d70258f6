//! The Agent2Agent protocol (A2A 1.0, with the 0.3 names as aliases): the
//! agent card (`card.rs`), the JSON-RPC endpoint over the broker's tasks
//! (`endpoint.rs`), its streams built from the tasks' event logs
//! (`stream.rs`), what the two share (`tasks.rs`: a task shown, a message
//! made a task), and the protocol's shapes (`wire.rs`).

pub mod card;
pub mod endpoint;
mod stream;
mod tasks;
pub mod wire;
