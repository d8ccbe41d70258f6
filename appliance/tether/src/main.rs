//! The `tether` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tether::cli::Cli::parse();
    if let Err(e) = cli.init_logging() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    match tether::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
