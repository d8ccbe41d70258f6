//! `tether release`: making and signing release bundles. `keygen` makes
//! the key pairs that sign them (ECDSA P-256, FIPS 186-5); `pack` signs a
//! staged release directory into a bundle (`scripts/make-bundle.sh` stages
//! it). The release key's public half is pinned in every binary
//! (`installer/release-key.pub`); its private half stays with the release
//! manager, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::keyfile::{read_private_key, read_public_key};
use super::progress::{Meter, size};
use tether_base::crypto::p256::{PrivateKey, PublicKey};
use tether_domain::release::{self, About, Version};

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
    /// Sign the release staged in DIR (tether, systemd/…, optionally
    /// tether-fips, README.md, models/*.tar, firmware/*) into a bundle.
    Pack {
        /// The staged release, laid out as the bundle holds it.
        #[arg(long)]
        dir: PathBuf,
        /// The release key (PKCS#8 PEM) it is signed with.
        #[arg(long)]
        key: PathBuf,
        /// Where the bundle goes.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        build: BuildArgs,
        /// The oldest installed version it may upgrade.
        #[arg(long)]
        min_version: Version,
    },
}

/// The build a signed bundle holds (a release bundle, an image bundle).
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The release's version (MAJOR.MINOR.PATCH), as its binary says.
    #[arg(long, value_name = "VERSION")]
    pub release_version: Version,
    /// The commit it was built from (40 hex digits).
    #[arg(long)]
    pub commit: String,
    /// That commit's date (RFC 3339).
    #[arg(long)]
    pub built: String,
}

/// The keys a release bundle may be signed by: the pinned release key, and
/// any named with `--trust`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// Also trust bundles signed by this public key (PEM; repeatable): for
    /// a site that re-signs releases, and for tests.
    #[arg(long = "trust", value_name = "PUBKEY")]
    trust: Vec<PathBuf>,
}

impl TrustArgs {
    pub fn keys(&self) -> anyhow::Result<Vec<PublicKey>> {
        let mut keys = vec![release_key()];
        for path in &self.trust {
            keys.push(read_public_key(path)?);
        }
        Ok(keys)
    }

    /// Which of `keys` has the id `key_id`, as the operator knows it.
    pub fn describe(&self, keys: &[PublicKey], key_id: &str) -> String {
        match keys.iter().position(|k| k.id() == key_id) {
            Some(0) => format!("{} (the release key this tether pins)", keys[0].fingerprint()),
            Some(i) => format!("{} (named with --trust {})", keys[i].fingerprint(), self.trust[i - 1].display()),
            None => key_id.to_owned(),
        }
    }
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
        Command::Pack { dir, key, out, build, min_version } => {
            let key = read_private_key(&key)?;
            let about = About { version: build.release_version, min_version, commit: build.commit, built: build.built };
            let mut meter = Meter::new();
            let manifest = release::pack(&dir, about, &key, &out, &mut |p| meter.show(p.stage, p.done, p.total))?;
            println!(
                "packed tether {} ({} files, {}) signed by {}",
                manifest.version,
                manifest.files.len(),
                size(manifest.total_bytes()),
                key.public().fingerprint()
            );
            println!("{}", out.display());
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
