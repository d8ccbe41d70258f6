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
/// A served certificate expiring within this is flagged.
const CERT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);
/// The CA expiring within this is flagged: a rotation takes planning.
const CA_EXPIRY_WARNING: Duration = Duration::from_secs(365 * 86400);
/// Logged prompts are sensitive; they are kept no longer than this.
const PROMPT_LOG_MAX: Duration = Duration::from_secs(90 * 86400);

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

fn hours(d: Duration) -> u64 {
    d.as_secs() / 3600
}

/// Fails naming the CAs (`cas`) or the other certificates expiring within `warning`.
fn expiring(f: &Facts, cas: bool, warning: Duration) -> (Status, String) {
    let certs: Vec<_> = f.certs.iter().filter(|c| c.is_ca == cas).collect();
    if certs.is_empty() {
        return fail("no certificate could be read");
    }
    let found: Vec<String> = certs
        .iter()
        .filter(|c| c.not_after <= f.now.plus(warning))
        .map(|c| format!("{} (expires in {} d)", c.name, days(c.not_after.since(f.now))))
        .collect();
    let soonest = certs.iter().map(|c| c.not_after).min().map_or(0, |t| days(t.since(f.now)));
    none_of(&found, &format!("{} certificate(s), the soonest expires in {soonest} d", certs.len()), "expiring")
}

