//! HTTP: the only crate that imports axum. Turns requests into calls on the
//! domain services and their errors into problem+json; holds the settings
//! (`config`) and what the listeners serve (`listener_certs`).
//!
//! Routes are declared once, in [`console_routes`] and [`worker_routes`],
//! each with the [`Permission`] it needs; the router is built from those
//! lists and so is the role-matrix test. Handlers are short: extract, call
//! one service, answer.

mod a2a;
mod admin;
pub mod app;
mod backup;
pub mod browser;
mod certificates;
pub mod config;
pub mod console;
mod error;
mod events;
mod extract;
mod firmware;
mod linger;
pub mod listener_certs;
mod llm;
mod llm_admin;
mod metrics;
mod models;
mod people;
mod secrets;
pub mod security;
pub mod server;
mod session;
pub mod setup;
mod site;
mod sso;
mod task_events;
mod tasks;
mod uploads;
mod vault;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};

pub use error::ApiError;
pub use extract::ConnInfo;

use crate::config::Config;
use crate::listener_certs::{ListenerCerts, Renewer};
use tether_base::clock::SharedClock;
use tether_base::crypto::CryptoStatus;
use tether_domain::audit::sinks::Sinks;
use tether_domain::auth::throttle::RateLimiter;
use tether_domain::auth::{Accounts, Permission};
use tether_domain::broker::Broker;
use tether_domain::pki;
use tether_domain::vault::Vault;
use tether_store::Store;

/// What every handler shares, behind one reference count: axum clones the
/// state for each request and each middleware keeps a clone while the
/// request runs, so a clone must be one atomic increment and one pointer,
/// not one per handle (a parked long-poll holds several).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The handles in [`AppState`]. Holds handles, not data.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub broker: Broker,
    pub clock: SharedClock,
    pub vault: Arc<Vault>,
    pub config: Arc<Config>,
    /// Revoked workers: refused at the handshake, their connections closed.
    pub revoked: Arc<pki::Revoked>,
    /// The port the worker gateway listens on (for join strings).
    pub worker_port: u16,
    /// The algorithms this appliance allows (fixed at start) and what its
    /// start-up self-tests found.
    pub crypto: Arc<CryptoStatus>,
    /// The certificates the listeners serve (renewed and swapped live).
    pub certs: Arc<ListenerCerts>,
    /// The audit log as evidence: verification, sealed exports, the key.
    pub evidence: Arc<tether_domain::evidence::Evidence>,
    /// Workers' certificates: enrollment and renewal.
    pub authority: Arc<pki::Authority>,
    /// Which workers have been sent a rotation's CA bundle.
    pub deliveries: Arc<pki::BundleDeliveries>,
    /// People: logins, sessions, accounts.
    pub accounts: Arc<Accounts>,
    /// The rate limit on unauthenticated requests, per source address.
    pub public_limit: Arc<RateLimiter>,
    /// Failures anyone can cause, tallied per source and window.
    pub failures: Arc<tether_domain::audit::tally::FailureLog>,
    /// The audit sinks running.
    pub sinks: Arc<Sinks>,
    /// The data directory's free space and the disk reserve.
    pub space: Arc<tether_domain::disk::Watch>,
    /// The alert watches fed by traffic (silent workers, task volume).
    pub monitor: Arc<tether_domain::monitor::Monitor>,
    /// What events are counted for `/metrics`.
    pub metrics: Arc<tether_domain::metrics::Metrics>,
    /// When this start began.
    pub started_at: tether_base::clock::Timestamp,
    /// Single sign-on, when `[sso]` is configured.
    pub sso: Option<Arc<tether_domain::auth::sso::Sso>>,
    /// The LLM gateway.
    pub llm: Arc<tether_domain::llm::Gateway>,
    /// Model bundle imports.
    pub models: Arc<tether_domain::llm::models::Imports>,
    /// Firmware updates uploaded in the console, on a machine running the image.
    pub firmware: Option<Arc<tether_domain::firmware::upload::Uploads>>,
    /// Which background tasks stopped before the appliance did.
    pub tasks: Arc<app::TaskHealth>,
    /// Content Security Policy violations browsers reported.
    pub csp_reports: browser::CspReports,
}

