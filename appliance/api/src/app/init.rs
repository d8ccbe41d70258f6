//! Making a data directory: the store, the vault and its unseal material,
//! the CA and the server certificate, the first admin (an account and a
//! bootstrap token), and the genesis audit record. `tether init` and
//! `tether serve --dev` call it; so do tests.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::{CONFIG_FILE, RawConfig};
use tether_base::clock::{Clock, SystemClock};
use tether_base::crypto::CryptoPolicy;
use tether_base::files::{write_private, write_with_mode};
use tether_domain::audit::{self, Event, Origin, Resource};
use tether_domain::auth::{self, Role};
use tether_domain::pki::{self, CA_CERT, Ca, SERVER_CERT, SERVER_KEY};
use tether_domain::vault::{self, Choice, Material};
use tether_store::{self as store, Store};

/// The first console account's name.
pub const FIRST_ADMIN: &str = "admin";
/// In `serve --dev`, where the first admin token is kept so later starts can show it.
pub const DEV_TOKEN_FILE: &str = "dev-admin-token";
/// In `serve --dev`, the unseal key file, kept (unlike on a real site) in the data directory.
pub const DEV_UNSEAL_KEY_FILE: &str = "dev-unseal.key";

/// The unseal material `init` hands out, once.
#[derive(Serialize)]
pub struct UnsealOutcome {
    pub method: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<zeroize::Zeroizing<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The key file's content when no path was given to write it to (the
    /// setup wizard hands it to the browser); never in `init --json`.
    #[serde(skip)]
    pub key_file_content: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for UnsealOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsealOutcome").field("method", &self.method).finish_non_exhaustive()
    }
}

/// What `init` hands back: shown once, then gone.
#[derive(Serialize)]
pub struct InitOutcome {
    pub admin_token: String,
    /// The first console account; its password must be changed (and a
    /// second factor set up) at the first login.
    pub admin_user: String,
    pub admin_password: zeroize::Zeroizing<String>,
    pub ca_fingerprint: String,
    pub ca_file: PathBuf,
    pub data_dir: PathBuf,
    pub unseal: UnsealOutcome,
}

impl std::fmt::Debug for InitOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOutcome").field("ca_fingerprint", &self.ca_fingerprint).finish_non_exhaustive()
    }
}

/// Hands out the unseal material: writes the key file (for a key-file
/// method) to `key_file`, or without a path keeps its content for the
/// caller to hand on, and says what to show the operator.
pub fn hand_out(method: &vault::Method, material: &Material, key_file: Option<&Path>) -> anyhow::Result<UnsealOutcome> {
    let mut unseal = UnsealOutcome {
        method: method.name(),
        shares: Vec::new(),
        threshold: None,
        key_file: None,
        key_file_content: None,
    };
    match (material, method) {
        (Material::Shares(texts), vault::Method::Shares { threshold, .. }) => {
            unseal.shares = texts.clone();
            unseal.threshold = Some(*threshold);
        }
        (Material::KeyFile(text), _) => {
            let Some(path) = key_file else {
                unseal.key_file_content = Some(text.clone());
                return Ok(unseal);
            };
            if path.exists() {
                bail!("{} already exists; the unseal key is never overwritten", path.display());
            }
            write_private(path, text.as_bytes())?;
            unseal.key_file = Some(path.canonicalize()?);
        }
        _ => {}
    }
    Ok(unseal)
}

/// Creates the data directory and everything in it. `key_file` is where the
/// unseal key goes for [`Choice::KeyFile`] (it must not exist yet).
pub fn initialise(
    dir: &Path,
    extra_names: &[String],
    policy: CryptoPolicy,
    choice: Choice,
    key_file: Option<&Path>,
) -> anyhow::Result<InitOutcome> {
    initialise_with(dir, InitOptions { extra_names, policy, choice, key_file, setup: None })
}

/// What `init` (or the setup wizard) decided.
#[derive(Debug)]
pub struct InitOptions<'a> {
    pub extra_names: &'a [String],
    pub policy: CryptoPolicy,
    pub choice: Choice,
    pub key_file: Option<&'a Path>,
    /// Set by the setup wizard: the first admin's own password, the key the
    /// setup certificate had, and what to audit of the setup.
    pub setup: Option<FromSetup>,
}

