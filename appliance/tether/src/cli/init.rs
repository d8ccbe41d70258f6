//! `tether init`: lay out a new data directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;

use tether_api::config::{CONFIG_FILE, RawConfig};
use tether_base::clock::{Clock, SystemClock};
use tether_base::crypto::CryptoPolicy;
use tether_base::files::{read_secret, write_private, write_with_mode};
use tether_domain::audit::{self, Event, Origin, Resource};
use tether_domain::auth::{self, Role};
use tether_domain::pki::{self, CA_CERT, Ca, SERVER_CERT, SERVER_KEY};
use tether_domain::vault::{self, Choice, Material};
use tether_store::{self as store, Store};

/// The first console account `init` makes.
pub const FIRST_ADMIN: &str = "admin";

/// How the vault is unsealed; chosen once, at init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnsealMethod {
    /// k of n shares, one per security officer (two-person integrity).
    Shares,
    /// A passphrase (stretched with Argon2id).
    Passphrase,
    /// A key file on separate media, for unattended sites.
    KeyFile,
}

/// How the vault will be unsealed: chosen at `init` (or `upgrade`).
#[derive(Debug, clap::Args)]
pub struct UnsealChoice {
    /// How the vault will be unsealed after every start.
    #[arg(long, value_enum, default_value = "shares")]
    unseal: UnsealMethod,
    /// Shares to make (with --unseal shares).
    #[arg(long, default_value_t = 5)]
    shares: u8,
    /// Shares needed to unseal (with --unseal shares).
    #[arg(long, default_value_t = 3)]
    threshold: u8,
    /// File holding the passphrase, or `-` for stdin (with --unseal passphrase).
    #[arg(long)]
    pub(super) passphrase_file: Option<PathBuf>,
    /// Where to write the unseal key (with --unseal key-file); keep it on
    /// separate media, not in the data directory.
    #[arg(long)]
    pub(super) key_file: Option<PathBuf>,
}

impl UnsealChoice {
    /// The choice, its passphrase read, and where a key file goes.
    pub(super) fn read(&self) -> anyhow::Result<(Choice, Option<PathBuf>)> {
        Ok(match self.unseal {
            UnsealMethod::Shares => (Choice::Shares { threshold: self.threshold, count: self.shares }, None),
            UnsealMethod::Passphrase => {
                let source = self.passphrase_file.as_deref().context(
                    "--unseal passphrase needs --passphrase-file FILE (mode 600) or --passphrase-file - (stdin)",
                )?;
                (Choice::Passphrase(read_secret(source)?), None)
            }
            UnsealMethod::KeyFile => {
                let path =
                    self.key_file.clone().context("--unseal key-file needs --key-file PATH (on separate media)")?;
                (Choice::KeyFile, Some(path))
            }
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    dir: super::DataDir,
    /// Extra DNS name or IP address for the server certificate (repeatable).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    #[command(flatten)]
    unseal: UnsealChoice,
    /// FIPS mode: only FIPS 140-3 approved algorithms (TLS with AES-GCM on
    /// P-256/P-384, ECDSA keys, PBKDF2 for the passphrase). See the README
    /// for which build also uses a validated module.
    #[arg(long)]
    fips: bool,
    /// Never prompt (the default; kept for scripts written against the contract).
    #[arg(long)]
    non_interactive: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = args.non_interactive;
    let (choice, key_file) = args.unseal.read()?;
    let policy = if args.fips { CryptoPolicy::FIPS } else { CryptoPolicy::STANDARD };
    let outcome = initialise(&args.dir.data_dir, &args.server_names, policy, choice, key_file.as_deref())?;
    if args.json {
        super::print_json(&outcome)?;
    } else {
        println!("Initialised {}", outcome.data_dir.display());
        println!("CA certificate: {} ({})", outcome.ca_file.display(), outcome.ca_fingerprint);
        println!("Admin token (shown once; store it safely):\n  {}", outcome.admin_token);
        println!(
            "Console login (shown once): {} / {}\n  Choose your own password and set up TOTP at the first login.",
            outcome.admin_user,
            outcome.admin_password.as_str()
        );
        print_unseal_material(&outcome.unseal);
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands out the unseal material: writes the key file (for a key-file
/// method) and says what to show the operator.
pub(super) fn hand_out(
    method: &vault::Method,
    material: &Material,
    key_file: Option<&Path>,
) -> anyhow::Result<UnsealOutcome> {
    let mut unseal = UnsealOutcome { method: method.name(), shares: Vec::new(), threshold: None, key_file: None };
    match (material, method) {
        (Material::Shares(texts), vault::Method::Shares { threshold, .. }) => {
            unseal.shares = texts.clone();
            unseal.threshold = Some(*threshold);
        }
        (Material::KeyFile(text), _) => {
            let path = key_file.context("a key file path is needed for --unseal key-file")?;
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

pub(super) fn print_unseal_material(u: &UnsealOutcome) {
    match (u.method, &u.key_file) {
        ("shares", _) => {
            let n = u.shares.len();
            let k = u.threshold.unwrap_or(0);
            println!("\nUnseal shares (shown once). Give one to each security officer; any {k} of {n} unseal:");
            for s in &u.shares {
                println!("  {}", s.as_str());
            }
        }
        (_, Some(path)) => {
            println!("\nUnseal key written to {}.", path.display());
            println!("Keep it on separate media: anyone holding it can read this appliance's data.");
        }
        _ => println!("\nThe vault unseals with your passphrase. It cannot be recovered if lost."),
    }
    println!("The appliance starts sealed: run `tether unseal` after each start.");
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
    let server =
        ca.issue_server_cert(&names, now, config.server_cert_lifetime).context("issuing the server certificate")?;
    write_with_mode(&dir.join(CA_CERT), ca_material.cert_pem.as_bytes(), 0o644)?;
    write_private(&dir.join(SERVER_KEY), server.key_pem.as_bytes())?;
    write_with_mode(&dir.join(SERVER_CERT), server.cert_pem.as_bytes(), 0o644)?;
    let unseal = hand_out(&method, &material, key_file)?;

    let store = Store::create(&dir).context("creating the store")?;
    let fingerprint = ca.fingerprint();
    let genesis_fp = fingerprint.clone();
    let ca_key_pem = zeroize::Zeroizing::new(ca_material.key_pem.clone());
    let admin_password = auth::password::generate()?;
    let admin_hash = auth::password::PasswordHash::new(policy, FIRST_ADMIN, &admin_password)?;
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
        auth::users::add(tx, now, &origin, "tether", FIRST_ADMIN, Role::Admin, admin_hash)?;
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
