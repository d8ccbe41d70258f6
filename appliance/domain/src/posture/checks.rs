//! The checks, in the order they are reported. Each is a pure function of
//! [`Facts`]; its id is a contract (the README lists every one).

use std::time::Duration;

use super::{Facts, Finding, Report, Severity, Status};
use crate::auth::Role;

/// Tokens living longer than this, or unused this long, are flagged.
const TOKEN_MAX_AGE: Duration = Duration::from_secs(90 * 86400);
/// An enrollment token outstanding longer than this has been forgotten.
const ENROLLMENT_TOKEN_STALE: Duration = Duration::from_secs(24 * 3600);
/// The newest backup must be younger than this.
const BACKUP_MAX_AGE: Duration = Duration::from_secs(7 * 86400);
/// Audit records must be kept at least this long.
const RETENTION_MIN: Duration = Duration::from_secs(90 * 86400);
/// Clocks differ a little; a record this far in the future means rollback.
const CLOCK_TOLERANCE: Duration = Duration::from_secs(60);

/// One check.
#[derive(Debug)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub remediation: &'static str,
    run: fn(&Facts) -> (Status, String),
}

/// Runs every check over `facts`.
pub fn assess(facts: &Facts) -> Report {
    let findings = CHECKS
        .iter()
        .map(|c| {
            let (status, evidence) = (c.run)(facts);
            Finding {
                id: c.id.into(),
                title: c.title.into(),
                severity: c.severity,
                status,
                evidence,
                remediation: c.remediation.into(),
            }
        })
        .collect();
    Report::new(findings)
}

fn pass(evidence: impl Into<String>) -> (Status, String) {
    (Status::Pass, evidence.into())
}

fn fail(evidence: impl Into<String>) -> (Status, String) {
    (Status::Fail, evidence.into())
}

/// Passes when `found` is empty; else fails naming (at most ten of) them.
fn none_of(found: &[String], ok: &str, what: &str) -> (Status, String) {
    if found.is_empty() {
        return pass(ok);
    }
    let shown = found.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    let more = if found.len() > 10 { format!(" and {} more", found.len() - 10) } else { String::new() };
    fail(format!("{} {what}: {shown}{more}", found.len()))
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86400
}