/// What the setup wizard brings to `init`.
pub struct FromSetup {
    /// The first admin chose it: no change is asked at the first login.
    pub admin_password: Zeroizing<String>,
    /// The server certificate keeps the key the setup mode's certificate had.
    pub server_key_pem: Zeroizing<String>,
    /// The setup's steps, audited after the appliance's first record.
    pub events: Vec<Event>,
}

impl std::fmt::Debug for FromSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromSetup").field("events", &self.events.len()).finish_non_exhaustive()
    }
}

/// As [`initialise`], with everything `options` says.
pub fn initialise_with(dir: &Path, options: InitOptions<'_>) -> anyhow::Result<InitOutcome> {
    let InitOptions { extra_names, policy, choice, key_file, setup } = options;
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
    let config = RawConfig::from_file(&dir.join(CONFIG_FILE), false)?.validate(dir.clone())?;
    let mut names = config.server_names.clone();
    names.extend(extra_names.iter().cloned());

    let (method, unseal_key, material) = vault::unseal::prepare(policy, choice)?;
    let now = SystemClock.now();
    let (ca, ca_material) = Ca::create(now).context("creating the CA")?;
    let server = match &setup {
        Some(from) => ca.issue_server_cert_for_key(&from.server_key_pem, &names, now, config.server_cert_lifetime),
        None => ca.issue_server_cert(&names, now, config.server_cert_lifetime),
    }
    .context("issuing the server certificate")?;
    write_with_mode(&dir.join(CA_CERT), ca_material.cert_pem.as_bytes(), 0o644)?;
    write_private(&dir.join(SERVER_KEY), server.key_pem.as_bytes())?;
    write_with_mode(&dir.join(SERVER_CERT), server.cert_pem.as_bytes(), 0o644)?;
    let unseal = hand_out(&method, &material, key_file)?;

    let store = Store::create(&dir).context("creating the store")?;
    let fingerprint = ca.fingerprint();
    let genesis_fp = fingerprint.clone();
    let ca_key_pem = zeroize::Zeroizing::new(ca_material.key_pem.clone());
    let (admin_password, chosen) = match &setup {
        Some(from) => {
            auth::password::check_strength(FIRST_ADMIN, &from.admin_password)?;
            (from.admin_password.clone(), true)
        }
        None => (auth::password::generate()?, false),
    };
    let admin_hash = auth::password::PasswordHash::new(policy, FIRST_ADMIN, &admin_password)?;
    let setup_events = setup.map(|s| s.events).unwrap_or_default();
    let token_expires = now.plus(config.token_ttl);
    let (_, admin_token) = store.write_blocking(move |tx| {
        let origin = Origin::system();
        let genesis = Event::new("system.initialised", "init", Resource::new("appliance", "tether"))
            .detail("ca_fingerprint", genesis_fp)
            .detail("crypto_mode", policy.mode.as_str())
            .detail("version", env!("CARGO_PKG_VERSION"));
        audit::append(tx, now, &origin, genesis)?;
        tether_domain::vault::crypto_mode::store_mode(tx, policy.mode)?;
        let keys = vault::create(tx, now, &origin, method, &unseal_key)?;
        pki::store_ca_key(tx, &keys, pki::CaSlot::Current, &ca_key_pem)?;
        for event in setup_events {
            audit::append(tx, now, &origin, event)?;
        }
        let admin = auth::users::add(tx, now, &origin, "tether", FIRST_ADMIN, Role::Admin, admin_hash)?;
        if chosen {
            // The admin chose it in the wizard: only TOTP is left to set up.
            auth::users::set_password(tx, now, &origin, FIRST_ADMIN, admin.password, false, None)?;
        }
        // The bootstrap token expires like any other: the first admin's
        // account (password and TOTP) is the lasting way in.
        let token = auth::tokens::NewToken {
            owner: FIRST_ADMIN.into(),
            role: Role::Admin,
            holder: auth::tokens::Holder::Person(FIRST_ADMIN.into()),
            expires_at: token_expires,
        };
        Ok::<_, anyhow::Error>(auth::issue_token(tx, now, &origin, token)?)
    })?;
    Ok(InitOutcome {
        admin_token,
        admin_user: FIRST_ADMIN.into(),
        admin_password,
        ca_fingerprint: fingerprint,
        ca_file: dir.join(CA_CERT),
        data_dir: dir,
        unseal,
    })
}
