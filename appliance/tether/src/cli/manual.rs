//! The command line described for the shell and for `man`: completions
//! for bash, zsh, fish (and the other shells clap_complete knows), and the
//! manual pages, all made from the same definitions `--help` shows, so
//! they cannot fall behind.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write a page for every command (tether.1, tether-task.1,
    /// tether-task-submit.1…) into this directory instead of tether(1) on
    /// stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `tether completions SHELL`: the script on stdout, e.g.
/// `tether completions bash > /etc/bash_completion.d/tether`.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "tether", &mut script);
    print(&script)
}

/// `tether man`: tether(1) on stdout, or every page into a directory.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    match args.out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(described()).render(&mut page)?;
            return print(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(described(), &dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
            println!("{}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The command line as the pages show it: the version alone in their
/// titles (`--version` adds the commit, build date and signing key).
fn described() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// `bytes` on stdout; a reader that stopped early (`| head`) is no error.
fn print(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
