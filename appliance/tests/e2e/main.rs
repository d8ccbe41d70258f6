//! End-to-end suites: the real `tether` binary, real TLS, the real store.

mod harness;
mod lifecycle;
mod resilience;
mod security;
