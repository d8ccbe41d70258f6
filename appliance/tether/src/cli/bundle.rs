//! `tether bundle verify`: what a release bundle holds and whether it
//! verifies, before anyone installs it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::progress::{Meter, size};
use super::release::TrustArgs;
use tether_domain::release;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check a release bundle's signature (the pinned release key, or one
    /// named with --trust) and every file's SHA-256; list what it holds.
    /// Exits 0 if it verifies, 1 if not.
    Verify {
        bundle: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Verify { bundle, trust } => {
            let trusted = trust.keys()?;
            let mut meter = Meter::new();
            let verified = release::verify(&bundle, &trusted, &mut |p| meter.show(p.stage, p.done, p.total))
                .map_err(|e| anyhow::anyhow!("{} does NOT verify: {e}", bundle.display()))?;
            let manifest = &verified.manifest;
            let signer = trust.describe(&trusted, &verified.key_id);
            println!("{}", bundle.display());
            println!("  release      tether {} (replaces {} or later)", manifest.version, manifest.min_version);
            println!("  commit       {} (built {})", manifest.commit, manifest.built);
            println!("  signed by    {signer}");
            println!("  files        {} ({})", manifest.files.len(), size(manifest.total_bytes()));
            for file in &manifest.files {
                println!("    {:<34} {:>10}  sha256:{}", file.path, size(file.size), file.sha256);
            }
            println!("verified: the signature and every file's SHA-256 check out");
            Ok(ExitCode::SUCCESS)
        }
    }
}