impl Shared {
    /// What the appliance's own checks and renewals need of it.
    pub fn renewer(&self) -> Renewer {
        Renewer {
            store: self.store.clone(),
            vault: self.vault.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
        }
    }
}

/// One route: what it is and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
}

const fn spec(method: &'static str, path: &'static str, permission: Permission) -> RouteSpec {
    RouteSpec { method, path, permission }
}

fn console_routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    use Permission as P;
    vec![
        (spec("GET", "/healthz", P::Public), get(admin::healthz)),
        (spec("GET", "/.well-known/agent-card.json", P::TaskRead), get(a2a::card::agent_card)),
        (spec("POST", a2a::card::ENDPOINT, P::TaskRead), post(a2a::endpoint::call)),
        (spec("GET", "/metrics", P::MetricsRead), get(metrics::scrape)),
        (spec("POST", "/api/v1/tasks", P::TaskCreate), post(tasks::create)),
        (spec("GET", "/api/v1/tasks", P::TaskRead), get(tasks::list)),
        (spec("GET", "/api/v1/tasks/{id}", P::TaskRead), get(tasks::get)),
        (spec("POST", "/api/v1/tasks/{id}/cancel", P::TaskCancel), post(tasks::cancel)),
        (spec("GET", "/api/v1/tasks/{id}/events", P::TaskRead), get(task_events::stream)),
        (spec("GET", "/api/v1/workers", P::WorkerRead), get(workers::list)),
        (spec("GET", "/api/v1/system/status", P::WorkerRead), get(admin::status)),
        (spec("GET", "/api/v1/system/crypto", P::AuditRead), get(admin::crypto)),
        (spec("POST", "/api/v1/system/crypto/mode", P::CryptoManage), post(admin::change_crypto_mode)),
        (spec("POST", "/api/v1/workers/enrollment-tokens", P::WorkerEnroll), post(workers::create_enrollment_token)),
        (spec("POST", "/api/v1/workers/{id}/revoke", P::WorkerRevoke), post(workers::revoke)),
        (spec("PUT", "/api/v1/workers/{id}/labels", P::WorkerEnroll), put(workers::set_labels)),
        (spec("GET", "/api/v1/pki/crl", P::Public), get(workers::crl)),
        (spec("GET", "/api/v1/pki/certificates", P::AuditRead), get(certificates::list)),
        (spec("GET", "/api/v1/pki/ca/rotation", P::AuditRead), get(certificates::rotation)),
        (spec("POST", "/api/v1/pki/ca/rotation/{step}", P::CaManage), post(certificates::rotate)),
        (spec("POST", "/api/v1/auth/login", P::Public), post(session::login)),
        (spec("GET", "/api/v1/auth/sso/login", P::Public), get(sso::begin)),
        (spec("GET", tether_domain::auth::oidc::CALLBACK_PATH, P::Public), get(sso::callback)),
        (spec("POST", "/api/v1/auth/logout", P::OwnAccount), post(session::logout)),
        (spec("GET", "/api/v1/auth/session", P::OwnAccount), get(session::current)),
        (spec("POST", "/api/v1/auth/reauth", P::OwnAccount), post(session::reauthenticate)),
        (spec("POST", "/api/v1/auth/password", P::OwnAccount), post(session::change_password)),
        (spec("POST", "/api/v1/auth/totp", P::OwnAccount), post(session::begin_totp)),
        (spec("POST", "/api/v1/auth/totp/confirm", P::OwnAccount), post(session::confirm_totp)),
        (spec("GET", "/api/v1/auth/methods", P::Public), get(session::methods)),
        (spec("POST", "/api/v1/auth/second-factor", P::OwnAccount), post(session::give_second_factor)),
        (spec("GET", "/api/v1/users", P::UserRead), get(people::list_users)),
        (spec("POST", "/api/v1/users", P::UserManage), post(people::add_user)),
        (spec("GET", "/api/v1/sessions", P::UserRead), get(people::list_sessions)),
        (spec("POST", "/api/v1/users/{name}/disable", P::UserManage), post(people::disable_user)),
        (spec("POST", "/api/v1/users/{name}/password", P::UserManage), post(people::reset_password)),
        (spec("DELETE", "/api/v1/users/{name}/sessions", P::UserManage), delete(people::end_sessions)),
        (spec("PUT", "/api/v1/users/{name}/role", P::RoleChange), put(people::change_role)),
        (spec("POST", "/api/v1/users/{name}/role/approve", P::RoleApprove), post(people::approve_role)),
        (spec("POST", "/api/v1/tokens", P::TokenManage), post(people::create_token)),
        (spec("GET", "/api/v1/tokens", P::TokenManage), get(people::list_tokens)),
        (spec("DELETE", "/api/v1/tokens/{id}", P::TokenManage), delete(people::revoke_token)),
        (spec("POST", "/api/v1/tokens/{id}/rotate", P::TokenManage), post(people::rotate_token)),
        (spec("GET", "/api/v1/alerts", P::AlertRead), get(people::list_alerts)),
        (spec("GET", "/api/v1/events", P::OwnAccount), get(events::stream)),
        (spec("GET", "/api/v1/audit/verify", P::AuditRead), get(admin::audit_verify)),
        (spec("GET", "/api/v1/audit/records", P::AuditRead), get(admin::audit_records)),
        (spec("GET", "/api/v1/audit/export", P::AuditRead), get(admin::audit_export)),
        (spec("GET", "/api/v1/audit/public-key", P::AuditRead), get(admin::audit_public_key)),
        (spec("GET", "/api/v1/audit/checkpoint", P::AuditRead), get(admin::audit_checkpoint)),
        (spec("GET", "/api/v1/audit/sinks", P::AuditRead), get(admin::list_sinks)),
        (spec("PUT", "/api/v1/audit/sinks/{name}", P::AuditSinkManage), put(admin::put_sink)),
        (spec("DELETE", "/api/v1/audit/sinks/{name}", P::AuditSinkManage), delete(admin::remove_sink)),
        (spec("GET", "/api/v1/secrets", P::SecretRead), get(secrets::list)),
        (spec("GET", "/api/v1/secrets/{name}", P::SecretRead), get(secrets::get)),
        (spec("PUT", "/api/v1/secrets/{name}", P::SecretWrite), put(secrets::put)),
        (spec("DELETE", "/api/v1/secrets/{name}", P::SecretWrite), delete(secrets::delete)),
        (spec("GET", "/api/v1/sys/vault", P::Public), get(vault::status)),
        (spec("GET", "/api/v1/sys/vault/events", P::Public), get(vault::events)),
        (spec("POST", "/api/v1/sys/unseal", P::Public), post(vault::unseal)),
        (spec("POST", "/api/v1/sys/seal", P::VaultManage), post(vault::seal)),
        (spec("POST", "/api/v1/sys/rotate", P::VaultManage), post(vault::rotate)),
        (spec("POST", "/api/v1/sys/rekey", P::VaultManage), post(vault::rekey)),
        (spec("POST", "/api/v1/sys/backup", P::BackupCreate), post(backup::create)),
        (spec("POST", "/api/v1/sys/backup/restore-tests", P::BackupCreate), post(backup::restore_tested)),
        (spec("POST", "/api/v1/llm/keys", P::LlmKeyManage), post(llm_admin::create_key)),
        (spec("GET", "/api/v1/llm/keys", P::LlmKeyManage), get(llm_admin::list_keys)),
        (spec("DELETE", "/api/v1/llm/keys/{id}", P::LlmKeyManage), delete(llm_admin::revoke_key)),
        (spec("GET", "/api/v1/llm/upstreams", P::LlmUpstreamManage), get(llm_admin::list_upstreams)),
        (spec("PUT", "/api/v1/llm/upstreams/{name}", P::LlmUpstreamManage), put(llm_admin::put_upstream)),
        (spec("DELETE", "/api/v1/llm/upstreams/{name}", P::LlmUpstreamManage), delete(llm_admin::remove_upstream)),
        (spec("PUT", "/api/v1/llm/prompts/{level}", P::LlmPromptManage), put(llm_admin::set_prompt)),
        (spec("GET", "/api/v1/llm/usage", P::LlmUsageRead), get(llm_admin::usage)),
        (spec("GET", "/api/v1/llm/prompt-log", P::LlmPromptLogRead), get(llm_admin::prompt_log)),
        (spec("PUT", "/api/v1/llm/model-signing-key", P::LlmModelTrust), put(models::set_signing_key)),
        (spec("GET", "/api/v1/llm/models", P::LlmModelImport), get(models::list)),
        (spec("POST", browser::CSP_REPORT_PATH, P::Public), post(browser::csp_report)),
        (spec("GET", "/api/v1/security/checks", P::AuditRead), get(security::checks)),
        (spec("POST", MODEL_IMPORT_PATH, P::LlmModelImport), post(models::import)),
        (spec("GET", "/api/v1/system/firmware", P::WorkerRead), get(firmware::status)),
        (spec("POST", FIRMWARE_UPLOAD_PATH, P::FirmwareUpdate), post(firmware::upload)),
        (spec("GET", "/api/v1/system/site", P::WorkerRead), get(site::show)),
        (spec("PUT", "/api/v1/system/site", P::NetworkManage), put(site::change)),
    ]
}

