//! Configuration: TOML file, then `TETHER_*` environment, then flags.
//!
//! The file is parsed into [`RawConfig`] (unknown keys are errors, so a typo
//! is never silently ignored), environment and flags are laid over it, and
//! [`RawConfig::validate`] turns the result into the [`Config`] the modules
//! receive. Durations are written like `500ms`, `30s`, `15m`, `24h`, `90d`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use tether_domain::auth::oidc::SsoSettings;
use tether_domain::broker;

/// The file `tether serve` reads from the data directory when no
/// `--config` is given.
pub const CONFIG_FILE: &str = "tether.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

/// Parses `500ms`, `30s`, `15m`, `24h` or `90d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 15m, 24h"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: unit must be ms, s, m, h or d")),
    };
    n.checked_mul(unit_ms).map(Duration::from_millis).ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses `512k`, `64m`, `1g` (bytes, binary multiples) or a plain number.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size like 64m or 1g"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(format!("{s:?}: unit must be k, m or g")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// The file's shape. Every field is optional; defaults live in `validate`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Console/API listener.
    pub listen: Option<String>,
    /// Worker gateway listener.
    pub worker_listen: Option<String>,
    /// Extra DNS names and IPs for the server certificate (used by `init`).
    pub server_names: Option<Vec<String>>,
    pub lease: Option<String>,
    pub max_poll_wait: Option<String>,
    pub max_tasks_per_poll: Option<u32>,
    pub retry_backoff: Option<String>,
    pub retry_backoff_max: Option<String>,
    pub worker_cert_lifetime: Option<String>,
    pub worker_cert_grace: Option<String>,
    pub server_cert_lifetime: Option<String>,
    pub cert_expiry_warning: Option<String>,
    pub console_cert_file: Option<String>,
    pub console_key_file: Option<String>,
    pub enrollment_token_ttl: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    /// Unseal at start from this key file (unattended sites; see `init --unseal key-file`).
    pub unseal_key_file: Option<String>,
    /// Rotate the data key when it is this old.
    pub key_rotation_age: Option<String>,
    /// A console session ends this long after login, however busy.
    pub session_absolute: Option<String>,
    /// A console session ends after this long without a request.
    pub session_idle: Option<String>,
    /// Sensitive actions need a login or re-authentication this recent.
    pub reauth_window: Option<String>,
    /// An API token's lifetime when none is asked for.
    pub token_ttl: Option<String>,
    /// The longest lifetime an API token may be given.
    pub token_max_ttl: Option<String>,
    /// A signed checkpoint in the audit chain at least this often (and every
    /// 1,000 records) while anything is written.
    pub audit_checkpoint_interval: Option<String>,
    /// Failures from outside (failed authentication, refused enrollment) of
    /// one kind from one source are written once per window with a count.
    pub audit_failure_window: Option<String>,
    /// Bytes kept free for the audit log (a file given up when the disk fills).
    pub disk_reserve: Option<String>,
    /// A worker with no request in flight (a parked poll counts) for this
    /// long, or a heartbeat and a half if longer, is reported silent.
    pub worker_silence_grace: Option<String>,
    /// Audit records older than this are archived to signed segment files and pruned.
    pub audit_retention: Option<String>,
    /// Where archived audit segments go (default: `audit-archive` in the data directory).
    pub audit_archive_dir: Option<String>,
    /// An audit sink that cannot deliver for this long raises an alert.
    pub audit_sink_down_alert: Option<String>,
    /// Roles that must set up TOTP (comma separated; empty for none).
    pub mfa_required_roles: Option<String>,
    /// OpenID Connect single sign-on (the `[sso]` table); off when absent.
    pub sso: Option<RawSso>,
    /// Where `tether models import --into vllm-dir` places models: a
    /// directory the site's vLLM servers load from (absent: that import is off).
    pub vllm_model_dir: Option<String>,
    /// How often the LLM gateway probes its model servers.
    pub llm_health_interval: Option<String>,
    /// Prompt log entries older than this are deleted.
    pub llm_prompt_log_retention: Option<String>,
    /// Web origins (`https://host[:port]`, exactly) whose scripts may call
    /// the API with a bearer token. Empty (the default): none.
    pub cors_allowed_origins: Option<Vec<String>>,
    /// The site's policy requires FIPS mode (`security-check` fails without it).
    pub fips_required: Option<bool>,
    /// The site's policy: the vault is sealed at least this often
    /// (`security-check` fails when it has stayed unsealed longer). Unset: no limit.
    pub max_unsealed: Option<String>,
}