pub static CHECKS: &[Check] = &[
    Check {
        id: "vault.dev-mode",
        title: "The appliance is not running from a development data directory",
        severity: Severity::Critical,
        remediation: "`serve --dev` keeps its unseal key and admin token beside the data: initialise a real data \
                      directory with `tether init --data-dir DIR --unseal shares` (or passphrase), move the work \
                      there, and delete dev-unseal.key and dev-admin-token",
        run: |f| none_of(&f.dev_files, "no development key or token in the data directory", "development files found"),
    },
    Check {
        id: "vault.key-file-beside-data",
        title: "The auto-unseal key file is not on the data directory's filesystem",
        severity: Severity::High,
        remediation: "keep the unseal key on other media (a TPM-sealed credential or a separate volume) and point \
                      unseal_key_file at it, or drop unseal_key_file and unseal with shares or a passphrase",
        run: |f| match &f.key_file {
            None => pass("no unseal key file: officers unseal"),
            Some(k) if k.beside_data => fail(format!("{} is on the data directory's filesystem", k.path)),
            Some(k) => pass(format!("{} is on another filesystem", k.path)),
        },
    },
    Check {
        id: "crypto.fips-required",
        title: "FIPS mode is on where the site's policy requires it",
        severity: Severity::High,
        remediation: "as a security officer: `tether crypto mode fips`, then restart; or run the fips build",
        run: |f| match (f.fips_required, f.fips_mode) {
            (false, _) => (Status::NotApplicable, "fips_required is not set".into()),
            (true, true) => pass("running in FIPS mode"),
            (true, false) => fail("fips_required is set but the appliance runs in standard mode"),
        },
    },
    Check {
        id: "crypto.self-tests",
        title: "The cryptographic self-tests passed at start",
        severity: Severity::Critical,
        remediation: "read the start-up log for the failing self-test; do not use the appliance until a restart \
                      passes them (a failure means the crypto module is damaged)",
        run: |f| if f.self_tests_passed { pass("self-tests passed") } else { fail("a self-test failed at start") },
    },
    Check {
        id: "people.initial-admin-password",
        title: "No admin still has a password someone else set",
        severity: Severity::High,
        remediation: "log in as that admin and choose a new password (`POST /api/v1/auth/password`), or disable \
                      the account: `tether user disable NAME`",
        run: |f| {
            let found: Vec<String> = f
                .people
                .iter()
                .filter(|p| !p.disabled && p.role == Role::Admin && p.must_change_password)
                .map(|p| p.name.clone())
                .collect();
            none_of(&found, "every admin chose their own password", "admins with an assigned password")
        },
    },
    Check {
        id: "people.admin-without-mfa",
        title: "Every admin and security officer has a second factor",
        severity: Severity::Critical,
        remediation: "each named person enrolls TOTP (`POST /api/v1/auth/totp`, then `/totp/confirm`); keep \
                      mfa_required_roles = \"admin,security_officer\"",
        run: |f| {
            let needs =
                |r: Role| matches!(r, Role::Admin | Role::SecurityOfficer) || f.second_factor_roles.contains(&r);
            let found: Vec<String> = f
                .people
                .iter()
                .filter(|p| !p.disabled && !p.sso && needs(p.role) && !p.second_factor)
                .map(|p| p.name.clone())
                .collect();
            none_of(&found, "every admin and officer has TOTP", "without a second factor")
        },
    },
    Check {
        id: "people.too-few-officers",
        title: "At least two security officers (role grants and k-of-n unseal need people)",
        severity: Severity::Medium,
        remediation: "add a second officer: `tether user add NAME --role security_officer`, approved by the first",
        run: |f| {
            let n = f.people.iter().filter(|p| !p.disabled && p.role == Role::SecurityOfficer).count();
            let evidence = format!("{n} security officer(s)");
            if n >= 2 { pass(evidence) } else { fail(evidence) }
        },
    },
    Check {
        id: "tokens.long-lived",
        title: "No API token lives longer than 90 days",
        severity: Severity::High,
        remediation: "rotate or revoke the named tokens (`tether token rotate ID` / `revoke ID`); make new ones \
                      with --ttl 90d or less and keep token_max_ttl at 90d",
        run: |f| {
            let found: Vec<String> = f
                .tokens
                .iter()
                .filter(|t| t.expires_at.since(t.created_at) > TOKEN_MAX_AGE)
                .map(|t| format!("{} ({} d)", t.id, days(t.expires_at.since(t.created_at))))
                .collect();
            none_of(&found, format!("{} token(s), none over 90 d", f.tokens.len()).as_str(), "long-lived tokens")
        },
    },
    Check {
        id: "tokens.unused",
        title: "No API token has gone unused for 90 days",
        severity: Severity::Medium,
        remediation: "revoke tokens nobody uses: `tether token revoke ID`",
        run: |f| {
            let found: Vec<String> = f
                .tokens
                .iter()
                .filter(|t| f.now.since(t.last_used.unwrap_or(t.created_at)) > TOKEN_MAX_AGE)
                .map(|t| t.id.clone())
                .collect();
            none_of(&found, "every token was used within 90 d", "tokens unused for 90 d")
        },
    },
    Check {
        id: "tokens.stale-enrollment",
        title: "No worker enrollment token has been outstanding for a day",
        severity: Severity::Medium,
        remediation: "enroll the worker or let the token go; keep enrollment_token_ttl short (default 15m)",
        run: |f| {
            let stale = f.enrollment_tokens.iter().filter(|t| f.now.since(**t) > ENROLLMENT_TOKEN_STALE).count();
            let evidence = format!("{} outstanding, {stale} older than 24 h", f.enrollment_tokens.len());
            if stale == 0 { pass(evidence) } else { fail(evidence) }
        },
    },
    Check {
        id: "audit.chain",
        title: "The audit chain verifies",
        severity: Severity::Critical,
        remediation: "stop and investigate: `tether audit verify --data-dir DIR` names the first broken record; \
                      restore from the newest backup that verifies",
        run: |f| match &f.audit_broken {
            None => pass("the chain verifies from its first record to its head"),
            Some(why) => fail(why.clone()),
        },
    },
    Check {
        id: "audit.siem",
        title: "Audit records reach a SIEM, and every sink delivers",
        severity: Severity::Medium,
        remediation: "add a sink: `tether audit sink add NAME --syslog-tls HOST:PORT --ca-file CA.pem`; for a \
                      failing one, check its address and certificate (`GET /api/v1/audit/sinks`)",
        run: |f| {
            if f.sinks.is_empty() {
                return (Status::Warn, "no audit sink: records stay on this appliance only".into());
            }
            let failing: Vec<String> = f
                .sinks
                .iter()
                .filter(|s| s.down_since.is_some())
                .map(|s| format!("{} (down, {} behind)", s.name, s.backlog))
                .collect();
            none_of(&failing, &format!("{} sink(s) delivering", f.sinks.len()), "sinks failing")
        },
    },
    Check {
        id: "audit.retention",
        title: "Audit records are kept at least 90 days",
        severity: Severity::Medium,
        remediation: "set audit_retention = \"90d\" or longer",
        run: |f| {
            let evidence = format!("audit_retention is {} d", days(f.audit_retention));
            if f.audit_retention >= RETENTION_MIN { pass(evidence) } else { fail(evidence) }
        },
    },
    Check {
        id: "backups.stale",
        title: "A backup was taken within the last 7 days",
        severity: Severity::High,
        remediation: "take one now (`tether backup --out FILE`) and schedule it daily; keep copies off the appliance",
        run: |f| match f.newest_backup {
            None => fail("no backup has ever been taken"),
            Some(at) if f.now.since(at) > BACKUP_MAX_AGE => {
                fail(format!("the newest backup is {} d old", days(f.now.since(at))))
            }
            Some(at) => pass(format!("the newest backup is {} h old", f.now.since(at).as_secs() / 3600)),
        },
    },
    Check {
        id: "host.data-dir-permissions",
        title: "Nobody but the appliance's user and group can read the data directory",
        severity: Severity::High,
        remediation: "`chmod -R o-rwx DATA_DIR` (the appliance makes its files 0600 and directories 0700)",
        run: |f| none_of(&f.host.exposed, "no file or directory open to others", "open to others"),
    },
    Check {
        id: "host.running-as-root",
        title: "The appliance does not run as root",
        severity: Severity::High,
        remediation: "run it from the shipped systemd unit (User=tether), or as an unprivileged user that owns \
                      the data directory",
        run: |f| {
            if f.host.euid == 0 { fail("effective uid 0") } else { pass(format!("effective uid {}", f.host.euid)) }
        },
    },
    Check {
        id: "host.no-new-privs",
        title: "The process cannot gain privileges (NoNewPrivs)",
        severity: Severity::Medium,
        remediation: "run it from the shipped systemd unit (NoNewPrivileges=yes), or under `setpriv --no-new-privs`",
        run: |f| match f.host.no_new_privs {
            Some(true) => pass("NoNewPrivs: 1"),
            Some(false) => fail("NoNewPrivs: 0"),
            None => (Status::Warn, "/proc/self/status could not be read".into()),
        },
    },
    Check {
        id: "host.capabilities",
        title: "The process holds no capabilities",
        severity: Severity::High,
        remediation: "drop them: CapabilityBoundingSet= (empty) in the unit; the appliance binds its ports as an \
                      unprivileged user (8443, 9443)",
        run: |f| match f.host.cap_eff {
            Some(0) => pass("CapEff: 0"),
            Some(caps) => fail(format!("CapEff: {caps:016x}")),
            None => (Status::Warn, "/proc/self/status could not be read".into()),
        },
    },
    Check {
        id: "host.core-dumps",
        title: "The process cannot dump core (keys live in its memory)",
        severity: Severity::Medium,
        remediation: "allow the appliance to set RLIMIT_CORE to 0 and mark itself not dumpable (LimitCORE=0 in the \
                      unit)",
        run: |f| if f.host.core_dumps_off { pass("core dumps off") } else { fail("core dumps are possible") },
    },
    Check {
        id: "host.disk-reserve",
        title: "The data directory has more free space than the reserve",
        severity: Severity::High,
        remediation: "free space on the data directory's filesystem or grow it; state changes are refused until then",
        run: |f| if f.disk_low { fail("free space is below disk_reserve") } else { pass("above the reserve") },
    },
    Check {
        id: "host.clock-rollback",
        title: "The clock is not behind the newest audit record",
        severity: Severity::High,
        remediation: "set the clock right (a local NTP source or the hardware clock) and restart; expiry and \
                      lockouts depend on it",
        run: |f| match f.newest_record {
            Some(newest) if newest > f.now.plus(CLOCK_TOLERANCE) => {
                fail(format!("the newest record is {} s ahead of the clock", newest.since(f.now).as_secs()))
            }
            _ => pass("the clock is at or after the newest record"),
        },
    },
    Check {
        id: "llm.upstream-plain-http",
        title: "Model servers off this host are reached over HTTPS",
        severity: Severity::High,
        remediation: "serve the model server over TLS and `PUT /api/v1/llm/upstreams/NAME` with its https:// URL \
                      and ca_pem",
        run: |f| {
            if f.upstreams.is_empty() {
                return (Status::NotApplicable, "no model server configured".into());
            }
            let found: Vec<String> = f
                .upstreams
                .iter()
                .filter(|(_, url)| plain_http_off_loopback(url))
                .map(|(name, url)| format!("{name} ({url})"))
                .collect();
            none_of(&found, "every remote model server is https", "over plain HTTP")
        },
    },
    Check {
        id: "llm.key-without-limits",
        title: "Every virtual key has a rate limit",
        severity: Severity::Medium,
        remediation: "revoke the named keys and make them again with --rpm or --tpm",
        run: |f| {
            if f.llm_keys == 0 {
                return (Status::NotApplicable, "no virtual keys".into());
            }
            none_of(&f.unlimited_keys, "every key has rpm or tpm", "keys without limits")
        },
    },
    Check {
        id: "llm.no-enforcement-prompt",
        title: "Every virtual key puts an enforcement prompt first",
        severity: Severity::Low,
        remediation: "revoke the named keys and make them again at --enforcement standard or design-first",
        run: |f| {
            if f.llm_keys == 0 {
                return (Status::NotApplicable, "no virtual keys".into());
            }
            none_of(&f.unrestricted_keys, "every key has an enforcement level", "unrestricted keys")
        },
    },
];

/// `http://` to anything but this host.
fn plain_http_off_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
    !(host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

#[cfg(test)]
mod tests;