/// Every console route and the permission it needs (for tests and docs).
pub fn console_route_table() -> Vec<RouteSpec> {
    console_routes().into_iter().map(|(s, _)| s).collect()
}

/// Uploads of bundles, gigabytes: they bound their own waits
/// (`api::uploads`) instead of being held to request_timeout.
const MODEL_IMPORT_PATH: &str = "/api/v1/llm/models/import";
const FIRMWARE_UPLOAD_PATH: &str = "/api/v1/system/firmware/update";

/// The console/API router.
pub fn console_router(state: AppState) -> Router {
    let (mut timed, mut untimed) = (Router::new(), Router::new());
    for (spec, route) in console_routes() {
        let guard = middleware::from_fn_with_state((state.clone(), spec.permission), extract::authorize);
        if [MODEL_IMPORT_PATH, FIRMWARE_UPLOAD_PATH].contains(&spec.path) {
            untimed = untimed.route(spec.path, route.route_layer(guard));
        } else {
            timed = timed.route(spec.path, route.route_layer(guard));
        }
    }
    // The LLM gateway's routes authenticate virtual keys themselves: they
    // are for tools, not for the roles of the permission table. They are not
    // held to request_timeout: an answer may take minutes, and the gateway
    // bounds its own waits for the model server.
    let mut router = time_limited(timed, &state)
        .merge(untimed)
        .route("/", get(console::index))
        .route(&format!("{}/{{build}}/{{*path}}", console::ASSETS), get(console::asset))
        .route("/v1/models", get(llm::openai_models))
        .route("/api/tags", get(llm::ollama_tags))
        .route("/api/show", post(llm::ollama_show))
        .route("/api/ps", get(llm::ollama_ps))
        .route("/api/version", get(llm::ollama_version));
    for (operation, protocol) in tether_domain::llm::GATEWAY_ROUTES {
        router = router.route(operation.route(protocol), llm::gateway_route(protocol, operation));
    }
    finish(router.layer(middleware::from_fn_with_state(state.clone(), disk_gate)), state)
}

