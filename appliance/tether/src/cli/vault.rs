//! `tether unseal`, `tether seal` and `tether vault ...`: the vault over the
//! management API (TETHER_URL, TETHER_CA_FILE; TETHER_TOKEN where a role is
//! needed). Secrets come from files, stdin or a prompt that does not echo,
//! never from arguments.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::client::ApiClient;
use tether_base::files::read_secret;
use tether_domain::vault::Credential;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Where the present unseal credentials come from (never the command line).
#[derive(Debug, clap::Args)]
pub struct Credentials {
    /// A file holding one officer's share (repeatable; `-` reads shares from stdin, one per line).
    #[arg(long = "share-file")]
    pub(super) share_files: Vec<PathBuf>,
    /// A file holding the passphrase (`-` for stdin).
    #[arg(long)]
    pub(super) passphrase_file: Option<PathBuf>,
    /// The unseal key file.
    #[arg(long)]
    pub(super) key_file: Option<PathBuf>,
}

impl Credentials {
    /// Every credential given, read from its file or stdin.
    pub(super) fn read(&self) -> anyhow::Result<Vec<Credential>> {
        let mut out = Vec::new();
        for path in &self.share_files {
            if path.as_os_str() == "-" {
                for line in std::io::stdin().lock().lines() {
                    let line = Zeroizing::new(line.context("reading shares from stdin")?);
                    if !line.trim().is_empty() {
                        out.push(Credential::Share(Zeroizing::new(line.trim().to_owned())));
                    }
                }
            } else {
                out.push(Credential::Share(read_secret(path)?));
            }
        }
        if let Some(path) = &self.passphrase_file {
            out.push(Credential::Passphrase(read_secret(path)?));
        }
        if let Some(path) = &self.key_file {
            out.push(Credential::KeyFile(read_secret(path)?));
        }
        Ok(out)
    }

    /// One unseal request body per credential given.
    pub(super) fn bodies(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.read()?.iter().map(body_of).collect())
    }
}

/// The unseal request body for one credential.
fn body_of(credential: &Credential) -> Value {
    match credential {
        Credential::Share(s) => json!({"share": s.as_str()}),
        Credential::Passphrase(p) => json!({"passphrase": p.as_str()}),
        Credential::KeyFile(k) => json!({"key_file": k.as_str()}),
        Credential::Reset => json!({"reset": true}),
    }
}

#[derive(Debug, clap::Args)]
pub struct UnsealArgs {
    #[command(flatten)]
    credentials: Credentials,
    /// Forget the shares given so far.
    #[arg(long)]
    reset: bool,
    /// Print the vault status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// Print the vault status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    /// The current credentials (a quorum of shares, the passphrase or the key file).
    #[command(flatten)]
    current: Credentials,
    /// The method to move to.
    #[arg(long, value_enum)]
    new_unseal: super::init::UnsealMethod,
    #[arg(long, default_value_t = 5)]
    new_shares: u8,
    #[arg(long, default_value_t = 3)]
    new_threshold: u8,
    /// The new passphrase's file (with --new-unseal passphrase).
    #[arg(long)]
    new_passphrase_file: Option<PathBuf>,
    /// Where to write the new key file (with --new-unseal key-file); must not exist.
    #[arg(long)]
    new_key_file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Whether the vault is sealed, how it unseals, the current key version.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Start sealing new values with a new data key (admin or security officer).
    Rotate {
        #[arg(long)]
        json: bool,
    },
}

pub async fn unseal(args: UnsealArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::anonymous_from_env(TIMEOUT)?;
    let mut bodies = Vec::new();
    if args.reset {
        bodies.push(body_of(&Credential::Reset));
    }
    bodies.extend(args.credentials.bodies()?);
    if bodies.is_empty() {
        bodies.push(prompt_for_credential(&api).await?);
    }
    let mut status = Value::Null;
    for body in &bodies {
        status = api.call(Method::POST, "/api/v1/sys/unseal", Some(body), &[]).await?;
    }
    report(&status, args.json)
}

/// Asks on the terminal for what this appliance unseals with.
async fn prompt_for_credential(api: &ApiClient) -> anyhow::Result<Value> {
    let status = api.call(Method::GET, "/api/v1/sys/vault", None, &[]).await?;
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to prompt on: pass --share-file, --passphrase-file or --key-file (`-` reads stdin)");
    }
    match status["method"].as_str() {
        Some("passphrase") => Ok(json!({"passphrase": prompt_hidden("Passphrase: ")?.as_str()})),
        Some("shares") => {
            let given = &status["shares"];
            eprintln!("Shares received so far: {} of {}", given["received"], given["threshold"]);
            Ok(json!({"share": prompt_hidden("Your share: ")?.trim()}))
        }
        Some("key_file") => bail!("this appliance unseals with a key file: pass --key-file PATH"),
        _ => bail!("this appliance has no vault yet"),
    }
}