/// `[sso]`: the site's OpenID provider (Keycloak, Authentik, ...).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSso {
    /// The provider's issuer URL, exactly as its discovery document gives it.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// A file (mode 0600 or stricter) holding the client secret.
    pub client_secret_file: Option<String>,
    /// The CA certificate(s) the provider's TLS certificate chains to (PEM).
    pub ca_file: Option<String>,
    /// The console's address as browsers reach it, e.g. `https://tether.site.lan:8443`;
    /// the redirect URI registered at the provider is this plus `/api/v1/auth/sso/callback`.
    pub console_url: Option<String>,
    /// Space-separated scopes to ask for (default `openid profile`).
    pub scopes: Option<String>,
    /// The claim holding the person's groups (default `groups`).
    pub groups_claim: Option<String>,
    /// `acr` values that mean the provider checked a second factor (asked
    /// for as `acr_values`). Without one, an `amr` naming a second factor
    /// (otp, hwk, mfa, ...) vouches; else people in mfa_required_roles give
    /// the appliance's own TOTP after signing in.
    #[serde(default)]
    pub mfa_acr_values: Vec<String>,
    /// Group to role, in order: the first of a person's groups listed wins.
    #[serde(default)]
    pub role: Vec<RawGroupRole>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroupRole {
    pub group: String,
    pub role: String,
}

