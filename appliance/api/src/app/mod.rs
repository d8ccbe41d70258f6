//! The composition root: [`App::start`] opens the store, builds the
//! services, starts every background task by name and serves the two
//! listeners; [`AppHandle::shutdown`] stops them in order. `tether serve`
//! is argument parsing, this, and a wait for a signal; tests start the same
//! `App` on port 0.

mod background;
pub mod init;
mod reseal;
pub mod supervisor;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use background::Background;
pub use background::TaskHealth;

use crate::config::Config;
use crate::listener_certs::{ListenerCerts, Renewer};
use crate::server::{Endpoint, Server};
use crate::{AppState, Shared};
use tether_base::clock::{SharedClock, SystemClock};
use tether_base::crypto::{self, CryptoPolicy, CryptoStatus};
use tether_base::tls;
use tether_domain::audit::Origin;
use tether_domain::audit::sinks::{SinkContext, Sinks};
use tether_domain::audit::tally::FailureLog;
use tether_domain::broker::Broker;
use tether_domain::vault::{Credential, Vault};
use tether_domain::{auth, disk, evidence, llm, monitor, pki, upgrade};
use tether_store::{self as store, Store};

/// How often overdue leases and finished backoffs are looked for.
const REAPER_INTERVAL: Duration = Duration::from_millis(250);
/// How often encryption counts are checkpointed and key age is checked.
const VAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);
/// How often the free space of the data directory is looked at.
const SPACE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often the alert watches (silent workers, task volume) look.
const MONITOR_INTERVAL: Duration = Duration::from_secs(2);
/// Unauthenticated requests (login, unseal) per second from one address,
/// and the burst allowed above that.
const PUBLIC_RATE: u32 = 10;
const PUBLIC_BURST: u32 = 50;

/// The sockets the appliance serves, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// The console and API.
    pub console: TcpListener,
    /// The worker gateway.
    pub workers: TcpListener,
}

/// What a started appliance tells its operator.
#[derive(Debug, Clone)]
pub struct Ready {
    pub console: SocketAddr,
    pub workers: SocketAddr,
    pub data_dir: PathBuf,
    pub ca_file: PathBuf,
    pub ca_fingerprint: String,
    /// The certificate the console serves at start (see
    /// [`ListenerCerts::console_fingerprint`]; the status file keeps it current).
    pub console_fingerprint: String,
    pub sealed: bool,
    /// Set when the appliance unsealed itself from this key file.
    pub unseal_key_file: Option<PathBuf>,
}

/// The appliance.
#[derive(Debug)]
pub struct App;

impl App {
    /// Starts the appliance on `listeners`, configured by `config`; it runs
    /// until `shutdown` resolves and [`AppHandle::wait`] has stopped it (or
    /// [`AppHandle::shutdown`] is called).
    pub async fn start(
        config: Arc<Config>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<AppHandle> {
        App::start_with_clock(config, listeners, shutdown, Arc::new(SystemClock)).await
    }

    /// As [`App::start`], with every rule about time (sessions, tokens,
    /// leases, lockouts, certificates) reading `clock`: tests move a
    /// [`tether_base::clock::ManualClock`] instead of waiting.
    pub async fn start_with_clock(
        config: Arc<Config>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
        clock: SharedClock,
    ) -> anyhow::Result<AppHandle> {
        let dir = config.data_dir.clone();
        let store = Store::open(&dir).map_err(|e| match e {
            store::Error::AlreadyOpen => {
                anyhow::anyhow!("another tether process is using {}; stop it first", dir.display())
            }
            other => anyhow::Error::new(other).context("opening the store"),
        })?;
        refuse_unfinished_upgrade(&store, &dir, config.unseal_key_file.as_deref())?;
        let policy = store.read(tether_domain::vault::crypto_mode::stored).context("reading the crypto policy")?;
        let certs = Arc::new(ListenerCerts::load(&dir, policy, &store, &config, clock.now())?);
        let cas = certs.ca_set(&store)?;
        let vault = Arc::new(Vault::new(store.clone(), clock.clone()));
        let crypto = Arc::new(start_crypto(policy, &vault, &cas.all(), &certs.served().own)?);
        warn_of_unapproved_worker_keys(&store, policy, &clock, &config)?;
        if let Some(path) = &config.unseal_key_file {
            unseal_from_key_file(&vault, path).await?;
        }
        let (now, token_ttl) = (clock.now(), config.token_ttl);
        let migrated = store.write(move |tx| auth::tokens::migrate_legacy(tx, now, token_ttl)).await?;
        if migrated > 0 {
            tracing::info!(tokens = migrated, "API tokens from an earlier version now carry an owner and an expiry");
        }
        let (console, workers) = (listeners.console.local_addr()?, listeners.workers.local_addr()?);
        let state =
            services(&config, policy, store.clone(), clock.clone(), vault.clone(), certs.clone(), crypto, workers)?;
        // A bundle staged when the appliance last stopped was never imported.
        state.models.tidy();
        state.sinks.reconcile()?;
        state.accounts.restore_throttle().await.context("loading the failed-login counts and lockouts")?;
        // The check may write an alert, which waits for the store: off the runtime.
        let first_look = state.space.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || first_look.check()).await {
            tracing::warn!(error = %e, "cannot check the data directory's free space");
        }
        let mut background = Background::new(state.tasks.clone());
        start_background(&mut background, &state, &config);
        let server = Server::start(endpoints(&state, policy, listeners)?, &config.limits);
        let ready = Ready {
            console,
            workers,
            ca_file: dir.join(pki::CA_CERT),
            ca_fingerprint: pki::fingerprint_pem(&cas.current)?,
            console_fingerprint: state.certs.console_fingerprint()?,
            data_dir: dir,
            sealed: vault.is_sealed(),
            unseal_key_file: config.unseal_key_file.clone(),
        };
        Ok(AppHandle { state, server, background, ready, shutdown: Box::pin(shutdown) })
    }
}