/// What may still change state while the disk is low: signing in and out,
/// and sealing or unsealing.
const OPEN_WHILE_DISK_LOW: [&str; 5] =
    ["/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/auth/reauth", "/api/v1/sys/unseal", "/api/v1/sys/seal"];

/// Answers 507 to state-changing requests while the disk is low, so the
/// space left (the reserve, given up) goes to the audit log. The refusals
/// are tallied (`audit::tally`): written once space is back.
async fn disk_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes_state && state.space.is_low() && !OPEN_WHILE_DISK_LOW.contains(&req.uri().path()) {
        let origin = extract::anonymous_origin_of(&req);
        let event = tether_domain::audit::Event::new(
            "system.refused_disk_low",
            "refuse",
            tether_domain::audit::Resource::new("route", req.uri().path()),
        )
        .outcome(tether_domain::audit::Outcome::Denied)
        .detail("method", req.method());
        state.failures.note(origin, event).await;
        return ApiError::InsufficientStorage.into_response();
    }
    next.run(req).await
}

/// The worker gateway for connections with a verified client certificate.
/// Identity comes from the certificate ([`extract::WorkerCaller`]).
pub fn worker_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/worker/v1/poll", post(workers::poll))
        .route("/worker/v1/tasks/{id}/heartbeat", post(workers::heartbeat))
        .route(tether_wire::PROGRESS, post(workers::progress))
        .route(tether_wire::OFFERS, post(workers::offers))
        .route("/worker/v1/tasks/{id}/complete", post(workers::complete))
        .route("/worker/v1/renew", post(workers::renew))
        .route("/healthz", get(admin::healthz))
        .layer(middleware::from_fn_with_state(state.clone(), worker_presence));
    finish(time_limited(router, &state), state)
}