impl RawSso {
    fn validate(self) -> Result<SsoSettings, ConfigError> {
        use tether_domain::auth::Role;
        let required = |key: &'static str, v: Option<String>| {
            v.filter(|v| !v.trim().is_empty()).ok_or_else(|| invalid(key, "required when [sso] is present"))
        };
        let https = |key: &'static str, v: String| -> Result<String, ConfigError> {
            let url = reqwest::Url::parse(&v).map_err(|_| invalid(key, format!("{v:?} is not a URL")))?;
            if url.scheme() != "https" || url.host_str().is_none() {
                return Err(invalid(key, format!("{v:?} must be an https:// URL")));
            }
            Ok(v)
        };
        let issuer = https("sso.issuer", required("sso.issuer", self.issuer)?)?;
        let console_url =
            https("sso.console_url", required("sso.console_url", self.console_url)?)?.trim_end_matches('/').to_owned();
        let scopes = self.scopes.unwrap_or_else(|| "openid profile".into());
        if !scopes.split_whitespace().any(|s| s == "openid") {
            return Err(invalid("sso.scopes", "must include openid"));
        }
        if self.role.is_empty() {
            return Err(invalid("sso.role", "map at least one group to a role ([[sso.role]] group = ..., role = ...)"));
        }
        let roles = self
            .role
            .into_iter()
            .map(|m| match m.role.parse::<Role>() {
                Ok(Role::Worker) => Err(invalid("sso.role", "workers enroll with certificates, not through SSO")),
                // The appliance makes a second officer approve every grant of
                // this role; it cannot do that for a change of IdP groups.
                Ok(Role::SecurityOfficer) => Err(invalid(
                    "sso.role",
                    "security officers sign in with local accounts: a second officer must approve that role, \
                     which the appliance cannot require of a change to the identity provider's groups",
                )),
                Ok(role) if !m.group.is_empty() => Ok((m.group, role)),
                Ok(_) => Err(invalid("sso.role", "a group name is required")),
                Err(e) => Err(invalid("sso.role", e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SsoSettings {
            issuer,
            client_id: required("sso.client_id", self.client_id)?,
            client_secret_file: PathBuf::from(required("sso.client_secret_file", self.client_secret_file)?),
            ca_file: PathBuf::from(required("sso.ca_file", self.ca_file)?),
            redirect_uri: format!("{console_url}{}", tether_domain::auth::oidc::CALLBACK_PATH),
            console_url,
            scopes,
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".into()),
            roles,
            mfa_acr_values: match self.mfa_acr_values.iter().find(|v| v.trim().is_empty() || v.contains(' ')) {
                Some(_) => {
                    return Err(invalid("sso.mfa_acr_values", "each value is one non-empty word (a URI or name)"));
                }
                None => self.mfa_acr_values,
            },
        })
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub worker_listen: SocketAddr,
    pub server_names: Vec<String>,
    pub broker: broker::Settings,
    pub worker_cert_lifetime: Duration,
    /// How long after its certificate expired an offline worker may still
    /// renew it; after that it must enroll again. Zero: no grace.
    pub worker_cert_grace: Duration,
    /// The appliance's own server certificate renews itself two thirds in.
    pub server_cert_lifetime: Duration,
    /// How long before the CA's, the server's or the console's certificate
    /// expires an alert is raised.
    pub cert_expiry_warning: Duration,
    /// The operator's certificate for the console instead of the appliance's.
    pub console_cert: Option<OperatorCert>,
    pub enrollment_token_ttl: Duration,
    pub limits: Limits,
    pub unseal_key_file: Option<PathBuf>,
    pub key_rotation_age: Duration,
    pub sessions: tether_domain::auth::Lifetimes,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
    pub audit_checkpoint_interval: Duration,
    pub audit_failure_window: Duration,
    pub disk_reserve_bytes: u64,
    pub worker_silence_grace: Duration,
    pub audit_retention: Duration,
    pub audit_archive_dir: PathBuf,
    pub audit_sink_down_alert: Duration,
    pub mfa_required_roles: Vec<tether_domain::auth::Role>,
    pub sso: Option<SsoSettings>,
    pub vllm_model_dir: Option<PathBuf>,
    pub llm_health_interval: Duration,
    pub llm_prompt_log_retention: Duration,
    /// Origins granted CORS, as browsers serialise them (`https://host:port`).
    pub cors_allowed_origins: Vec<String>,
    pub fips_required: bool,
    pub max_unsealed: Option<Duration>,
    /// Set by `tether serve` on a machine running the firmware image (not
    /// from the file): the console's firmware uploads.
    pub firmware: Option<tether_domain::firmware::upload::OnTheImage>,
}

/// Protection for the listeners.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// A TLS handshake or a request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A request (body included) must be answered within this; longer than
    /// the longest long-poll.
    pub request_timeout: Duration,
    /// How long open connections get to finish on shutdown.
    pub shutdown_grace: Duration,
}

/// A certificate chain and key, as PEM files, that the operator supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The setting an environment variable overrides.
enum Field {
    Text(fn(&mut RawConfig) -> &mut Option<String>),
    Count(fn(&mut RawConfig) -> &mut Option<usize>),
    /// Comma separated.
    List(fn(&mut RawConfig) -> &mut Option<Vec<String>>),
}

/// Every `TETHER_*` variable that overrides a file setting.
const ENV: &[(&str, Field)] = &[
    ("TETHER_LISTEN", Field::Text(|c| &mut c.listen)),
    ("TETHER_WORKER_LISTEN", Field::Text(|c| &mut c.worker_listen)),
    ("TETHER_LEASE", Field::Text(|c| &mut c.lease)),
    ("TETHER_MAX_POLL_WAIT", Field::Text(|c| &mut c.max_poll_wait)),
    ("TETHER_RETRY_BACKOFF", Field::Text(|c| &mut c.retry_backoff)),
    ("TETHER_RETRY_BACKOFF_MAX", Field::Text(|c| &mut c.retry_backoff_max)),
    ("TETHER_WORKER_CERT_LIFETIME", Field::Text(|c| &mut c.worker_cert_lifetime)),
    ("TETHER_WORKER_CERT_GRACE", Field::Text(|c| &mut c.worker_cert_grace)),
    ("TETHER_SERVER_CERT_LIFETIME", Field::Text(|c| &mut c.server_cert_lifetime)),
    ("TETHER_CERT_EXPIRY_WARNING", Field::Text(|c| &mut c.cert_expiry_warning)),
    ("TETHER_CONSOLE_CERT_FILE", Field::Text(|c| &mut c.console_cert_file)),
    ("TETHER_CONSOLE_KEY_FILE", Field::Text(|c| &mut c.console_key_file)),
    ("TETHER_ENROLLMENT_TOKEN_TTL", Field::Text(|c| &mut c.enrollment_token_ttl)),
    ("TETHER_MAX_BODY_BYTES", Field::Count(|c| &mut c.max_body_bytes)),
    ("TETHER_MAX_CONNECTIONS", Field::Count(|c| &mut c.max_connections)),
    ("TETHER_HEADER_TIMEOUT", Field::Text(|c| &mut c.header_timeout)),
    ("TETHER_IDLE_TIMEOUT", Field::Text(|c| &mut c.idle_timeout)),
    ("TETHER_REQUEST_TIMEOUT", Field::Text(|c| &mut c.request_timeout)),
    ("TETHER_UNSEAL_KEY_FILE", Field::Text(|c| &mut c.unseal_key_file)),
    ("TETHER_KEY_ROTATION_AGE", Field::Text(|c| &mut c.key_rotation_age)),
    ("TETHER_SESSION_ABSOLUTE", Field::Text(|c| &mut c.session_absolute)),
    ("TETHER_SESSION_IDLE", Field::Text(|c| &mut c.session_idle)),
    ("TETHER_REAUTH_WINDOW", Field::Text(|c| &mut c.reauth_window)),
    ("TETHER_TOKEN_TTL", Field::Text(|c| &mut c.token_ttl)),
    ("TETHER_TOKEN_MAX_TTL", Field::Text(|c| &mut c.token_max_ttl)),
    ("TETHER_AUDIT_CHECKPOINT_INTERVAL", Field::Text(|c| &mut c.audit_checkpoint_interval)),
    ("TETHER_AUDIT_FAILURE_WINDOW", Field::Text(|c| &mut c.audit_failure_window)),
    ("TETHER_DISK_RESERVE", Field::Text(|c| &mut c.disk_reserve)),
    ("TETHER_WORKER_SILENCE_GRACE", Field::Text(|c| &mut c.worker_silence_grace)),
    ("TETHER_AUDIT_RETENTION", Field::Text(|c| &mut c.audit_retention)),
    ("TETHER_AUDIT_ARCHIVE_DIR", Field::Text(|c| &mut c.audit_archive_dir)),
    ("TETHER_VLLM_MODEL_DIR", Field::Text(|c| &mut c.vllm_model_dir)),
    ("TETHER_LLM_HEALTH_INTERVAL", Field::Text(|c| &mut c.llm_health_interval)),
    ("TETHER_LLM_PROMPT_LOG_RETENTION", Field::Text(|c| &mut c.llm_prompt_log_retention)),
    ("TETHER_AUDIT_SINK_DOWN_ALERT", Field::Text(|c| &mut c.audit_sink_down_alert)),
    ("TETHER_MFA_REQUIRED_ROLES", Field::Text(|c| &mut c.mfa_required_roles)),
    ("TETHER_CORS_ALLOWED_ORIGINS", Field::List(|c| &mut c.cors_allowed_origins)),
    ("TETHER_MAX_UNSEALED", Field::Text(|c| &mut c.max_unsealed)),
];

impl RawConfig {
    /// Reads a TOML file. A missing file is an error only if `required`.
    pub fn from_file(path: &Path, required: bool) -> Result<RawConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(RawConfig::default());
            }
            Err(source) => {
                return Err(ConfigError::Read { path: path.into(), source });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    /// Lays `TETHER_*` variables (from `lookup`) over the file's values.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, field) in ENV {
            let Some(value) = lookup(var) else { continue };
            match field {
                Field::Text(slot) => *slot(self) = Some(value),
                Field::Count(slot) => {
                    let n = value
                        .parse()
                        .map_err(|_| ConfigError::Env { var, message: format!("{value:?} is not a number") })?;
                    *slot(self) = Some(n);
                }
                Field::List(slot) => {
                    let items = value.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned);
                    *slot(self) = Some(items.collect());
                }
            }
        }
        Ok(())
    }

    pub fn validate(self, data_dir: PathBuf) -> Result<Config, ConfigError> {
        let addr = |key: &'static str, v: Option<String>, default: &str| -> Result<SocketAddr, ConfigError> {
            let v = v.unwrap_or_else(|| default.into());
            v.parse().map_err(|_| invalid(key, format!("{v:?} is not an address like 0.0.0.0:8443")))
        };
        let dur = |key: &'static str, v: Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                Some(v) => parse_duration(&v).map_err(|m| invalid(key, m)),
                None => Ok(default),
            }
        };
        let defaults = broker::Settings::default();
        let broker = broker::Settings {
            lease: dur("lease", self.lease, defaults.lease)?,
            max_poll_wait: dur("max_poll_wait", self.max_poll_wait, defaults.max_poll_wait)?,
            max_tasks_per_poll: self.max_tasks_per_poll.unwrap_or(defaults.max_tasks_per_poll),
            retry_backoff: dur("retry_backoff", self.retry_backoff, defaults.retry_backoff)?,
            retry_backoff_max: dur("retry_backoff_max", self.retry_backoff_max, defaults.retry_backoff_max)?,
        };
        if broker.lease < Duration::from_secs(1) {
            return Err(invalid("lease", "must be at least 1s"));
        }
        if !(1..=1000).contains(&broker.max_tasks_per_poll) {
            return Err(invalid("max_tasks_per_poll", "must be 1-1000"));
        }
        if broker.max_poll_wait > Duration::from_secs(300) {
            return Err(invalid("max_poll_wait", "must be at most 5m"));
        }
        let limits = Limits {
            max_body_bytes: self.max_body_bytes.unwrap_or(1024 * 1024),
            max_connections: self.max_connections.unwrap_or(8192),
            header_timeout: dur("header_timeout", self.header_timeout, Duration::from_secs(10))?,
            idle_timeout: dur("idle_timeout", self.idle_timeout, Duration::from_secs(120))?,
            request_timeout: dur(
                "request_timeout",
                self.request_timeout,
                broker.max_poll_wait + Duration::from_secs(30),
            )?,
            shutdown_grace: dur("shutdown_grace", self.shutdown_grace, Duration::from_secs(10))?,
        };
        if limits.request_timeout <= broker.max_poll_wait {
            return Err(invalid("request_timeout", "must be longer than max_poll_wait"));
        }
        if limits.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if limits.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let worker_cert_lifetime =
            dur("worker_cert_lifetime", self.worker_cert_lifetime, Duration::from_secs(24 * 3600))?;
        // Lifetimes of seconds make sense only in tests of renewal.
        if worker_cert_lifetime < Duration::from_secs(5) {
            return Err(invalid("worker_cert_lifetime", "must be at least 5s"));
        }
        let server_cert_lifetime =
            dur("server_cert_lifetime", self.server_cert_lifetime, Duration::from_secs(365 * 86400))?;
        if server_cert_lifetime < Duration::from_secs(5) {
            return Err(invalid("server_cert_lifetime", "must be at least 5s"));
        }
        let console_cert = match (self.console_cert_file, self.console_key_file) {
            (Some(cert), Some(key)) => Some(OperatorCert { cert: PathBuf::from(cert), key: PathBuf::from(key) }),
            (None, None) => None,
            _ => return Err(invalid("console_cert_file", "set console_cert_file and console_key_file together")),
        };
        let key_rotation_age = dur("key_rotation_age", self.key_rotation_age, Duration::from_secs(30 * 86400))?;
        if key_rotation_age < Duration::from_secs(1) {
            return Err(invalid("key_rotation_age", "must be at least 1s"));
        }
        let sessions = tether_domain::auth::Lifetimes {
            absolute: dur("session_absolute", self.session_absolute, Duration::from_secs(8 * 3600))?,
            idle: dur("session_idle", self.session_idle, Duration::from_secs(30 * 60))?,
            reauth: dur("reauth_window", self.reauth_window, Duration::from_secs(10 * 60))?,
        };
        if sessions.idle < Duration::from_secs(1) || sessions.idle > sessions.absolute {
            return Err(invalid("session_idle", "must be at least 1s and at most session_absolute"));
        }
        let token_max_ttl = dur("token_max_ttl", self.token_max_ttl, Duration::from_secs(365 * 86400))?;
        let token_ttl = dur("token_ttl", self.token_ttl, Duration::from_secs(90 * 86400))?;
        if token_ttl.is_zero() || token_ttl > token_max_ttl {
            return Err(invalid("token_ttl", "must be more than zero and at most token_max_ttl"));
        }
        let audit_checkpoint_interval =
            dur("audit_checkpoint_interval", self.audit_checkpoint_interval, Duration::from_secs(60))?;
        if audit_checkpoint_interval < Duration::from_secs(1) {
            return Err(invalid("audit_checkpoint_interval", "must be at least 1s"));
        }
        let audit_failure_window = dur("audit_failure_window", self.audit_failure_window, Duration::from_secs(60))?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&audit_failure_window) {
            return Err(invalid("audit_failure_window", "must be between 1s and 1h"));
        }
        let disk_reserve_bytes = match self.disk_reserve {
            Some(v) => parse_size(&v).map_err(|m| invalid("disk_reserve", m))?,
            None => 64 << 20,
        };
        let audit_retention = dur("audit_retention", self.audit_retention, Duration::from_secs(90 * 86400))?;
        if audit_retention < Duration::from_secs(1) {
            return Err(invalid("audit_retention", "must be at least 1s"));
        }
        let audit_archive_dir = self.audit_archive_dir.map_or_else(|| data_dir.join("audit-archive"), PathBuf::from);
        let mfa_required_roles = self
            .mfa_required_roles
            .as_deref()
            .unwrap_or("admin,security_officer")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| match r.parse::<tether_domain::auth::Role>() {
                Ok(tether_domain::auth::Role::Worker) => Err(invalid("mfa_required_roles", "workers have no accounts")),
                Ok(role) => Ok(role),
                Err(e) => Err(invalid("mfa_required_roles", e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            data_dir,
            listen: addr("listen", self.listen, "0.0.0.0:8443")?,
            worker_listen: addr("worker_listen", self.worker_listen, "0.0.0.0:9443")?,
            server_names: self.server_names.unwrap_or_default(),
            broker,
            worker_cert_lifetime,
            server_cert_lifetime,
            cert_expiry_warning: dur("cert_expiry_warning", self.cert_expiry_warning, Duration::from_secs(14 * 86400))?,
            console_cert,
            worker_cert_grace: dur("worker_cert_grace", self.worker_cert_grace, Duration::from_secs(7 * 86400))?,
            enrollment_token_ttl: dur("enrollment_token_ttl", self.enrollment_token_ttl, Duration::from_secs(15 * 60))?,
            limits,
            unseal_key_file: self.unseal_key_file.map(PathBuf::from),
            key_rotation_age,
            sessions,
            token_ttl,
            token_max_ttl,
            audit_checkpoint_interval,
            audit_failure_window,
            disk_reserve_bytes,
            worker_silence_grace: dur("worker_silence_grace", self.worker_silence_grace, Duration::from_secs(30))?,
            audit_retention,
            audit_archive_dir,
            audit_sink_down_alert: dur("audit_sink_down_alert", self.audit_sink_down_alert, Duration::from_secs(30))?,
            mfa_required_roles,
            sso: self.sso.map(RawSso::validate).transpose()?,
            llm_health_interval: match dur("llm_health_interval", self.llm_health_interval, Duration::from_secs(10))? {
                d if d < Duration::from_secs(1) => return Err(invalid("llm_health_interval", "must be at least 1s")),
                d => d,
            },
            llm_prompt_log_retention: match dur(
                "llm_prompt_log_retention",
                self.llm_prompt_log_retention,
                Duration::from_secs(30 * 86400),
            )? {
                d if d < Duration::from_secs(1) => {
                    return Err(invalid("llm_prompt_log_retention", "must be at least 1s"));
                }
                d => d,
            },
            fips_required: self.fips_required.unwrap_or(false),
            max_unsealed: self
                .max_unsealed
                .map(|v| parse_duration(&v).map_err(|m| invalid("max_unsealed", m)))
                .transpose()?,
            cors_allowed_origins: self
                .cors_allowed_origins
                .unwrap_or_default()
                .iter()
                .map(|o| web_origin(o))
                .collect::<Result<_, _>>()?,
            vllm_model_dir: match self.vllm_model_dir.map(PathBuf::from) {
                Some(dir) if !dir.is_absolute() => return Err(invalid("vllm_model_dir", "must be an absolute path")),
                dir => dir,
            },
            firmware: None,
        })
    }
}

/// An origin as browsers send it in `Origin`: scheme, host and port only.
/// No wildcard: a grant names the one origin it trusts.
fn web_origin(given: &str) -> Result<String, ConfigError> {
    let refuse = |why: &str| invalid("cors_allowed_origins", format!("{given:?}: {why}"));
    if given.contains('*') {
        return Err(refuse("wildcards are not allowed; list each origin exactly"));
    }
    let url = reqwest::Url::parse(given).map_err(|_| refuse("not an origin like https://tools.site.lan:8443"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(refuse("an origin is https:// (or http://) and a host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(refuse("an origin has no path, query or user; give only scheme, host and port"));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests;