/// The terminal's echo (on stdin), off while this lives.
pub(super) struct Echo(rustix::termios::Termios);

impl Echo {
    pub(super) fn off() -> anyhow::Result<Echo> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let original = tcgetattr(&stdin).context("cannot read the terminal settings")?;
        let mut quiet = original.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).context("cannot turn echo off")?;
        Ok(Echo(original))
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let restored = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.0);
        if let Err(e) = restored {
            tracing::warn!(error = %e, "cannot restore the terminal's echo");
        }
    }
}

/// Reads a line from the terminal with echo off.
pub(super) fn prompt_hidden(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let echo = Echo::off()?;
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    eprintln!();
    read.context("reading from the terminal")?;
    let keep = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(keep);
    Ok(line)
}

/// Changes the passphrase, the share set or the key file, proving the
/// current one first (admin or security officer).
pub async fn rekey(args: RekeyArgs) -> anyhow::Result<ExitCode> {
    use super::init::UnsealMethod;
    let api = ApiClient::from_env(TIMEOUT)?;
    let current = args.current.bodies()?;
    if current.is_empty() {
        bail!("give the current credentials: --share-file (a quorum), --passphrase-file or --key-file");
    }
    let new = match args.new_unseal {
        UnsealMethod::Shares => json!({"method": "shares", "shares": args.new_shares, "threshold": args.new_threshold}),
        UnsealMethod::Passphrase => {
            let path =
                args.new_passphrase_file.as_deref().context("--new-unseal passphrase needs --new-passphrase-file")?;
            json!({"method": "passphrase", "passphrase": read_secret(path)?.as_str()})
        }
        UnsealMethod::KeyFile => {
            let path = args.new_key_file.as_deref().context("--new-unseal key-file needs --new-key-file PATH")?;
            if path.exists() {
                bail!("{} already exists; the unseal key is never overwritten", path.display());
            }
            json!({"method": "key_file"})
        }
    };
    let rekeyed =
        api.call(Method::POST, "/api/v1/sys/rekey", Some(&json!({"current": current, "new": new})), &[]).await?;
    if let (Some(text), Some(path)) = (rekeyed["key_file"].as_str(), &args.new_key_file) {
        tether_base::files::write_private(path, text.as_bytes())?;
    }
    if args.json {
        let mut shown = rekeyed.clone();
        if let Some(obj) = shown.as_object_mut() {
            obj.remove("key_file");
            if let Some(path) = &args.new_key_file {
                obj.insert("key_file".into(), json!(path));
            }
        }
        super::print_json(&shown)?;
    } else {
        match rekeyed["method"].as_str() {
            Some("shares") => {
                println!("New unseal shares (shown once; the old ones no longer work):");
                for s in rekeyed["shares"].as_array().into_iter().flatten() {
                    println!("  {}", s.as_str().unwrap_or(""));
                }
            }
            Some("key_file") => println!("New unseal key written; the old key file no longer works."),
            _ => println!("The vault now unseals with the new passphrase."),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn seal(args: SealArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::from_env(TIMEOUT)?;
    let status = api.call(Method::POST, "/api/v1/sys/seal", None, &[]).await?;
    report(&status, args.json)
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Status { json } => {
            let api = ApiClient::anonymous_from_env(TIMEOUT)?;
            report(&api.call(Method::GET, "/api/v1/sys/vault", None, &[]).await?, json)
        }
        Command::Rotate { json } => {
            let api = ApiClient::from_env(TIMEOUT)?;
            let rotated = api.call(Method::POST, "/api/v1/sys/rotate", None, &[]).await?;
            if json {
                super::print_json(&rotated)?;
            } else {
                println!("New values are now sealed with data key version {}.", rotated["key_version"]);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report(status: &Value, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        super::print_json(status)?;
    } else if status["sealed"] == false {
        println!("Unsealed (data key version {}).", status["key_version"]);
    } else if status["shares"].is_object() {
        let s = &status["shares"];
        println!("Sealed: {} of {} shares received.", s["received"], s["threshold"]);
    } else {
        println!("Sealed.");
    }
    Ok(ExitCode::SUCCESS)
}
