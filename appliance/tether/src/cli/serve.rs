//! `tether serve`: run the appliance until SIGTERM, then drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;

use super::init;
use tether_api::config::{CONFIG_FILE, RawConfig};
use tether_api::listener_certs::{ListenerCerts, Renewer};
use tether_api::server::{Endpoint, Server};
use tether_api::{self as api, AppState, Shared};
use tether_base::clock::{SharedClock, SystemClock};
use tether_base::crypto;
use tether_base::tls;
use tether_domain::audit::Origin;
use tether_domain::auth;
use tether_domain::broker::Broker;
use tether_domain::pki;
use tether_domain::pki::CA_CERT;
use tether_domain::upgrade;
use tether_domain::vault::{self, Credential, Vault, secrets};
use tether_store::{self as store, Store};

/// How often overdue leases and finished backoffs are looked for.
const REAPER_INTERVAL: Duration = Duration::from_millis(250);
/// In `--dev`, where the first admin token is kept so later starts can show it.
const DEV_TOKEN_FILE: &str = "dev-admin-token";
/// In `--dev`, the unseal key file, kept (unlike on a real site) in the data directory.
const DEV_UNSEAL_KEY_FILE: &str = "dev-unseal.key";
/// How often encryption counts are checkpointed and key age is checked.
const VAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);
const DEV_ENROLL_TTL: Duration = Duration::from_secs(3600);
/// Unauthenticated requests (login, unseal) per second from one address,
/// and the burst allowed above that.
/// How often the free space of the data directory is looked at.
const SPACE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How often the alert watches (silent workers, task volume) look.
const MONITOR_INTERVAL: Duration = Duration::from_secs(2);
const PUBLIC_RATE: u32 = 10;
const PUBLIC_BURST: u32 = 50;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    dir: super::DataDir,
    /// Configuration file (default: DATA_DIR/tether.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Console/API listener address (default 0.0.0.0:8443; 127.0.0.1:8443 with --dev).
    #[arg(long, env = "TETHER_LISTEN")]
    listen: Option<String>,
    /// Worker gateway address (default 0.0.0.0:9443; 127.0.0.1:9443 with --dev).
    #[arg(long, env = "TETHER_WORKER_LISTEN")]
    worker_listen: Option<String>,
    /// Development mode: initialise an empty data directory on first run,
    /// bind loopback only, and print everything needed to attach a worker.
    #[arg(long)]
    dev: bool,
    /// Print the ready line as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// A directory from before the vault (or one whose upgrade was cut short)
