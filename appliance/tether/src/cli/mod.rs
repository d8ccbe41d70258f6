//! The command line: one subcommand per file. Glue only: every decision is
//! made by the domain modules. Errors here are `anyhow`, with context that
//! tells the operator what to do.

mod alerts;
mod audit;
mod backup;
mod bundle;
mod ca;
mod client;
mod crypto;
mod failure;
mod health;
mod image;
mod init;
mod install;
mod install_screen;
mod keyfile;
mod llm;
mod logging;
mod login;
mod manual;
mod models;
pub(crate) mod progress;
mod release;
mod screen;
mod secret;
mod security;
mod serve;
mod site_questions;
mod status;
mod task;
mod task_watch;
mod token;
mod tty;
mod update;
mod upgrade;
mod user;
mod vault;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tether: an air-gapped appliance that brokers AI-agent work to workers that only pull.
#[derive(Debug, Parser)]
#[command(name = "tether", version = release::version_text(), about, propagate_version = true)]
#[command(after_help = "Exit codes: 0 done; 1 failed here; 2 the command line is wrong, or a check found a fault; \
    3 the appliance could not be reached; 4 its certificate is not trusted; 5 not authenticated; 6 not allowed; \
    7 not found; 8 refused as invalid; 9 in conflict with the current state; 10 try again later; \
    11 the appliance failed.")]
