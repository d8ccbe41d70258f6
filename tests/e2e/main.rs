//! End-to-end suites: the real `tether` binary, real TLS, the real store.

// Test code states its expectations with unwrap/expect/panic; the
// production lints against them do not apply here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod a2a;
mod abuse;
mod audit;
mod browser;
mod console;
mod crypto;
mod disk;
mod fake_llm;
mod harness;
mod image;
mod install;
mod lifecycle;
mod listener_certs;
mod llm;
mod llm_clients;
mod llm_features;
mod metrics;
mod models;
mod operations;
mod people;
mod posture;
mod progress;
mod renewal;
mod resilience;
mod rotation;
mod screen;
mod scripting;
mod security;
mod sso;
mod supervision;
mod units;
mod upgrade;
mod usb_writer;
mod vault;
