//! Setup mode: `tether serve` on a data directory that was never
//! initialised (the firmware image's first boot). The console listener
//! serves the console's setup wizard behind a one-time **setup code**
//! printed on stdout (the journal, the image's tty), over a temporary
//! self-signed certificate whose fingerprint is printed beside it. The
//! wizard sends everything `tether init` decides in one request; the
//! appliance initialises the directory (keeping the setup certificate's
//! key, so the browser meets the same key after) and [`SetupMode::finished`]
//! resolves, and `serve` goes on to serve normally on the same sockets.
//!
//! The code is single-use, expires after 30 minutes, and after five wrong
//! tries in a row the next waits a minute. Every try is audited in the new
//! directory's log once there is one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::app::init::{self, FromSetup, InitOptions};
use super::config::Limits;
use super::extract::{AnonymousOrigin, ApiJson};
use super::server::{Endpoint, Server};
use super::{ApiError, browser, console};
use tether_base::clock::{Clock, SystemClock, Timestamp};
use tether_base::crypto::CryptoPolicy;
use tether_base::secret;
use tether_base::tls;
use tether_domain::audit::{Event, Origin, Outcome, Resource};
use tether_domain::auth::{password, rescue};
use tether_domain::vault::Choice;

/// How long the setup code works.
pub const CODE_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Wrong codes in a row before tries are slowed.
const FREE_FAILURES: u32 = 5;
/// The wait after too many wrong codes.
const FAILURE_WAIT: Duration = Duration::from_secs(60);
/// The setup certificate lasts as long as a setup can.
const TEMPORARY_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The setup mode, serving.
#[derive(Debug)]
pub struct SetupMode {
    /// The code to print (shown once, nowhere stored).
    pub code: Zeroizing<String>,
    /// The SHA-256 fingerprint of the setup certificate (what the browser shows).
    pub fingerprint: String,
    /// When the code stops working.
    pub expires_at: Timestamp,
    finished: oneshot::Receiver<()>,
    server: Server,
}

impl SetupMode {
    /// Waits until the wizard has initialised the directory, then stops
    /// serving it (the caller serves the appliance on the same sockets).
    pub async fn finished(self) -> anyhow::Result<()> {
        let done = self.finished.await;
        self.server.shutdown().await;
        done.map_err(|_| anyhow::anyhow!("setup mode stopped before the appliance was set up"))
    }
}

struct Setup {
    dir: PathBuf,
    code_digest: [u8; 32],
    expires: Instant,
    expires_at: Timestamp,
    suggested_names: Vec<String>,
    key_pem: Zeroizing<String>,
    tries: Mutex<Tries>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

#[derive(Default)]
struct Tries {
    failures_in_a_row: u32,
    wait_until: Option<Instant>,
    /// What to audit once the directory has a log.
    events: Vec<Event>,
}

/// Starts setup mode on `console` (the console listener) for `dir`.
/// `names`: what the setup certificate names (the listener's addresses).
pub fn start(dir: PathBuf, console: TcpListener, names: Vec<String>, limits: &Limits) -> anyhow::Result<SetupMode> {
    let now = SystemClock.now();
    let cert = tether_domain::pki::temporary_server_cert(&names, now, TEMPORARY_CERT_LIFETIME)?;
    let served = tls::ServedCert::load(CryptoPolicy::STANDARD, &cert.cert_pem, &cert.key_pem)?;
    let der = tls::certs_from_pem(&cert.cert_pem, "the setup certificate")?;
    let fingerprint = tls::fingerprint_der(der.first().map_or(&[][..], |c| c.as_ref()));
    // 48 random bits, typed as xxxx-xxxx-xxxx: with five free tries and then
    // one a minute for 30 minutes, a guess has no chance.
    let hex = Zeroizing::new(secret::random_token("")?);
    let code = Zeroizing::new(format!("{}-{}-{}", &hex[0..4], &hex[4..8], &hex[8..12]));
    let (done, finished) = oneshot::channel();
    let setup = Arc::new(Setup {
        dir,
        code_digest: secret::sha256(normalise(&code).as_bytes()),
        expires: Instant::now() + CODE_LIFETIME,
        expires_at: now.plus(CODE_LIFETIME),
        suggested_names: names,
        key_pem: Zeroizing::new(cert.key_pem.clone()),
        tries: Mutex::default(),
        done: Mutex::new(Some(done)),
    });
    let app = router(setup);
    // Nothing scrapes the setup listener: its handshakes count nowhere.
    let endpoint =
        Endpoint::Console { tls: tls::console_server(CryptoPolicy::STANDARD, served)?, app, metrics: Arc::default() };
    let server = Server::start(vec![(console, endpoint)], limits);
    Ok(SetupMode { code, fingerprint, expires_at: now.plus(CODE_LIFETIME), finished, server })
}

/// A code as typed: case, spaces and dashes do not matter.
fn normalise(code: &str) -> String {
    code.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

fn router(setup: Arc<Setup>) -> Router {
    Router::new()
        .route("/", get(console::setup_index))
        .route(&format!("{}/{{build}}/{{*path}}", console::ASSETS), get(console::asset))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "setup", "sealed": true})) }))
        .route("/api/v1/setup", get(about).post(finish))
        .route("/api/v1/setup/code", post(check_code))
        .fallback(|| async { ApiError::NotFound })
        .with_state(setup)
        .layer(axum::middleware::from_fn(browser::headers))
}

