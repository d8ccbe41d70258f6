//! `tether serve`: run the appliance until SIGTERM, then drain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;

use super::init;
use tether_api::app::supervisor::{self, Supervisor};
use tether_api::app::{App, Listeners, Ready};
use tether_api::config::{CONFIG_FILE, RawConfig};
use tether_base::crypto;
use tether_domain::audit::Origin;
use tether_domain::{pki, vault};
use tether_store as store;

use tether_api::app::init::{DEV_TOKEN_FILE, DEV_UNSEAL_KEY_FILE};
const DEV_ENROLL_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    dir: super::DataDir,
    #[command(flatten)]
    pub log: super::logging::LogArgs,
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
    /// Keep the status in this file for the machine's status screen
    /// (`tether screen`): where to connect, the certificate to expect, and
    /// in setup mode the setup code, which then is shown there only (not
    /// printed, so not kept in the journal).
    #[arg(long, value_name = "FILE", env = "TETHER_STATUS_FILE")]
    status_file: Option<PathBuf>,
}

/// What `--dev` prints beyond the ready line.
struct DevLogin {
    admin_token: Option<String>,
    admin_password: Option<zeroize::Zeroizing<String>>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Before any key exists: no core dumps, no ptrace by others.
    vault::memory::harden_process();
    let dir = args.dir.data_dir.clone();
    let mut dev = DevLogin { admin_token: None, admin_password: None };
    if args.dev && !dir.join(store::DB_FILE).exists() {
        let target = dir.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let key_file = target.join(DEV_UNSEAL_KEY_FILE);
            init::initialise(&target, &[], crypto::CryptoPolicy::STANDARD, vault::Choice::KeyFile, Some(&key_file))
        })
        .await??;
        tether_base::files::write_private(&outcome.data_dir.join(DEV_TOKEN_FILE), outcome.admin_token.as_bytes())?;
        dev.admin_token = Some(outcome.admin_token.clone());
        dev.admin_password = Some(outcome.admin_password.clone());
    }
    // Never initialised (the image's first boot): setup mode comes first.
    let setting_up = !args.dev && !dir.join(store::DB_FILE).exists();
    if setting_up {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
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
        raw.unseal_key_file = Some(dir.join(DEV_UNSEAL_KEY_FILE).display().to_string());
        if dev.admin_token.is_none() {
            dev.admin_token = std::fs::read_to_string(dir.join(DEV_TOKEN_FILE)).ok();
        }
    }
    let mut config = raw.validate(dir.clone())?;
    config.firmware = crate::firmware::on_the_image(super::release::release_key())?;
    let config = Arc::new(config);
    let listeners = Listeners {
        console: TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (set --listen)", config.listen))?,
        workers: TcpListener::bind(config.worker_listen)
            .await
            .with_context(|| format!("cannot listen on {} (set --worker-listen)", config.worker_listen))?,
    };
    // systemd (Type=notify) hears when it serves, how it is, and when it stops.
    let mut supervisor = Supervisor::from_env();
    if let Some(path) = &args.status_file {
        supervisor = supervisor.with_status_file(path.clone());
    }
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let signal = stop_signal()?;
    let told = supervisor.clone();
    tokio::spawn(async move {
        signal.await;
        told.stopping();
        let _ = stopping.send(true);
    });
    let mut until_stopped = stopped.clone();
    let stop = async move {
        let _ = until_stopped.wait_for(|s| *s).await;
    };
    let listeners = if setting_up {
        let shown = Shown { json: args.json, code_on_screen: args.status_file.is_some() };
        match set_up(&dir, &config, listeners, shown, stopped, supervisor.clone()).await? {
            Some(listeners) => listeners,
            None => return Ok(ExitCode::SUCCESS),
        }
    } else {
        listeners
    };
    let mut app = App::start(config, listeners, stop).await?;
    // Serving now: the store is open, both listeners are bound and answer.
    supervisor.show(on_screen(app.ready()));
    supervisor.ready(&supervisor::describe(app.state()));
    app.spawn("supervisor", supervisor::run(app.state().clone(), supervisor));
    let mut ready = ready_line(app.ready());
    if args.dev {
        let now = app.state().clock.now();
        let (_, enroll) = app
            .state()
            .store
            .write(move |tx| pki::create_enrollment_token(tx, now, &Origin::system(), None, DEV_ENROLL_TTL))
            .await?;
        let exe = std::env::current_exe().unwrap_or_else(|_| "tether".into());
        let ready_for = app.ready();
        let worker_cmd = format!(
            "{} worker --broker https://{} --enroll-token {enroll} --ca-file {} --state-dir ./tether-worker",
            exe.display(),
            ready_for.workers,
            ready_for.ca_file.display()
        );
        ready["console_url"] = json!(format!("https://{}/", ready_for.console));
        ready["admin_token"] = json!(dev.admin_token);
        ready["admin_user"] = json!(init::FIRST_ADMIN);
        ready["admin_password"] = json!(dev.admin_password.as_ref().map(|p| p.as_str()));
        ready["worker_command"] = json!(worker_cmd);
    }
    announce(&ready, args.json, args.dev);
    app.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// How setup mode is announced: the JSON line, or lines for a person; the
