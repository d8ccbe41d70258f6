//! The `tether` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = tether::cli::Cli::parse_args();
    let json = cli.json();
    if let Err(e) = cli.init_logging() {
        return tether::cli::report(&e, json);
    }
    match tether::cli::run(cli) {
        Ok(code) => code,
        Err(e) => tether::cli::report(&e, json),
    }
}