#[derive(Debug, Serialize)]
struct About {
    setup: bool,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    code_expires_at: Timestamp,
    /// Names the appliance's certificate could carry (edit them in the wizard).
    suggested_names: Vec<String>,
}

/// `GET /api/v1/setup`: what the wizard starts from.
async fn about(State(setup): State<Arc<Setup>>) -> axum::Json<About> {
    axum::Json(About { setup: true, code_expires_at: setup.expires_at, suggested_names: setup.suggested_names.clone() })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: Zeroizing<String>,
}

/// A wizard's request comes from its own page, never from another site:
/// an `Origin` must name the host the request was sent to (`Host` in
/// HTTP/1.1, the `:authority` in HTTP/2).
fn same_origin(uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(uri.authority().map(|a| a.as_str()));
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) if origin.strip_prefix("https://") != host => Err(ApiError::CrossOriginRefused),
        _ => Ok(()),
    }
}

impl Setup {
    /// Checks a try of the code: single-use, in time, slowed after failures.
    fn check(&self, code: &str, origin: &Origin) -> Result<(), ApiError> {
        if self.done.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
            return Err(ApiError::SetupDone);
        }
        let mut tries = self.tries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(until) = tries.wait_until.filter(|u| now < *u) {
            return Err(ApiError::RateLimited(until - now));
        }
        if now >= self.expires {
            return Err(ApiError::SetupCodeExpired);
        }
        let right = secret::digests_equal(&secret::sha256(normalise(code).as_bytes()), &self.code_digest);
        let event = Event::new("setup.code_tried", "setup", Resource::new("appliance", "setup"));
        if !right {
            tries.failures_in_a_row += 1;
            if tries.failures_in_a_row >= FREE_FAILURES {
                tries.wait_until = Some(now + FAILURE_WAIT);
            }
            let who = origin.source_ip.map(|ip| ip.to_string()).unwrap_or_default();
            tracing::warn!(source = %who, "a wrong setup code was tried");
            tries.events.push(event.outcome(Outcome::Failure).detail("source", who));
            return Err(ApiError::SetupCodeInvalid);
        }
        tries.failures_in_a_row = 0;
        Ok(())
    }
}

