//! `tether init`: lay out a new data directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
pub use tether_api::app::init::{FIRST_ADMIN, UnsealOutcome, hand_out, initialise};
use tether_base::crypto::CryptoPolicy;
use tether_base::files::read_secret;
use tether_domain::vault::Choice;

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
