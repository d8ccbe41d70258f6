//! `tether init`: lay out a new data directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::audit::{self, Event, Origin, Resource};
use crate::auth::{self, Role};
use crate::clock::{Clock, SystemClock};
use crate::config::{CONFIG_FILE, RawConfig};
use crate::files::{write_private, write_with_mode};
use crate::pki::Ca;
use crate::store::{self, Store};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    dir: super::DataDir,
    /// Extra DNS name or IP address for the server certificate (repeatable).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Never prompt (the default; kept for scripts written against the contract).
    #[arg(long)]
    non_interactive: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What `init` hands back: shown once, then gone.
#[derive(Serialize)]
pub struct InitOutcome {
    pub admin_token: String,
    pub ca_fingerprint: String,
    pub ca_file: PathBuf,
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for InitOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOutcome").field("ca_fingerprint", &self.ca_fingerprint).finish_non_exhaustive()
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = args.non_interactive;
    let outcome = initialise(&args.dir.data_dir, &args.server_names)?;
    if args.json {
        super::print_json(&outcome)?;
    } else {
        println!("Initialised {}", outcome.data_dir.display());
        println!("CA certificate: {} ({})", outcome.ca_file.display(), outcome.ca_fingerprint);
        println!("Admin token (shown once; store it safely):\n  {}", outcome.admin_token);
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the data directory and everything in it.
pub fn initialise(dir: &Path, extra_names: &[String]) -> anyhow::Result<InitOutcome> {
    if dir.join(store::DB_FILE).exists() {
        bail!("{} is already initialised (it holds {}); use another --data-dir", dir.display(), store::DB_FILE);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let dir = dir.canonicalize()?;
    let raw = RawConfig::from_file(&dir.join(CONFIG_FILE), false)?;
    let mut names = raw.server_names.unwrap_or_default();
    names.extend(extra_names.iter().cloned());

    let now = SystemClock.now();
    let (ca, material) = Ca::create(now).context("creating the CA")?;
    let server = ca.issue_server_cert(&names, now).context("issuing the server certificate")?;
    write_private(&dir.join(CA_KEY), material.key_pem.as_bytes())?;
    write_with_mode(&dir.join(CA_CERT), material.cert_pem.as_bytes(), 0o644)?;
    write_private(&dir.join(SERVER_KEY), server.key_pem.as_bytes())?;
    write_with_mode(&dir.join(SERVER_CERT), server.cert_pem.as_bytes(), 0o644)?;

    let store = Store::create(&dir).context("creating the store")?;
    let fingerprint = ca.fingerprint();
    let genesis_fp = fingerprint.clone();
    let (_, admin_token) = store.write_blocking(move |tx| {
        let origin = Origin::system();
        let genesis = Event::new("system.initialised", "init", Resource::new("appliance", "tether"))
            .detail("ca_fingerprint", genesis_fp)
            .detail("version", env!("CARGO_PKG_VERSION"));
        audit::append(tx, now, &origin, genesis)?;
        // The bootstrap token does not expire: an operator must not be locked
        // out of an offline appliance. Create scoped, expiring tokens with it.
        auth::issue_token(tx, now, &origin, "admin", Role::Admin, None)
    })?;
    Ok(InitOutcome { admin_token, ca_fingerprint: fingerprint, ca_file: dir.join(CA_CERT), data_dir: dir })
}