pub struct Cli {
    /// More log output on stderr (repeat for more). TETHER_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    connection: client::Connection,
    /// Output as JSON, and a failure as problem+json on stderr (a command's
    /// own --json does the same).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Parses the command line (exiting with clap's message when it is
    /// wrong). `--json` before the command or on it asks for JSON.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let mut level = Some(&matches);
        while let Some(m) = level {
            cli.json |= matches!(m.try_get_one::<bool>("json"), Ok(Some(true)));
            level = m.subcommand().map(|(_, sub)| sub);
        }
        cli
    }

    /// Whether a failure is to be reported as problem+json.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Sets up the log: as `serve` and `worker` are told, text on stderr
    /// for the other commands.
    pub fn init_logging(&self) -> anyhow::Result<()> {
        let args = match &self.command {
            Command::Serve(args) => args.log.clone(),
            Command::Worker(args) => args.log.clone(),
            _ => logging::LogArgs::default(),
        };
        logging::init(self.verbose, &args)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: store, CA, server certificate, the first admin's account and token.
    Init(init::Args),
    /// Run the appliance (console/API and worker gateway).
    Serve(serve::Args),
    /// Run a worker: enroll once, then pull tasks over mTLS and run them.
    Worker(worker::Args),
    /// The running appliance at a glance: state, vault, crypto mode and
    /// module, certificate alerts, warnings (uses TETHER_URL, TETHER_TOKEN, TETHER_CA_FILE).
    Status(status::Args),
    /// Grade this deployment: every security check with its evidence and fix, a score and grade
    /// (uses TETHER_URL, TETHER_TOKEN, TETHER_CA_FILE; --fail-on SEVERITY for cron or systemd).
    SecurityCheck(security::Args),
    /// Sign in with your account (and second factor) for a short-lived token of
    /// your role, kept in ~/.config/tether/token (0600), which the other commands use.
    Login(login::Args),
    /// Submit, inspect and cancel tasks (uses TETHER_URL, TETHER_TOKEN, TETHER_CA_FILE).
    #[command(subcommand)]
    Task(task::Command),
    /// API tokens (create, list, rotate, revoke) and worker enrollment tokens.
    #[command(subcommand)]
    Token(token::Command),
    /// People's accounts: add, passwd, disable, list, role, approve, logout.
    #[command(subcommand)]
    User(user::Command),
    /// Verify and export the audit log (offline too), its public key, its SIEM sinks.
    #[command(subcommand)]
    Audit(audit::Command),
    /// What needs a person: failed logins, expiring certificates, silent workers, a full disk…
    Alerts(alerts::Args),
    /// The LLM gateway: virtual keys, model servers, enforcement prompts.
    #[command(subcommand)]
    Llm(llm::Command),
    /// Model bundles: keygen, pack and verify on the connected side; trust, import and list on the site.
    #[command(subcommand)]
    Models(models::Command),
    /// Unseal the appliance with a passphrase, officer shares or the key file.
    Unseal(vault::UnsealArgs),
    /// Seal the appliance: drop every key from memory (admin or security officer).
    Seal(vault::SealArgs),
    /// Change how the vault unseals (new passphrase, share set or key file).
    Rekey(vault::RekeyArgs),
    /// Write a backup of the running appliance to a file (admin; over the API).
    Backup(backup::BackupArgs),
    /// Restore a backup into a data directory (the appliance stopped).
    Restore(backup::RestoreArgs),
    /// Prove a backup restores: open it, restore it into a scratch directory,
    /// check it there, and record the test on the appliance (admin).
    RestoreTest(backup::RestoreTestArgs),
    /// Upgrade a data directory made before the vault: choose how it
    /// unseals, then seal everything in it (the appliance stopped; resumable).
    #[command(after_help = "To resume an interrupted upgrade, run it again with the credentials it gave: \
        --key-file and --passphrase-file then name the existing key file and passphrase, \
        and --share-file (repeatable) a quorum of the shares it printed.")]
    Upgrade(upgrade::Args),
    /// The appliance CA: rotate it without downtime (add, issue, retire, rollback), and its status.
    #[command(subcommand)]
    Ca(ca::Command),
    /// The crypto policy: switch between FIPS and standard mode (security officer).
    #[command(subcommand)]
    Crypto(crypto::Command),
    /// Secrets for tasks: put, list, get, delete (values go in, never out).
    #[command(subcommand)]
    Secret(secret::Command),
    /// The vault's status and key rotation.
    #[command(subcommand)]
    Vault(vault::Command),
    /// Release signing: make the key pairs that sign release bundles, and sign them.
    #[command(subcommand)]
    Release(release::Command),
    /// Release bundles: verify one before installing it.
    #[command(subcommand)]
    Bundle(bundle::Command),
    /// Install a release bundle (root; verified fully before anything is
    /// written), or upgrade to one with --upgrade (rolls back by itself).
    Install(install::InstallArgs),
    /// Remove the installed program; the data stays unless --purge.
    Uninstall(install::UninstallArgs),
    /// The status screen of the machine's own console (the image's tty1 and
    /// serial console): where to connect, the setup code, the rescue login.
    Screen(screen::Args),
    /// The firmware image's A/B update: write a release bundle's image to
    /// the other slot (checked as `install` checks it), and the slots' status.
    #[command(subcommand)]
    Update(update::Command),
    /// The firmware image: sign it into an image bundle, write it onto a USB stick.
    #[command(subcommand)]
    Image(image::Command),
    /// Whether the appliance on this machine came up: ready, and its own
    /// /healthz answers over pinned TLS (the image's boot check).
    Health(health::Args),
    /// Shell completions on stdout (e.g. `tether completions bash > /etc/bash_completion.d/tether`).
    Completions(manual::CompletionsArgs),
    /// The manual page tether(1) on stdout, or a page for every command into --out-dir.
    Man(manual::ManArgs),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    client::use_connection(cli.connection);
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Serve(args) => runtime()?.block_on(serve::run(args)),
        Command::Worker(args) => runtime()?.block_on(worker::run(args)),
        Command::Login(args) => runtime()?.block_on(login::run(args)),
        Command::Task(cmd) => runtime()?.block_on(task::run(cmd)),
        Command::Token(cmd) => runtime()?.block_on(token::run(cmd)),
        Command::User(cmd) => runtime()?.block_on(user::run(cmd)),
        Command::Audit(cmd) => runtime()?.block_on(audit::run(cmd)),
        Command::Alerts(args) => runtime()?.block_on(alerts::run(args)),
        Command::Llm(cmd) => runtime()?.block_on(llm::run(cmd)),
        Command::Models(cmd) => runtime()?.block_on(models::run(cmd)),
        Command::Unseal(args) => runtime()?.block_on(vault::unseal(args)),
        Command::Seal(args) => runtime()?.block_on(vault::seal(args)),
        Command::Status(args) => runtime()?.block_on(status::run(args)),
        Command::SecurityCheck(args) => runtime()?.block_on(security::run(args)),
        Command::Ca(cmd) => runtime()?.block_on(ca::run(cmd)),
        Command::Crypto(cmd) => runtime()?.block_on(crypto::run(cmd)),
        Command::Vault(cmd) => runtime()?.block_on(vault::run(cmd)),
        Command::Rekey(args) => runtime()?.block_on(vault::rekey(args)),
        Command::Secret(cmd) => runtime()?.block_on(secret::run(cmd)),
        Command::Backup(args) => runtime()?.block_on(backup::backup(args)),
        Command::Restore(args) => runtime()?.block_on(backup::restore(args)),
        Command::RestoreTest(args) => runtime()?.block_on(backup::restore_test(args)),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Release(cmd) => release::run(cmd),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Install(args) => install::install(args),
        Command::Uninstall(args) => install::uninstall(args),
        Command::Screen(args) => screen::run(args),
        Command::Update(cmd) => update::run(cmd),
        Command::Image(cmd) => image::run(cmd),
        Command::Health(args) => runtime()?.block_on(health::run(args)),
        Command::Completions(args) => manual::completions(args),
        Command::Man(args) => manual::man(args),
    }
}

pub use failure::report;

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// The data directory flag shared by several subcommands.
#[derive(Debug, clap::Args)]
struct DataDir {
    /// The appliance's data directory.
    #[arg(long, env = "TETHER_DATA_DIR", default_value = "./tether-data")]
    data_dir: PathBuf,
}

/// Prints a value as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// clap checks a command line's definition only when it is parsed:
    /// this checks every subcommand's at once (a clash of flag names panics).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