/// `POST /api/v1/setup/code`: 204 if the code is right (the wizard checks
/// it before asking for the rest).
async fn check_code(
    State(setup): State<Arc<Setup>>,
    AnonymousOrigin(origin): AnonymousOrigin,
    uri: Uri,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<StatusCode, ApiError> {
    same_origin(&uri, &headers)?;
    setup.check(&body.code, &origin)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupBody {
    code: Zeroizing<String>,
    /// DNS names and IP addresses the appliance's certificate names.
    server_names: Vec<String>,
    #[serde(default)]
    fips: bool,
    /// The first admin's own password (account `admin`).
    admin_password: Zeroizing<String>,
    /// The machine's rescue login (a root shell at its own screen or
    /// serial console); none without it.
    #[serde(default)]
    rescue_password: Option<Zeroizing<String>>,
    unseal: UnsealChoice,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum UnsealChoice {
    Shares {
        count: u8,
        threshold: u8,
    },
    Passphrase(Zeroizing<String>),
    /// Made here and handed to the browser once, to keep on separate media
    /// (never written beside the data).
    KeyFile,
}

#[derive(Serialize)]
struct SetUp {
    ca_fingerprint: String,
    /// `shares`, `passphrase` or `key_file`.
    unseal_method: &'static str,
    /// One per officer, shown once here and never again.
    shares: Vec<Zeroizing<String>>,
    threshold: Option<u8>,
    /// The key file's content, handed out once here and never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<Zeroizing<String>>,
}

/// `POST /api/v1/setup`: initialises the appliance as the wizard decided,
/// answers the unseal material once, and ends setup mode.
async fn finish(
    State(setup): State<Arc<Setup>>,
    AnonymousOrigin(origin): AnonymousOrigin,
    uri: Uri,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SetupBody>,
) -> Result<axum::Json<SetUp>, ApiError> {
    same_origin(&uri, &headers)?;
    setup.check(&body.code, &origin)?;
    let names: Vec<String> = body.server_names.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Err(ApiError::SetupRefused("name the appliance: at least one DNS name or IP address".into()));
    }
    let choice = match body.unseal {
        UnsealChoice::Shares { count, threshold } => Choice::Shares { threshold, count },
        UnsealChoice::Passphrase(p) => Choice::Passphrase(p),
        UnsealChoice::KeyFile => Choice::KeyFile,
    };
    let policy = if body.fips { CryptoPolicy::FIPS } else { CryptoPolicy::STANDARD };
    let rescue = body.rescue_password.filter(|p| !p.is_empty());
    if let Some(password) = &rescue {
        password::check_strength("root", password)
            .map_err(|e| ApiError::SetupRefused(format!("the rescue password: {e}")))?;
    }
    let mut events = std::mem::take(&mut setup.tries.lock().unwrap_or_else(PoisonError::into_inner).events);
    events.push(
        Event::new("setup.completed", "setup", Resource::new("appliance", "setup"))
            .detail("server_names", names.join(","))
            .detail("fips", body.fips)
            .detail("rescue_login", rescue.is_some())
            .detail("source", origin.source_ip.map(|ip| ip.to_string()).unwrap_or_default()),
    );
    let from = FromSetup { admin_password: body.admin_password, server_key_pem: setup.key_pem.clone(), events };
    let dir = setup.dir.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        // Set first, so an appliance set up has the login it was asked for;
        // taken back if the setup fails.
        if let Some(password) = &rescue {
            rescue::set(&dir, policy, password)?;
        }
        init::initialise_with(
            &dir,
            InitOptions { extra_names: &names, policy, choice, key_file: None, setup: Some(from) },
        )
        .inspect_err(|_| {
            let _ = std::fs::remove_file(dir.join(rescue::RESCUE_LOGIN_FILE));
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::SetupRefused(format!("{e:#}")))?;
    if let Some(done) = setup.done.lock().unwrap_or_else(PoisonError::into_inner).take() {
        let _ = done.send(());
    }
    Ok(axum::Json(SetUp {
        ca_fingerprint: outcome.ca_fingerprint,
        unseal_method: outcome.unseal.method,
        shares: outcome.unseal.shares,
        threshold: outcome.unseal.threshold,
        key_file: outcome.unseal.key_file_content,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(expires_in: Duration) -> (Setup, oneshot::Receiver<()>) {
        let (done, finished) = oneshot::channel();
        let setup = Setup {
            dir: PathBuf::from("/nonexistent"),
            code_digest: secret::sha256(normalise("4acd-d9aa-cbba").as_bytes()),
            expires: Instant::now() + expires_in,
            expires_at: SystemClock.now(),
            suggested_names: vec![],
            key_pem: Zeroizing::new(String::new()),
            tries: Mutex::default(),
            done: Mutex::new(Some(done)),
        };
        (setup, finished)
    }

    #[test]
    fn the_code_works_as_typed_and_five_wrong_tries_make_the_next_wait() {
        let (s, _finished) = setup(CODE_LIFETIME);
        let o = Origin::system();
        assert!(s.check(" 4ACD d9aa-CBBA ", &o).is_ok(), "case, spaces and dashes do not matter");
        for _ in 0..FREE_FAILURES {
            assert!(matches!(s.check("0000-0000-0000", &o), Err(ApiError::SetupCodeInvalid)));
        }
        assert!(matches!(s.check("4acd-d9aa-cbba", &o), Err(ApiError::RateLimited(w)) if w > Duration::from_secs(50)));
        let audited = s.tries.lock().unwrap().events.len();
        assert_eq!(audited, FREE_FAILURES as usize, "each wrong try is kept for the audit log");
    }

    #[test]
    fn an_expired_code_and_a_finished_setup_refuse_every_try() {
        let (s, _finished) = setup(Duration::ZERO);
        assert!(matches!(s.check("4acd-d9aa-cbba", &Origin::system()), Err(ApiError::SetupCodeExpired)));
        let (s, _finished) = setup(CODE_LIFETIME);
        let _ = s.done.lock().unwrap().take();
        assert!(matches!(s.check("4acd-d9aa-cbba", &Origin::system()), Err(ApiError::SetupDone)));
    }

    #[test]
    fn a_request_from_another_origin_is_refused() {
        let uri: Uri = "https://tether.site.lan:8443/api/v1/setup".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert!(same_origin(&uri, &headers).is_ok(), "no Origin: not a cross-site browser request");
        headers.insert(header::ORIGIN, "https://tether.site.lan:8443".parse().unwrap());
        assert!(same_origin(&uri, &headers).is_ok());
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(matches!(same_origin(&uri, &headers), Err(ApiError::CrossOriginRefused)));
    }
}
