//! `tether security-check`: the appliance grades its own deployment over
//! the API (TETHER_URL, TETHER_TOKEN, TETHER_CA_FILE; security officer,
//! auditor or admin). On the appliance's host, `--data-dir` also checks
//! the data directory as this command sees it. `--fail-on` turns failing
//! checks into the exit code, for cron or a systemd timer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;

use super::client::ApiClient;
use tether_domain::posture::{self, Facts, Report, Severity, Status};

/// A full check walks the audit chain: allow for a long one.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The checks this command redoes itself with `--data-dir`.
const LOCAL_CHECKS: [&str; 2] = ["vault.dev-mode", "host.data-dir-permissions"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON: {"score", "grade", "checks": [{"id", "title", "severity", "status", "evidence", "remediation"}]}.
    #[arg(long)]
    json: bool,
    /// Exit 2 if any check at this severity or above fails (critical, high, medium, low, info).
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    fail_on: Option<Severity>,
    /// The appliance's data directory, when run on its host: checked here too.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let api = ApiClient::from_env(TIMEOUT)?;
    let answer = api.call(Method::GET, "/api/v1/security/checks", None, &[]).await?;
    let mut report: Report = serde_json::from_value(answer)?;
    if let Some(dir) = &args.data_dir {
        report = report.merge(local_checks(dir));
    }
    if args.json {
        super::print_json(&report)?;
    } else {
        print!("{}", describe(&report));
    }
    let failed = args.fail_on.is_some_and(|s| report.fails_at(s));
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// The data directory's checks, as this process sees it.
fn local_checks(dir: &std::path::Path) -> Vec<posture::Finding> {
    let mut facts = Facts::at(tether_base::clock::Clock::now(&tether_base::clock::SystemClock));
    facts.dev_files =
        tether_api::security::DEV_FILES.iter().filter(|n| dir.join(n).exists()).map(|n| (*n).to_owned()).collect();
    facts.host.exposed = posture::host::exposed(dir);
    posture::assess(&facts).checks.into_iter().filter(|c| LOCAL_CHECKS.contains(&c.id.as_str())).collect()
}

fn describe(report: &Report) -> String {
    let mut out = format!("Security posture: {} / 100, grade {}\n\n", report.score, report.grade);
    out.push_str(&format!("{:<6} {:<9} {:<30} {}\n", "STATUS", "SEVERITY", "CHECK", "EVIDENCE"));
    let mut checks: Vec<_> = report.checks.iter().collect();
    // Failures first, the worst first; then warnings, passes, the rest.
    let rank = |s: Status| match s {
        Status::Fail => 0,
        Status::Warn => 1,
        Status::Pass => 2,
        Status::NotApplicable => 3,
    };
    checks.sort_by_key(|c| (rank(c.status), std::cmp::Reverse(c.severity)));
    for c in &checks {
        let status = match c.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Warn => "warn",
            Status::NotApplicable => "n/a",
        };
        let severity = serde_json::to_value(c.severity).ok().and_then(|v| v.as_str().map(str::to_owned));
        out.push_str(&format!("{status:<6} {:<9} {:<30} {}\n", severity.unwrap_or_default(), c.id, c.evidence));
        if matches!(c.status, Status::Fail | Status::Warn) {
            out.push_str(&format!("{:<47}fix: {}\n", "", c.remediation));
        }
    }
    out
}
