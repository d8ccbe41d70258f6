//! `tether crypto mode fips|standard`: a security officer switches the
//! crypto mode, re-authenticating with the unseal credentials. It takes
//! effect at the next start (over the API: TETHER_URL, TETHER_TOKEN,
//! TETHER_CA_FILE).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use reqwest::Method;
use serde_json::json;

use super::client::ApiClient;
use super::vault::Credentials;

/// Re-wrapping a passphrase with PBKDF2 (600,000 rounds) takes a moment.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Switch between FIPS and standard mode (security officer; takes effect at the next start).
    #[command(after_help = "Give the unseal credentials again (--passphrase-file, a quorum of --share-file, or \
        --key-file): the change needs re-authentication. Refused while an active worker holds a key the new mode \
        does not allow (revoke it first). Going to FIPS re-wraps an Argon2id passphrase with PBKDF2. Audited.")]
    Mode {
        #[arg(value_parser = ["fips", "standard"])]
        mode: String,
        #[command(flatten)]
        current: Credentials,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Mode { mode, current, json } = cmd;
    let current = current.bodies()?;
    if current.is_empty() {
        bail!("re-authenticate with the unseal credentials: --passphrase-file, --share-file (a quorum) or --key-file");
    }
    let api = ApiClient::from_env(TIMEOUT)?;
    let body = json!({"mode": mode, "current": current});
    let changed = api.call(Method::POST, "/api/v1/system/crypto/mode", Some(&body), &[]).await?;
    if json {
        super::print_json(&changed)?;
    } else if changed["restart_required"] == true {
        println!(
            "Crypto mode set to {mode}; restart the appliance (`systemctl restart tether`) for it to take effect."
        );
    } else {
        println!("Crypto mode is {mode}.");
    }
    Ok(ExitCode::SUCCESS)
}