/// is not served: its records are not in the layout this build reads.
fn refuse_unfinished_upgrade(store: &Store, dir: &Path, dev: bool) -> anyhow::Result<()> {
    let unseal = if dev {
        format!("--unseal key-file --key-file {}", dir.join(DEV_UNSEAL_KEY_FILE).display())
    } else {
        "--unseal shares|passphrase|key-file …".to_owned()
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
fn start_crypto(
    policy: crypto::CryptoPolicy,
    vault: &Vault,
    ca_pems: &[&str],
    cert_pem: &str,
) -> anyhow::Result<crypto::CryptoStatus> {
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

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Before any key exists: no core dumps, no ptrace by others.
    vault::memory::harden_process();
    let dir = args.dir.data_dir.clone();
    let mut admin_token = None;
    let mut admin_password = None;
    if args.dev && !dir.join(store::DB_FILE).exists() {
        let target = dir.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let key_file = target.join(DEV_UNSEAL_KEY_FILE);
            init::initialise(&target, &[], crypto::CryptoPolicy::STANDARD, vault::Choice::KeyFile, Some(&key_file))
        })
        .await??;
        tether_base::files::write_private(&outcome.data_dir.join(DEV_TOKEN_FILE), outcome.admin_token.as_bytes())?;
        admin_token = Some(outcome.admin_token.clone());
        admin_password = Some(outcome.admin_password.clone());
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{} does not exist; run `tether init --data-dir {0}` first", dir.display()))?;
    let config_path = args.config.clone().unwrap_or_else(|| dir.join(CONFIG_FILE));
    let mut raw = RawConfig::from_file(&config_path, args.config.is_some())?;
    raw.apply_env(|k| std::env::var(k).ok())?;
    if let Some(l) = args.listen {
        raw.listen = Some(l);
    }
    if let Some(l) = args.worker_listen {
        raw.worker_listen = Some(l);
    }
    if args.dev {
        raw.listen.get_or_insert_with(|| "127.0.0.1:8443".into());
        raw.worker_listen.get_or_insert_with(|| "127.0.0.1:9443".into());
        if admin_token.is_none() {
            admin_token = std::fs::read_to_string(dir.join(DEV_TOKEN_FILE)).ok();
        }
    }
    let config = Arc::new(raw.validate(dir.clone())?);

    let store = Store::open(&dir).map_err(|e| match e {
        store::Error::AlreadyOpen => {
            anyhow::anyhow!("another tether process is using {}; stop it first", dir.display())
        }
        other => anyhow::Error::new(other).context("opening the store"),
    })?;
    refuse_unfinished_upgrade(&store, &dir, args.dev)?;
    let policy = store.read(tether_domain::vault::crypto_mode::stored).context("reading the crypto policy")?;
    let clock: SharedClock = Arc::new(SystemClock);
    let certs = Arc::new(ListenerCerts::load(&dir, policy, &store, &config, clock.now())?);
    let cas = certs.ca_set(&store)?;
    let vault = Arc::new(Vault::new(store.clone(), clock.clone()));
    let crypto = Arc::new(start_crypto(policy, &vault, &cas.all(), &certs.served().own)?);
    // Workers are not the appliance's keys: one the policy does not approve
    // (enrolled before a switch to FIPS) fails its handshake; say so.
    let unapproved = store.read(|tx| pki::unapproved_worker_keys(tx, policy, clock.now(), config.worker_cert_grace))?;
    for (worker, kind) in unapproved {
        tracing::warn!(%worker, key = kind.as_str(), "this worker's key is not allowed in {} mode: it cannot connect; revoke it and enroll it again with an ECDSA key", policy.mode.as_str());
    }
    let key_file = if args.dev { Some(dir.join(DEV_UNSEAL_KEY_FILE)) } else { config.unseal_key_file.clone() };
    if let Some(path) = &key_file {
        unseal_from_key_file(&vault, path).await?;
    }
    let broker = Broker::new(store.clone(), clock.clone(), vault.clone(), config.broker.clone());
    let (now, token_ttl) = (clock.now(), config.token_ttl);
    let migrated = store.write(move |tx| auth::tokens::migrate_legacy(tx, now, token_ttl)).await?;
    if migrated > 0 {
        tracing::info!(tokens = migrated, "API tokens from an earlier version now carry an owner and an expiry");
    }
    let space =
        Arc::new(tether_domain::disk::Watch::new(store.clone(), clock.clone(), &dir, config.disk_reserve_bytes));
    let low = space.clone();
    let failures = Arc::new(tether_domain::audit::tally::FailureLog::new(
        store.clone(),
        clock.clone(),
        config.audit_failure_window,
        move || low.is_low(),
    ));
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
    let silent_after = config.broker.max_poll_wait + config.worker_silence_grace;
    let monitor = Arc::new(tether_domain::monitor::Monitor::new(store.clone(), clock.clone(), silent_after));
    // The check may write an alert, which waits for the store: off the runtime.
    let first_look = space.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || first_look.check()).await {
        tracing::warn!(error = %e, "cannot check the data directory's free space");
    }
    let console = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set --listen)", config.listen))?;
    let workers = TcpListener::bind(config.worker_listen)
        .await
        .with_context(|| format!("cannot listen on {} (set --worker-listen)", config.worker_listen))?;
    let (console_addr, worker_addr) = (console.local_addr()?, workers.local_addr()?);
    let revoked = store.read(pki::Revoked::load).context("loading the revoked workers")?;
    let state = AppState::new(Shared {
        store: store.clone(),
        broker: broker.clone(),
        clock: clock.clone(),
        vault: vault.clone(),
        config: config.clone(),
        revoked: revoked.clone(),
        worker_port: worker_addr.port(),
        crypto,
        certs: certs.clone(),
        deliveries: Arc::default(),
        accounts,
        public_limit: Arc::new(auth::throttle::RateLimiter::new(PUBLIC_RATE, PUBLIC_BURST)),
        failures: failures.clone(),
        sinks: Arc::new(tether_domain::audit::sinks::Sinks::new(tether_domain::audit::sinks::SinkContext {
            store: store.clone(),
            clock: clock.clone(),
            hostname: config.server_names.first().cloned().unwrap_or_else(|| "tether".into()),
            down_alert_after: config.audit_sink_down_alert,
        })),
        space: space.clone(),
        monitor: monitor.clone(),
        sso,
        llm: Arc::new(tether_domain::llm::Gateway::new(store.clone(), vault.clone(), clock.clone())),
        models: Arc::new(tether_domain::llm::models::Imports::new(
            store.clone(),
            vault.clone(),
            clock.clone(),
            &dir,
            config.vllm_model_dir.clone(),
        )),
    });
    // A bundle staged when the appliance last stopped was never imported.
    state.models.tidy();
    state.sinks.reconcile()?;
    let space_watch = tokio::spawn(space.run(SPACE_CHECK_INTERVAL));
    let failure_tallies = tokio::spawn(failures.clone().run());
    let watches = tokio::spawn(monitor.run(MONITOR_INTERVAL));
    let retention = tokio::spawn(tether_domain::evidence::retention::run(
        store.clone(),
        vault.clone(),
        clock.clone(),
        config.audit_retention,
        config.audit_archive_dir.clone(),
    ));
    let checkpoints = tokio::spawn(tether_domain::evidence::checkpoints::run(
        store.clone(),
        vault.clone(),
        clock.clone(),
        config.audit_checkpoint_interval,
    ));

    let grace = config.worker_cert_grace;
    let endpoints = vec![
        (
            console,
            Endpoint::Console {
                tls: tls::console_server(policy, certs.console.clone())?,
                app: api::console_router(state.clone()),
            },
        ),
        (
            workers,
            Endpoint::Worker {
                mtls: tls::worker_server(
                    policy,
                    certs.own.clone(),
                    certs.worker_trust.clone(),
                    Arc::new(move |der, now| revoked.admit(der, now, grace)),
                )?,
                app: api::worker_router(state.clone()),
                enroll_tls: tls::enroll_server(policy, certs.enroll.clone())?,
                enroll_app: api::enroll_router(state.clone()),
                state: state.clone(),
            },
        ),
    ];
    let server = Server::start(endpoints, &config.limits);
    let reaper = tokio::spawn(broker.clone().run_reaper(REAPER_INTERVAL));
    let maintenance = tokio::spawn(vault.clone().run_maintenance(VAULT_MAINTENANCE_INTERVAL, config.key_rotation_age));
    let refresher = tokio::spawn(refresh_seals_forever(broker.clone(), store.clone(), vault.clone()));
    let renewer = Renewer { store: store.clone(), vault: vault.clone(), clock: clock.clone(), config: config.clone() };
    let cert_keeper = tokio::spawn(certs.clone().run(renewer));
    let model_servers = tokio::spawn(state.llm.clone().run_health_checks(config.llm_health_interval));
    let prompt_log = tokio::spawn(tether_domain::llm::prompt_log::run_retention(
        store.clone(),
        clock.clone(),
        config.llm_prompt_log_retention,
    ));

    let ca_file = dir.join(CA_CERT);
    let mut ready = json!({
        "event": "ready",
        "listen": console_addr.to_string(),
        "worker_listen": worker_addr.to_string(),
        "ca_file": ca_file,
        "ca_fingerprint": pki::fingerprint_pem(&cas.current)?,
        "data_dir": dir,
        "sealed": vault.is_sealed(),
        "unseal_key_file": key_file,
    });
    if args.dev {
        let now = clock.now();
        let (_, enroll) = store
            .write(move |tx| pki::create_enrollment_token(tx, now, &Origin::system(), None, DEV_ENROLL_TTL))
            .await?;
        let exe = std::env::current_exe().unwrap_or_else(|_| "tether".into());
        let worker_cmd = format!(
            "{} worker --broker https://{worker_addr} --enroll-token {enroll} --ca-file {} --state-dir ./tether-worker",
            exe.display(),
            ca_file.display()
        );
        ready["console_url"] = json!(format!("https://{console_addr}/"));
        ready["admin_token"] = json!(admin_token);
        ready["admin_user"] = json!(init::FIRST_ADMIN);
        ready["admin_password"] = json!(admin_password.as_ref().map(|p| p.as_str()));
        ready["worker_command"] = json!(worker_cmd);
    }
    announce(&ready, args.json, args.dev);

    wait_for_stop_signal().await?;
    tracing::info!("stopping: no new leases, answering parked polls, closing connections");
    broker.drain();
    server.shutdown().await;
    failure_tallies.abort();
    // What the tallies counted since their last record is written now.
    failures.flush(true).await;
    reaper.abort();
    model_servers.abort();
    prompt_log.abort();
    maintenance.abort();
    checkpoints.abort();
    space_watch.abort();
    watches.abort();
    retention.abort();
    refresher.abort();
    cert_keeper.abort();
    if !vault.is_sealed() {
        vault.seal(&Origin::system()).await?;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The background re-encryption: once per start and after every rotation,
/// walks every sealed value and moves those an older data key sealed to
/// the newest, a batch per transaction, so old keys end up sealing nothing.
async fn refresh_seals_forever(broker: Broker, store: Store, vault: Arc<Vault>) {
    let mut done_for = None;
    let mut tick = tokio::time::interval(VAULT_MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(current) = vault.keys().and_then(|k| k.current_version()) else {
            continue;
        };
        if done_for == Some(current) {
            continue;
        }
        match refresh_seals(&broker, &store, &vault).await {
            Ok(moved) => {
                if moved > 0 {
                    tracing::info!(moved, version = current, "re-encrypted values under the newest data key");
                }
                done_for = Some(current);
            }
            Err(e) => tracing::warn!(error = %e, "re-encryption paused; will retry"),
        }
    }
}

/// One pass of [`refresh_seals_forever`]: tasks, secret values, the CA key,
/// the audit signing key, people's TOTP secrets, model servers' credentials,
/// the prompt log.
async fn refresh_seals(broker: &Broker, store: &Store, vault: &Vault) -> anyhow::Result<usize> {
    let (mut moved, mut after) = (0, None);
    loop {
        let (n, next) = broker.refresh_seals(after).await?;
        moved += n;
        match next {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    let keys = vault.keys()?;
    moved += store
        .write(move |tx| {
            let values = secrets::refresh_seals(tx, &keys)?;
            let ca = pki::refresh_ca_key(tx, &keys)?;
            let audit_key = usize::from(tether_domain::evidence::signing::refresh_key(tx, &keys)?);
            let totp = auth::users::refresh_seals(tx, &keys)?;
            let upstreams = tether_domain::llm::upstreams::refresh_seals(tx, &keys)?;
            let prompts = tether_domain::llm::prompt_log::refresh_seals(tx, &keys)?;
            Ok::<_, vault::Error>(values + ca + audit_key + totp + upstreams + prompts)
        })
        .await?;
    Ok(moved)
}

fn announce(ready: &serde_json::Value, json: bool, dev: bool) {
    if json {
        println!("{ready}");
        return;
    }
    let s = |k: &str| ready[k].as_str().unwrap_or("").to_owned();
    println!("tether is ready");
    println!("  console/API    https://{}", s("listen"));
    println!("  worker gateway https://{}", s("worker_listen"));
    println!("  CA certificate {} ({})", s("ca_file"), s("ca_fingerprint"));
    if ready["sealed"] == true {
        println!("\nThe vault is SEALED: nothing runs until it is unsealed with `tether unseal`.");
    } else if let Some(path) = ready["unseal_key_file"].as_str() {
        println!("\nWARNING: unsealed automatically from the key file {path}.");
        println!("Anyone holding that file can read this appliance's data; keep it on separate media.");
    }
    if dev {
        println!("\nDevelopment mode: loopback only, data in {}", s("data_dir"));
        match ready["admin_token"].as_str() {
            Some(t) => println!("  admin token    {t}"),
            None => println!("  admin token    (shown at first start only)"),
        }
        if let Some(p) = ready["admin_password"].as_str() {
            println!(
                "  console login  {} / {p}  (choose your own password and set up TOTP at first login)",
                s("admin_user")
            );
        }
        println!("\nUse the CLI against it:");
        println!(
            "  export TETHER_URL=https://{} TETHER_CA_FILE={} TETHER_TOKEN=<admin token>",
            s("listen"),
            s("ca_file")
        );
        println!("\nAttach a local worker (the enrollment token is single use, valid 1 hour):");
        println!("  {}", s("worker_command"));
    }
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

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
