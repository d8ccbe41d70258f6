//! In-process suites: the composition root started on loopback port 0 from
//! a data directory made the way `tether init` makes one (real store, real
//! TLS), and the API's rules driven through the console router without
//! sockets, time moved by a manual clock instead of waited for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod composition;
mod console;
mod firmware;
mod live;
mod roles;
mod site;
mod support;
mod time_rules;
