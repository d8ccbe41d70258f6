//! `tether release keygen`: the key pairs that sign release bundles (ECDSA
//! P-256, FIPS 186-5). The release key's public half is pinned in every
//! binary (`installer/release-key.pub`); its private half stays with the
//! release manager, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use tether_base::crypto::p256::{PrivateKey, PublicKey};

/// The release key every build trusts, pinned at compile time.
pub const RELEASE_KEY_PEM: &str = include_str!("../../../../installer/release-key.pub");

/// The pinned release key.
pub fn release_key() -> PublicKey {
    PublicKey::from_pem(RELEASE_KEY_PEM).unwrap_or_else(|e| unreachable!("installer/release-key.pub: {e}"))
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a signing key pair: OUT (the private key, PKCS#8 PEM, mode 0600)
    /// and OUT.pub (the public key, to pin or to name with --trust).
    Keygen {
        /// Where the private key goes; neither it nor OUT.pub may exist yet.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Keygen { out } => {
            let public_path = PathBuf::from(format!("{}.pub", out.display()));
            for path in [&out, &public_path] {
                if path.exists() {
                    bail!("{} already exists; a signing key is never overwritten", path.display());
                }
            }
            let public = write_key_pair(&out, &public_path)?;
            println!("private key {} (keep it offline)", out.display());
            println!("public key  {} ({})", public_path.display(), public.fingerprint());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Makes a P-256 key pair: the private key at `private` (PKCS#8 PEM, mode
/// 0600), the public one at `public` (PEM). Answers the public key.
pub fn write_key_pair(private: &std::path::Path, public: &std::path::Path) -> anyhow::Result<PublicKey> {
    let key = PrivateKey::generate()?;
    tether_base::files::write_private(private, key.to_pem().as_bytes())
        .with_context(|| format!("cannot write {}", private.display()))?;
    std::fs::write(public, key.public().to_pem()).with_context(|| format!("cannot write {}", public.display()))?;
    Ok(key.public())
}

/// What `tether --version` says: the version, the commit it was built
/// from and that commit's date, FIPS or not, and the release key trusted.
pub fn version_text() -> String {
    let epoch: i64 = env!("TETHER_COMMIT_EPOCH").parse().unwrap_or(0);
    let date = time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{}\ncommit      {}\nbuilt       {date} (the commit's date)\nfips        {}\nrelease key {}",
        env!("CARGO_PKG_VERSION"),
        env!("TETHER_COMMIT"),
        if cfg!(feature = "fips") { "yes" } else { "no" },
        release_key().fingerprint()
    )
}
