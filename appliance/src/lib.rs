pub mod audit;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod ids;
pub mod pki;
pub mod secret;
pub mod store;