/// Counts the worker whose certificate a request comes over as connected
/// while the request is in flight (the alert watches' "silent worker").
async fn worker_presence(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let worker = req.extensions().get::<ConnInfo>().and_then(|c| c.peer.as_ref()).map(|p| p.worker);
    let _present = worker.map(|w| state.monitor.presence(w));
    next.run(req).await
}

/// The worker gateway for enrollment connections: one route, no certificate.
pub fn enroll_router(state: AppState) -> Router {
    finish(time_limited(Router::new().route("/worker/v1/enroll", post(workers::enroll)), &state), state)
}

/// Holds the routes so far to `request_timeout`.
fn time_limited(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.layer(middleware::from_fn_with_state(state.config.limits.request_timeout, time_limit))
}

fn finish(router: Router<AppState>, state: AppState) -> Router {
    let limits = state.config.limits.clone();
    let vault = state.vault.clone();
    // Outermost last: the security headers go on every answer, the CORS
    // policy's and the sealed gate's refusals included.
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(vault, sealed_gate))
        .layer(middleware::from_fn_with_state(state.clone(), browser::cors))
        .layer(middleware::from_fn(browser::headers))
        .with_state(state)
}

/// What answers while the vault is sealed: health, the vault's own routes,
/// worker polls (which wait for the unseal rather than fail), and browsers'
/// policy violation reports.
const OPEN_WHILE_SEALED: [&str; 7] = [
    "/healthz",
    "/api/v1/sys/vault",
    "/api/v1/sys/vault/events",
    "/api/v1/sys/unseal",
    "/api/v1/sys/seal",
    "/worker/v1/poll",
    browser::CSP_REPORT_PATH,
];

/// Answers 503 `sealed` to everything else while the vault is sealed.
async fn sealed_gate(State(vault): State<Arc<Vault>>, req: Request, next: Next) -> Response {
    // The console loads while sealed too: its unseal page is how officers unseal.
    let path = req.uri().path();
    let page = path == "/" || path.strip_prefix(console::ASSETS).is_some_and(|rest| rest.starts_with('/'));
    if vault.is_sealed() && !page && !OPEN_WHILE_SEALED.contains(&path) {
        return ApiError::Sealed.into_response();
    }
    next.run(req).await
}

/// Answers 408 when a request (its body included) takes longer than allowed.
async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Parses a path id; anything unparsable simply names nothing.
fn parse_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// The methods the route table uses, for tests that try the others.
pub const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
