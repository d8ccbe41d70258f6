//! The `tether` binary's library: the command line (`cli`: one module per
//! subcommand, glue between flags and the crates below) and the worker
//! agent (`worker`), which runs on the site's hosts and only connects out;
//! the installer (`install`), which puts a verified release bundle on a host;
//! the firmware image's A/B update (`firmware`).

pub mod cli;
pub mod firmware;
pub mod install;
pub mod worker;