/// An AEAD suite with forward secrecy (every TLS 1.3 suite is; TLS 1.2
/// ones must be ECDHE).
fn strong_suite(name: &str) -> bool {
    let aead = name.contains("_GCM_") || name.contains("CHACHA20_POLY1305");
    aead && (name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"))
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
        id: "vault.unsealed-too-long",
        title: "The vault has not stayed unsealed longer than the site allows",
        severity: Severity::Medium,
        remediation: "seal it (`tether seal`) and have the officers unseal it, or set max_unsealed to what the \
                      site's policy allows",
        run: |f| match (f.max_unsealed, f.unsealed_since) {
            (None, _) => (Status::NotApplicable, "max_unsealed is not set".into()),
            (Some(_), None) => pass("sealed"),
            (Some(max), Some(since)) => {
                let evidence =
                    format!("unsealed for {} h; max_unsealed is {} h", hours(f.now.since(since)), hours(max));
                if f.now.since(since) > max { fail(evidence) } else { pass(evidence) }
            }
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
        id: "crypto.tls-policy",
        title: "The listeners accept no TLS weaker than the shipped policy",
        severity: Severity::High,
        remediation: "run the shipped build: its policy (TLS 1.3, and TLS 1.2 with ECDHE and AES-GCM only) is fixed \
                      when it is built; a build that accepts more is not one of ours",
        run: |f| {
            let mut weak: Vec<String> =
                f.tls_versions.iter().filter(|v| !matches!(v.as_str(), "TLSv1_2" | "TLSv1_3")).cloned().collect();
            weak.extend(f.tls_suites.iter().filter(|s| !strong_suite(s)).cloned());
            if f.tls_versions.is_empty() || f.tls_suites.is_empty() {
                return fail("no TLS policy could be read");
            }
            let ok =
                format!("{}; {} AEAD suite(s) with forward secrecy", f.tls_versions.join(", "), f.tls_suites.len());
            none_of(&weak, &ok, "weaker than the policy")
        },
    },
    Check {
        id: "pki.cert-expiring",
        title: "No certificate a listener serves expires within 30 days",
        severity: Severity::High,
        remediation: "the appliance renews its own certificate while unsealed (read its log if it has not); for a \
                      console certificate of the site's, put a renewed one in place and send SIGHUP",
        run: |f| expiring(f, false, CERT_EXPIRY_WARNING),
    },
    Check {
        id: "pki.ca-expiring",
        title: "The CA does not expire within a year",
        severity: Severity::High,
        remediation: "rotate the CA: `tether ca rotate add`, then `issue`, then `retire` once every worker has \
                      renewed (`tether ca status` shows who has)",
        run: |f| expiring(f, true, CA_EXPIRY_WARNING),
    },
    Check {
        id: "pki.ca-rotation-stuck",
        title: "No CA rotation has been left half done",
        severity: Severity::Medium,
        remediation: "`tether ca status` shows the workers still on the old CA: bring them online to renew, or \
                      revoke retired ones; then `tether ca rotate issue` / `retire` (or `rollback`)",
        run: |f| match &f.rotation {
            None => pass("no rotation in progress"),
            Some((phase, started)) => {
                let evidence = format!("in phase {phase} for {} d", days(f.now.since(*started)));
                if f.now.since(*started) > f.rotation_limit { fail(evidence) } else { pass(evidence) }
            }
        },
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
        remediation: "each named person enrolls TOTP (`POST /api/v1/auth/totp`, then `/totp/confirm`); for sso: \
                      people, have the provider send an amr naming the second factor (or an acr listed in [sso] \
                      mfa_acr_values), or they give the appliance's TOTP at sign-in; keep mfa_required_roles = \
                      \"admin,security_officer\"",
        run: |f| {
            let needs =
                |r: Role| matches!(r, Role::Admin | Role::SecurityOfficer) || f.second_factor_roles.contains(&r);
            let found: Vec<String> = f
                .people
                .iter()
                .filter(|p| !p.disabled && needs(p.role) && !p.second_factor)
                .map(|p| p.name.clone())
                .collect();
            let ok = "every admin and officer has a second factor (TOTP here, or vouched for by the provider)";
            none_of(&found, ok, "without a second factor")
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
        id: "people.admin-and-officer",
        title: "Nobody is both an admin and a security officer",
        severity: Severity::High,
        remediation: "the two roles check each other: give one of the named person's accounts another role \
                      (`tether user role NAME ROLE`) or disable it",
        run: |f| {
            use std::collections::BTreeMap;
            // A person's local account and their single sign-on one share a name.
            let mut roles: BTreeMap<&str, Vec<Role>> = BTreeMap::new();
            for p in f.people.iter().filter(|p| !p.disabled) {
                roles.entry(p.name.strip_prefix("sso:").unwrap_or(&p.name)).or_default().push(p.role);
            }
            let found: Vec<String> = roles
                .into_iter()
                .filter(|(_, r)| r.contains(&Role::Admin) && r.contains(&Role::SecurityOfficer))
                .map(|(name, _)| name.to_owned())
                .collect();
            none_of(&found, "no one holds both roles", "hold both admin and security_officer")
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
        id: "audit.checkpoint",
        title: "A signed checkpoint covers the audit chain within its interval",
        severity: Severity::Medium,
        remediation: "checkpoints are signed while the appliance is unsealed: unseal it; if it is, read its log \
                      for \"audit checkpoint not written\"",
        run: |f| match f.oldest_unchecked {
            None => pass("every record is covered by a signed checkpoint"),
            Some(oldest) => {
                let waited = f.now.since(oldest);
                let evidence = format!(
                    "the oldest record not yet covered is {} s old; audit_checkpoint_interval is {} s",
                    waited.as_secs(),
                    f.checkpoint_interval.as_secs()
                );
                if waited > f.checkpoint_interval * 2 + CLOCK_TOLERANCE { fail(evidence) } else { pass(evidence) }
            }
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
        id: "backups.restore-untested",
        title: "A backup has been shown to restore",
        severity: Severity::Medium,
        remediation: "test one: `tether restore-test FILE --share-file ...` opens it with the unseal \
                      credentials, restores it into a scratch directory and records the result here",
        run: |f| match f.newest_restore_test {
            None => fail("no restore has been tested"),
            Some(at) => pass(format!("a restore was last tested {} d ago", days(f.now.since(at)))),
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
        id: "sso.issuer-plain-http",
        title: "The single sign-on provider is reached over HTTPS",
        severity: Severity::High,
        remediation: "serve the provider over TLS and set [sso] issuer to its https:// URL (and ca_file to its CA)",
        run: |f| match &f.sso_issuer {
            None => (Status::NotApplicable, "no single sign-on configured".into()),
            Some(issuer) if plain_http_off_loopback(issuer) => fail(format!("issuer {issuer}")),
            Some(issuer) => pass(format!("issuer {issuer}")),
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
    Check {
        id: "llm.prompt-log-retention",
        title: "Logged prompts are kept no longer than 90 days",
        severity: Severity::Medium,
        remediation: "set llm_prompt_log_retention = \"30d\" (the default) or at most \"90d\"",
        run: |f| {
            if f.prompt_logging_keys == 0 {
                return (Status::NotApplicable, "no key logs prompts".into());
            }
            let evidence = format!(
                "{} key(s) log prompts; llm_prompt_log_retention is {} d",
                f.prompt_logging_keys,
                days(f.prompt_log_retention)
            );
            if f.prompt_log_retention > PROMPT_LOG_MAX { fail(evidence) } else { pass(evidence) }
        },
    },
    Check {
        id: "workers.cert-expiring",
        title: "Every active worker renews its certificate in time",
        severity: Severity::Medium,
        remediation: "bring the named workers online (they renew on their own), or revoke retired ones: \
                      `tether worker revoke ID`",
        run: |f| {
            let soon = f.now.plus(f.worker_cert_lifetime / 6);
            let found: Vec<String> =
                f.active_workers().filter(|w| w.cert_not_after <= soon).map(|w| w.id.clone()).collect();
            none_of(&found, "every active worker's certificate is current", "workers overdue for renewal")
        },
    },
    Check {
        id: "workers.silent",
        title: "Every active worker is polling",
        severity: Severity::Low,
        remediation: "check the named hosts and their tether-worker service; revoke retired ones: \
                      `tether worker revoke ID`",
        run: |f| {
            let found: Vec<String> = f
                .active_workers()
                .filter_map(|w| w.silent_for.map(|d| format!("{} ({} min)", w.id, d.as_secs() / 60)))
                .collect();
            none_of(&found, "every active worker was heard from", "silent workers")
        },
    },
    Check {
        id: "workers.revoked-parked",
        title: "No revoked worker still holds a connection",
        severity: Severity::Critical,
        remediation: "seal the appliance (`tether seal`) and report it: revocation closes a worker's connections at \
                      once, so one left parked means that enforcement failed",
        run: |f| {
            let found: Vec<String> = f.workers.iter().filter(|w| w.revoked && w.parked).map(|w| w.id.clone()).collect();
            none_of(&found, "no revoked worker is connected", "revoked workers still parked")
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