/// setup code in them unless the status screen shows it.
struct Shown {
    json: bool,
    code_on_screen: bool,
}

/// Serves setup mode on the console listener until the wizard has set the
/// appliance up (`Some`: the same sockets, for serving it) or a signal
/// stops it (`None`).
async fn set_up(
    dir: &std::path::Path,
    config: &tether_api::config::Config,
    listeners: Listeners,
    shown: Shown,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    supervisor: Supervisor,
) -> anyhow::Result<Option<Listeners>> {
    let address = listeners.console.local_addr()?;
    // The socket stays open across the switch: connections made meanwhile
    // wait in its backlog for the appliance proper.
    let socket = listeners.console.into_std()?;
    let kept = socket.try_clone()?;
    let mut names = config.server_names.clone();
    if !address.ip().is_unspecified() {
        names.push(address.ip().to_string());
    }
    let mode = tether_api::setup::start(dir.to_owned(), TcpListener::from_std(socket)?, names, &config.limits)?;
    let line = json!({
        "event": "setup",
        "listen": address.to_string(),
        "setup_code": mode.code.as_str(),
        "certificate_fingerprint": mode.fingerprint,
        "code_expires_at": mode.expires_at.to_rfc3339(),
    });
    supervisor.show(json!({
        "mode": "setup",
        "listen": address.to_string(),
        supervisor::CONSOLE_CERTIFICATE: mode.fingerprint,
        "setup_code": mode.code.as_str(),
        "code_expires_at": mode.expires_at.to_rfc3339(),
        "version": env!("CARGO_PKG_VERSION"),
    }));
    if shown.json {
        println!("{line}");
    } else {
        println!("tether is in SETUP MODE: this appliance has not been set up yet.");
        println!("  open           https://{address}/ (or this host's name or address)");
        if shown.code_on_screen {
            println!("  setup code     on the machine's status screen (tty1), or `sudo tether screen --once`");
        } else {
            println!("  setup code     {}   (single use, valid 30 minutes)", mode.code.as_str());
        }
        println!("  certificate    SHA-256 {}", mode.fingerprint);
        println!("The browser warns about the certificate: check that its fingerprint is the one above.");
    }
    // Setup mode serves, and may wait for its operator a long while.
    supervisor.ready(&format!("setup mode: open https://{address}/ and enter the setup code"));
    tokio::select! {
        done = mode.finished() => done?,
        _ = stopped.wait_for(|s| *s) => return Ok(None),
        // systemd's watchdog covers setup mode too (it can wait for hours).
        () = supervisor::keep_alive(supervisor) => unreachable!("keep_alive never returns"),
    }
    tracing::info!("set up through the wizard; serving the appliance");
    Ok(Some(Listeners { console: TcpListener::from_std(kept)?, workers: listeners.workers }))
}

/// What the status screen shows of the appliance serving.
fn on_screen(ready: &Ready) -> serde_json::Value {
    json!({
        "mode": "serving",
        "listen": ready.console.to_string(),
        "worker_listen": ready.workers.to_string(),
        "ca_fingerprint": ready.ca_fingerprint,
        supervisor::CONSOLE_CERTIFICATE: ready.console_fingerprint,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The ready line: what the appliance serves, and where its CA is.
fn ready_line(ready: &Ready) -> serde_json::Value {
    json!({
        "event": "ready",
        "listen": ready.console.to_string(),
        "worker_listen": ready.workers.to_string(),
        "ca_file": ready.ca_file,
        "ca_fingerprint": ready.ca_fingerprint,
        "data_dir": ready.data_dir,
        "sealed": ready.sealed,
        "unseal_key_file": ready.unseal_key_file,
    })
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

/// Resolves at SIGTERM or SIGINT.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