/// A running appliance.
pub struct AppHandle {
    state: AppState,
    server: Server,
    background: Background,
    ready: Ready,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for AppHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppHandle").field("ready", &self.ready).finish_non_exhaustive()
    }
}

impl AppHandle {
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// The services, for what the caller does once it runs (the `--dev`
    /// enrollment token, tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts one more background task under `name`, watched like the
    /// appliance's own.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.background.spawn(name, task);
    }

    /// Runs until the `shutdown` given to [`App::start`] resolves, then stops.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.shutdown).await;
        self.shutdown().await
    }

    /// Stops the appliance: no new leases, parked polls answered, the
    /// listeners closed gracefully, the failure tallies written, the
    /// background tasks stopped (the last started first), the vault sealed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("stopping: no new leases, answering parked polls, closing connections");
        self.state.broker.drain();
        self.server.shutdown().await;
        self.background.stop().await;
        // What the tallies counted since their last record is written now.
        self.state.failures.flush(true).await;
        if !self.state.vault.is_sealed() {
            self.state.vault.seal(&Origin::system()).await?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Builds the services the handlers share.
#[allow(clippy::too_many_arguments)] // one call, the handles it is given
fn services(
    config: &Arc<Config>,
    policy: CryptoPolicy,
    store: Store,
    clock: SharedClock,
    vault: Arc<Vault>,
    certs: Arc<ListenerCerts>,
    crypto: Arc<CryptoStatus>,
    workers: SocketAddr,
) -> anyhow::Result<AppState> {
    let dir = &config.data_dir;
    let metrics = Arc::<tether_domain::metrics::Metrics>::default();
    let broker = Broker::new(store.clone(), clock.clone(), vault.clone(), config.broker.clone(), metrics.clone());
    let space = Arc::new(disk::Watch::new(store.clone(), clock.clone(), dir, config.disk_reserve_bytes));
    let low = space.clone();
    let failures =
        Arc::new(FailureLog::new(store.clone(), clock.clone(), config.audit_failure_window, move || low.is_low()));
    let accounts = Arc::new(auth::Accounts::new(
        store.clone(),
        vault.clone(),
        clock.clone(),
        policy,
        config.sessions,
        config.mfa_required_roles.clone(),
        failures.clone(),
    ));
    let sso = match &config.sso {
        Some(settings) => Some(Arc::new(
            auth::sso::Sso::new(settings.clone(), store.clone(), clock.clone(), accounts.clone())
                .context("single sign-on ([sso] in the configuration)")?,
        )),
        None => None,
    };
    // A worker is connected while a request of its is in flight: between
    // them it waits no longer than a heartbeat (all its slots busy), so a
    // silence longer than the grace and a beat and a half is no busy worker's.
    let silent_after = config.worker_silence_grace.max(config.broker.heartbeat() * 3 / 2);
    let sinks = SinkContext {
        store: store.clone(),
        clock: clock.clone(),
        hostname: config.server_names.first().cloned().unwrap_or_else(|| "tether".into()),
        down_alert_after: config.audit_sink_down_alert,
    };
    let models =
        llm::models::Imports::new(store.clone(), vault.clone(), clock.clone(), dir, config.vllm_model_dir.clone());
    let deliveries = Arc::<pki::BundleDeliveries>::default();
    let revoked = store.read(pki::Revoked::load).context("loading the revoked workers")?;
    let authority = pki::Authority::new(pki::AuthorityParts {
        store: store.clone(),
        vault: vault.clone(),
        clock: clock.clone(),
        policy,
        lifetime: config.worker_cert_lifetime,
        grace: config.worker_cert_grace,
        failures: failures.clone(),
        deliveries: deliveries.clone(),
        revoked: revoked.clone(),
        ca_file_pem: certs.ca_file_pem().to_owned(),
    });
    Ok(AppState::new(Shared {
        evidence: Arc::new(tether_domain::evidence::Evidence::new(store.clone(), vault.clone(), clock.clone())),
        authority: Arc::new(authority),
        revoked,
        monitor: Arc::new(monitor::Monitor::new(store.clone(), clock.clone(), silent_after)),
        llm: Arc::new(llm::Gateway::new(store.clone(), vault.clone(), clock.clone(), metrics.clone())),
        metrics,
        started_at: clock.now(),
        models: Arc::new(models),
        firmware: config.firmware.clone().map(|image| {
            Arc::new(tether_domain::firmware::upload::Uploads::new(store.clone(), clock.clone(), dir, image))
        }),
        sinks: Arc::new(Sinks::new(sinks)),
        public_limit: Arc::new(auth::throttle::RateLimiter::new(PUBLIC_RATE, PUBLIC_BURST)),
        deliveries,
        tasks: Arc::default(),
        csp_reports: Default::default(),
        worker_port: workers.port(),
        config: config.clone(),
        store,
        broker,
        clock,
        vault,
        crypto,
        certs,
        accounts,
        failures,
        space,
        sso,
    }))
}

/// Every background task, by name.
fn start_background(background: &mut Background, state: &AppState, config: &Config) {
    let s = state;
    background.spawn("disk watch", s.space.clone().run(SPACE_CHECK_INTERVAL));
    background.spawn("failure tallies", s.failures.clone().run());
    background.spawn("alert watches", s.monitor.clone().run(MONITOR_INTERVAL));
    let (store, vault, clock) = (s.store.clone(), s.vault.clone(), s.clock.clone());
    let archive = config.audit_archive_dir.clone();
    background.spawn("audit retention", evidence::retention::run(store, vault, clock, config.audit_retention, archive));
    let (store, vault, clock) = (s.store.clone(), s.vault.clone(), s.clock.clone());
    background
        .spawn("audit checkpoints", evidence::checkpoints::run(store, vault, clock, config.audit_checkpoint_interval));
    background.spawn("lease reaper", s.broker.clone().run_reaper(REAPER_INTERVAL));
    let maintenance = s.vault.clone().run_maintenance(VAULT_MAINTENANCE_INTERVAL, config.key_rotation_age);
    background.spawn("vault maintenance", maintenance);
    let reseal = reseal::run_forever(s.broker.clone(), s.store.clone(), s.vault.clone(), VAULT_MAINTENANCE_INTERVAL);
    background.spawn("re-encryption", reseal);
    let renewer =
        Renewer { store: s.store.clone(), vault: s.vault.clone(), clock: s.clock.clone(), config: s.config.clone() };
    background.spawn("listener certificates", s.certs.clone().run(renewer));
    background.spawn("model server health", s.llm.clone().run_health_checks(config.llm_health_interval));
    let retention = llm::prompt_log::run_retention(s.store.clone(), s.clock.clone(), config.llm_prompt_log_retention);
    background.spawn("prompt log retention", retention);
}

/// What the two listeners serve.
fn endpoints(
    state: &AppState,
    policy: CryptoPolicy,
    listeners: Listeners,
) -> anyhow::Result<Vec<(TcpListener, Endpoint)>> {
    let (certs, revoked, grace) = (&state.certs, state.revoked.clone(), state.config.worker_cert_grace);
    let console = Endpoint::Console {
        tls: tls::console_server(policy, certs.console.clone())?,
        app: crate::console_router(state.clone()),
        metrics: state.metrics.clone(),
    };
    let workers = Endpoint::Worker {
        mtls: tls::worker_server(
            policy,
            certs.own.clone(),
            certs.worker_trust.clone(),
            Arc::new(move |der, now| revoked.admit(der, now, grace)),
        )?,
        app: crate::worker_router(state.clone()),
        enroll_tls: tls::enroll_server(policy, certs.enroll.clone())?,
        enroll_app: crate::enroll_router(state.clone()),
        state: state.clone(),
    };
    Ok(vec![(listeners.console, console), (listeners.workers, workers)])
}

/// A directory from before the vault (or one whose upgrade was cut short)
/// is not served: its records are not in the layout this build reads.
fn refuse_unfinished_upgrade(store: &Store, dir: &Path, key_file: Option<&Path>) -> anyhow::Result<()> {
    let unseal = match key_file {
        Some(path) => format!("--unseal key-file --key-file {}", path.display()),
        None => "--unseal shares|passphrase|key-file …".to_owned(),
    };
    match upgrade::needed(store)? {
        upgrade::Needed::Nothing => Ok(()),
        upgrade::Needed::Begin => anyhow::bail!(
            "{} was made by a tether from before the vault; upgrade it first: \
             `tether upgrade --data-dir {0} {unseal}`",
            dir.display()
        ),
        upgrade::Needed::Resume(p) => anyhow::bail!(
            "the upgrade of {} stopped after sealing {} of {} tasks; finish it with \
             `tether upgrade --data-dir {0}` and the unseal credentials it was given",
            dir.display(),
            p.sealed,
            p.total
        ),
    }
}

/// Runs what the crypto policy asks of a start. In FIPS mode: the
/// self-tests pass, and every key and stored parameter is one the policy
/// approves, or the appliance does not start and says which is not.
fn start_crypto(policy: CryptoPolicy, vault: &Vault, ca_pems: &[&str], cert_pem: &str) -> anyhow::Result<CryptoStatus> {
    let status = policy.start().context("FIPS mode: refusing to start")?;
    if !policy.is_fips() {
        return Ok(status);
    }
    let refuse = |e: crypto::NotApproved| {
        anyhow::anyhow!(
            "FIPS mode: refusing to start: {e}; replace it with an approved one (see the README, FIPS mode)"
        )
    };
    let cas = ca_pems.iter().map(|pem| ("the CA certificate's key (ca.pem)", *pem));
    for (what, pem) in cas.chain([("the server certificate's key (server.pem)", cert_pem)]) {
        policy.check_own_key(what, pki::cert_key_kind(pem)?).map_err(refuse)?;
    }
    if let Some(method) = vault.method()? {
        method.check(policy).map_err(refuse)?;
    }
    tracing::info!(tests = status.self_tests_passed.len(), "FIPS mode: self-tests passed, every key approved");
    Ok(status)
}

/// Workers are not the appliance's keys: one the policy does not approve
/// (enrolled before a switch to FIPS) fails its handshake; say so.
fn warn_of_unapproved_worker_keys(
    store: &Store,
    policy: CryptoPolicy,
    clock: &SharedClock,
    config: &Config,
) -> anyhow::Result<()> {
    let unapproved = store.read(|tx| pki::unapproved_worker_keys(tx, policy, clock.now(), config.worker_cert_grace))?;
    for (worker, kind) in unapproved {
        tracing::warn!(%worker, key = kind.as_str(), "this worker's key is not allowed in {} mode: it cannot connect; revoke it and enroll it again with an ECDSA key", policy.mode.as_str());
    }
    Ok(())
}

/// Unattended start: unseal with the key file at `path`, or refuse to start.
async fn unseal_from_key_file(vault: &Vault, path: &Path) -> anyhow::Result<()> {
    let text = tether_base::files::read_secret(path)?;
    vault
        .unseal(&Origin::system(), Credential::KeyFile(text))
        .await
        .with_context(|| format!("cannot unseal with the key file {}", path.display()))?;
    tracing::warn!(key_file = %path.display(), "unsealed automatically from a key file: anyone holding it can read this appliance's data");
    Ok(())
}
