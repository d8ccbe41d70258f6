//! How a command that failed says so: a line on stderr (`error: …`), or
//! with `--json` a problem+json document there, and an exit code a script
//! can branch on. The table is a contract (README, "Exit codes"): codes are
//! added, never renumbered.

use std::process::ExitCode;

use serde_json::json;

/// The appliance answered with a problem (any status that is not a success).
#[derive(Debug, thiserror::Error)]
#[error("{detail} (HTTP {status}, code {code})")]
pub struct ApiProblem {
    pub status: u16,
    pub code: String,
    pub detail: String,
}

/// The request never got an answer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NotReached {
    /// The appliance answered the handshake with a certificate the trusted CA did not sign.
    pub untrusted: bool,
    pub message: String,
}

/// Exit codes, by what went wrong.
pub mod exit {
    /// Failed here: a file, an input, a local check.
    pub const FAILED: u8 = 1;
    // 2: the command line is wrong (clap), or a check found what it looks
    // for (audit verify, security-check --fail-on).
    /// The appliance could not be reached (address, network, it is down).
    pub const UNREACHABLE: u8 = 3;
    /// Its certificate is not signed by the CA given.
    pub const UNTRUSTED: u8 = 4;
    /// No token, or one that is malformed, unknown, expired or revoked (401).
    pub const UNAUTHENTICATED: u8 = 5;
    /// The token's role may not do this (403).
    pub const FORBIDDEN: u8 = 6;
    /// No such thing (404).
    pub const NOT_FOUND: u8 = 7;
    /// The request was refused as invalid (400, 413, 415, 422).
    pub const INVALID: u8 = 8;
    /// It conflicts with the state of things (409, 412, 423).
    pub const CONFLICT: u8 = 9;
    /// Try again later: rate limited, sealed, draining, disk low (429, 503, 507).
    pub const RETRY_LATER: u8 = 10;
    /// The appliance failed (another 5xx).
    pub const SERVER_ERROR: u8 = 11;
}

/// The exit code for `status`.
fn for_status(status: u16) -> u8 {
    match status {
        401 => exit::UNAUTHENTICATED,
        403 => exit::FORBIDDEN,
        404 => exit::NOT_FOUND,
        409 | 412 | 423 => exit::CONFLICT,
        429 | 503 | 507 => exit::RETRY_LATER,
        500..=599 => exit::SERVER_ERROR,
        _ => exit::INVALID,
    }
}

/// The exit code for a failure.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(problem) = e.downcast_ref::<ApiProblem>() {
        return for_status(problem.status);
    }
    match e.downcast_ref::<NotReached>() {
        Some(NotReached { untrusted: true, .. }) => exit::UNTRUSTED,
        Some(NotReached { untrusted: false, .. }) => exit::UNREACHABLE,
        None => exit::FAILED,
    }
}

/// Says on stderr that the command failed, and answers its exit code.
pub fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    let code = exit_code(e);
    if json {
        let problem = match e.downcast_ref::<ApiProblem>() {
            Some(p) => json!({
                "type": format!("urn:tether:problem:{}", p.code),
                "title": title(code),
                "status": p.status,
                "code": p.code,
                "detail": p.detail,
                "exit_code": code,
            }),
            None => {
                let kind = match code {
                    exit::UNTRUSTED => "certificate_not_trusted",
                    exit::UNREACHABLE => "unreachable",
                    _ => "failed",
                };
                json!({"type": format!("urn:tether:problem:{kind}"), "title": title(code), "code": kind,
                       "detail": format!("{e:#}"), "exit_code": code})
            }
        };
        eprintln!("{problem}");
    } else {
        eprintln!("error: {e:#}");
    }
    ExitCode::from(code)
}

fn title(code: u8) -> &'static str {
    match code {
        exit::UNREACHABLE => "the appliance could not be reached",
        exit::UNTRUSTED => "certificate not trusted",
        exit::UNAUTHENTICATED => "not authenticated",
        exit::FORBIDDEN => "not allowed",
        exit::NOT_FOUND => "not found",
        exit::INVALID => "refused as invalid",
        exit::CONFLICT => "in conflict with the current state",
        exit::RETRY_LATER => "try again later",
        exit::SERVER_ERROR => "the appliance failed",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code() {
        let problem = |status| anyhow::Error::new(ApiProblem { status, code: "x".into(), detail: "d".into() });
        let table = [(401, 5), (403, 6), (404, 7), (400, 8), (422, 8), (409, 9), (429, 10), (503, 10), (500, 11)];
        for (status, code) in table {
            assert_eq!(exit_code(&problem(status)), code, "HTTP {status}");
        }
        let wrapped = problem(403).context("cannot list the tasks");
        assert_eq!(exit_code(&wrapped), exit::FORBIDDEN, "context does not hide the problem");
        let untrusted = anyhow::Error::new(NotReached { untrusted: true, message: "m".into() });
        assert_eq!(exit_code(&untrusted), exit::UNTRUSTED);
        assert_eq!(exit_code(&anyhow::anyhow!("cannot read a file")), exit::FAILED);
    }
}
