//! The LLM gateway: people's tools call the appliance as if it were OpenAI
//! (or Ollama), with a virtual key; the appliance forwards to the site's own
//! model servers, shaped by the key's enforcement level, and accounts for
//! every call in the audit log.
//!
//! [`keys`] are the virtual keys, [`limits`] their per-minute limits,
//! [`upstreams`] the model servers, [`prompts`] the enforcement levels'
//! system prompts, [`design_first`] the code withholding of that level,
//! [`wire`] the two protocols, [`usage`] the counts per day, and [`gateway`]
//! the service that relays a request.

pub mod bundle;
mod call;
pub mod design_first;
pub mod gateway;
pub mod keys;
pub mod limits;
pub mod models;
pub mod prompt_log;
pub mod prompts;
mod relay;
pub mod upstreams;
pub mod usage;
pub mod wire;

pub use gateway::{Answer, GATEWAY_ROUTES, Gateway, GatewayError, Operation, Reply};
