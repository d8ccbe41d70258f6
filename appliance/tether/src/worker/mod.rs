//! The worker agent: enroll once, then pull tasks and run them.
//!
//! The worker only ever connects out: it opens no listening socket. It
//! generates its key locally (the key never leaves the state directory),
//! enrolls with a single-use token and a CSR, then long-polls the broker
//! over mTLS, runs what its own configuration allows, heartbeats at a third
//! of the lease, reports, and renews its certificate at two thirds of its
//! lifetime. When the broker is unreachable it backs off with jitter; after
//! either side restarts it resumes with the identity in its state directory.

pub mod client;
pub mod config;
pub mod handlers;
pub mod progress;
mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use client::{BrokerClient, CallError, LeasedTask, Report, ReportedError};
use config::WorkerConfig;
pub use state::{Identity, StateDir};

use tether_api::app::supervisor::Supervisor;
use tether_base::clock::{Clock, SystemClock, Timestamp};
use tether_base::tls;
use tether_domain::pki;

/// How long one poll asks the broker to hold on.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// How long running tasks get to finish after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What `tether worker` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The worker gateway; none: the one in the state directory (a worker
    /// that enrolled before resumes from its state alone).
    pub broker: Option<String>,
    pub enroll_token: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `sha256:<hex>` of the CA certificate, lower case.
    pub ca_pin: Option<String>,
    pub state_dir: PathBuf,
    pub config: WorkerConfig,
    /// Print one JSON event per line on stdout (enrolled, ready, task_*).
    pub json_events: bool,
}

/// What a join string carries: `tether://HOST:PORT?token=…&ca=sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// `https://HOST:PORT`, the worker gateway.
    pub broker: String,
    pub token: String,
    pub ca_pin: String,
}

impl Join {
    pub fn parse(raw: &str) -> anyhow::Result<Join> {
        let bad = |why: &str| {
            anyhow::anyhow!("the join string is not usable: {why} (expected tether://HOST:PORT?token=…&ca=sha256:…)")
        };
        let url = reqwest::Url::parse(raw.trim()).map_err(|_| bad("not a URL"))?;
        if url.scheme() != "tether" {
            return Err(bad("it must start with tether://"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port().ok_or_else(|| bad("no port"))?;
        let (mut token, mut pin) = (None, None);
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "token" => token = Some(value.into_owned()),
                "ca" => pin = Some(parse_pin(&value)?),
                other => return Err(bad(&format!("unknown parameter {other:?}"))),
            }
        }
        Ok(Join {
            broker: format!("https://{host}:{port}"),
            token: token.ok_or_else(|| bad("no token"))?,
            ca_pin: pin.ok_or_else(|| bad("no ca pin"))?,
        })
    }
}

/// A CA pin as `tether` prints it: `sha256:` and 64 hex digits.
pub fn parse_pin(raw: &str) -> anyhow::Result<String> {
    let pin = raw.trim().to_ascii_lowercase();
    match pin.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(pin),
        _ => anyhow::bail!("a CA pin is sha256: followed by 64 hex digits (the ca_fingerprint tether prints)"),
    }
}

/// Exponential backoff with jitter: each wait is drawn from [d/2, d].
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, attempt: 0 }
    }

    pub fn next_wait(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.attempt = self.attempt.saturating_add(1).min(31);
        let full = self.base.saturating_mul(factor).min(self.max);
        let half = full / 2;
        half + Duration::from_millis(fastrand::u64(0..=u64::try_from(half.as_millis()).unwrap_or(0)))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Emits an event: a JSON line on stdout, or a log line.
#[derive(Debug, Clone, Copy)]
struct Events {
    json: bool,
}

impl Events {
    fn emit(&self, event: Value) {
        if self.json {
            println!("{event}");
        } else {
            tracing::info!(event = %event, "worker");
        }
    }
}

/// Runs the agent until `stop` turns true. Under systemd (`Type=notify`)
/// it says `READY=1` once it has an identity and the broker answered its
/// first poll, keeps
/// `STATUS=` to whether the appliance answers, and `STOPPING=1` at the end.
pub async fn run(opts: Options, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let supervisor = Supervisor::from_env();
    let ran = serve(opts, &mut stop, supervisor.clone()).await;
    supervisor.stopping();
    ran
}

async fn serve(opts: Options, stop: &mut watch::Receiver<bool>, supervisor: Supervisor) -> anyhow::Result<()> {
    let events = Events { json: opts.json_events };
    let state = StateDir::new(&opts.state_dir)?;
    let mut identity = match state.load()? {
        Some(mut id) => {
            // Told another address (the appliance moved): the same
            // identity there, and from now on.
            if let Some(broker) = opts.broker.as_ref().filter(|b| **b != id.broker) {
                tracing::info!(from = %id.broker, to = %broker, "the broker's address changed");
                id.broker = broker.clone();
                state.save(&id)?;
            }
            events.emit(json!({"event": "resumed", "worker_id": id.worker_id}));
            id
        }
        None => {
            let broker = opts.broker.clone().context(
                "this worker is not enrolled yet: pass --join, or --broker (or TETHER_BROKER) with --enroll-token; \
                 once enrolled it resumes from --state-dir alone",
            )?;
            supervisor.status(&format!("enrolling with {broker}"));
            let id = enroll(&opts, &broker, stop).await?;
            state.save(&id)?;
            events.emit(json!({"event": "enrolled", "worker_id": id.worker_id, "labels": id.labels}));
            let not_granted: Vec<&String> = opts.config.labels.iter().filter(|l| !id.labels.contains(l)).collect();
            if !not_granted.is_empty() {
                tracing::warn!(
                    labels = ?not_granted,
                    "these labels from the worker's configuration were not granted: labels come from the \
                     enrollment token (or an admin's PUT /api/v1/workers/{{id}}/labels), never from the worker"
                );
            }
            id
        }
    };
    // Tasks report through whichever client holds the newest certificate,
    // so a task outliving a renewal never speaks with an expired one.
    let client = BrokerClient::mtls(&identity.broker, &identity.ca_pem, &identity.cert_pem, &identity.key_pem)?;
    let (current, clients) = watch::channel(client);
    let config = Arc::new(opts.config.clone());
    let scratch = Arc::new(prepare_scratch(&opts.state_dir)?);
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut announced = false;
    // Whether the last poll failed: the status line changes only when this does.
    let mut unreachable = false;
    let mut renew_now = false;
    while !*stop.borrow() {
        // A poll never outlasts the moment renewal falls due, so a worker
        // whose broker is quiet still renews on time.
        let poll_wait =
            match renew_if_due(&state, &mut identity, &current, events, std::mem::take(&mut renew_now)).await {
                Ok(due) => POLL_WAIT.min(due.since(SystemClock.now())).max(Duration::from_secs(1)),
                Err(e) => {
                    if let Some(refused @ CallError::Refused { .. }) = e.downcast_ref::<CallError>() {
                        return Err(must_enroll_again(refused));
                    }
                    tracing::warn!(error = %e, "certificate renewal failed; will retry");
                    if pki::cert_validity(&identity.cert_pem)?.1 < SystemClock.now() {
                        // An expired certificate can do nothing but renew.
                        tokio::select! {
                            () = tokio::time::sleep(backoff.next_wait()) => continue,
                            _ = stop.changed() => break,
                        }
                    }
                    Duration::from_secs(5)
                }
            };
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p?,
            _ = stop.changed() => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        // Ready once the broker answered: the first poll asks it not to wait.
        let poll_wait = if announced { poll_wait } else { Duration::ZERO };
        let client = current.borrow().clone();
        let polled = tokio::select! {
            r = client.poll(permits.len(), poll_wait) => r,
            _ = stop.changed() => break,
        };
        match polled {
            Ok(reply) => {
                if !announced {
                    // The broker learns what this worker runs before it says
                    // it is ready (an older broker has no route for it).
                    if let Err(e) = client.offer(&config.offers()).await {
                        tracing::warn!(error = %e, "could not tell the broker what this worker runs");
                    }
                    events.emit(json!({"event": "ready", "worker_id": identity.worker_id}));
                    supervisor.ready(&format!("polling {} for tasks", identity.broker));
                    announced = true;
                }
                if unreachable {
                    supervisor.status(&format!("polling {} for tasks", identity.broker));
                    unreachable = false;
                }
                backoff.reset();
                if let Some(bundle) = reply.ca_pem.filter(|b| *b != identity.ca_pem) {
                    trust(&state, &mut identity, &current, bundle, events)?;
                }
                renew_now = reply.renew_now;
                let heartbeat = Duration::from_secs(reply.heartbeat_s.max(1));
                let lease = Duration::from_secs(reply.lease_s.max(1));
                for task in reply.tasks {
                    let Some(permit) = permits.pop() else { break };
                    let (clients, config, scratch) = (clients.clone(), config.clone(), scratch.clone());
                    tokio::spawn(async move {
                        run_task(clients, config, &scratch, task, heartbeat, lease, events).await;
                        drop(permit);
                    });
                }
            }
            // Expired between the renewal check and the poll: renew first.
            Err(CallError::Refused { status: 401, code, .. }) if code == "certificate_expired" => {}
            Err(refused @ CallError::Refused { status: 0 | 401 | 403, .. }) => return Err(must_enroll_again(&refused)),
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "poll failed");
                if !unreachable {
                    supervisor.status(&format!("cannot reach the appliance at {}: {e}; retrying", identity.broker));
                    events.emit(json!({"event": "unreachable", "broker": identity.broker, "error": e.to_string()}));
                    unreachable = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    tracing::info!("stopping: waiting for running tasks to report");
    let all = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(STOP_GRACE, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("tasks still running after the grace period; their leases will expire and they will be retried");
    }
    Ok(())
}

/// The broker will not serve this worker's identity any more (revoked,
/// expired past the grace window, superseded): only a new enrollment helps.
fn must_enroll_again(refused: &CallError) -> anyhow::Error {
    anyhow::anyhow!(
        "the broker refused this worker ({refused}); enroll it again with a new token and an empty state directory"
    )
}

async fn enroll(opts: &Options, broker: &str, stop: &mut watch::Receiver<bool>) -> anyhow::Result<Identity> {
    let token = opts
        .enroll_token
        .clone()
        .context("this worker is not enrolled yet: pass --enroll-token (from `tether token enroll`)")?;
    let ca_pem = match &opts.ca_file {
        Some(file) => {
            let pem = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            if let Some(pin) = &opts.ca_pin
                && &pki::fingerprint_pem(&pem)? != pin
            {
                anyhow::bail!("{} does not match the CA pin {pin}", file.display());
            }
            Some(pem)
        }
        None => None,
    };
    let trust = match (&ca_pem, &opts.ca_pin) {
        (Some(pem), _) => tls::Trust::Ca(pem),
        (None, Some(pin)) => tls::Trust::Pin(pin),
        (None, None) => anyhow::bail!("to enroll, pass --join, or --ca-pin or --ca-file (the appliance's ca.pem)"),
    };
    let (key_pem, csr_pem) = pki::new_worker_key_and_csr()?;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        match BrokerClient::enroll(broker, trust, &token, &csr_pem, &opts.config.labels).await {
            Ok(e) => {
                if let Some(pin) = &opts.ca_pin
                    && &pki::fingerprint_pem(&e.ca_pem)? != pin
                {
                    anyhow::bail!("the broker answered with a CA that does not match the pin {pin}");
                }
                return Ok(Identity {
                    worker_id: e.worker_id,
                    broker: broker.to_owned(),
                    labels: e.labels,
                    ca_pem: e.ca_pem,
                    cert_pem: e.cert_pem,
                    key_pem,
                });
            }
            Err(why @ (CallError::Unreachable(_) | CallError::Sealed)) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %why, retry_in_ms = wait.as_millis() as u64, "enrollment: broker not ready");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => anyhow::bail!("stopped before enrolling"),
                }
            }
            Err(e) => anyhow::bail!("enrollment refused: {e}"),
        }
    }
}

/// Trusts the CAs in `bundle` from now on (a CA rotation is under way).
fn trust(
    state: &StateDir,
    identity: &mut Identity,
    current: &watch::Sender<BrokerClient>,
    bundle: String,
    events: Events,
) -> anyhow::Result<()> {
    adopt(state, identity, current, Identity { ca_pem: bundle, ..identity.clone() })?;
    let cas = tls::certs_from_pem(&identity.ca_pem, "the CA bundle").map_or(0, |c| c.len());
    events.emit(json!({"event": "ca_trust_updated", "worker_id": identity.worker_id, "cas": cas}));
    Ok(())
}

/// Makes `next` the worker's identity: saved in the state directory, and
/// the client rebuilt with its certificate and trust.
fn adopt(
    state: &StateDir,
    identity: &mut Identity,
    current: &watch::Sender<BrokerClient>,
    next: Identity,
) -> anyhow::Result<()> {
    let client = BrokerClient::mtls(&next.broker, &next.ca_pem, &next.cert_pem, &next.key_pem)?;
    state.save(&next)?;
    *identity = next;
    current.send_replace(client);
    Ok(())
}

/// Renews the certificate once two thirds of its lifetime have passed (or
/// `at_once`), and says when the next renewal falls due.
async fn renew_if_due(
    state: &StateDir,
    identity: &mut Identity,
    current: &watch::Sender<BrokerClient>,
    events: Events,
    at_once: bool,
) -> anyhow::Result<Timestamp> {
    let due = pki::renewal_due(&identity.cert_pem)?;
    if !at_once && SystemClock.now() < due {
        return Ok(due);
    }
    let (key_pem, csr_pem) = pki::new_worker_key_and_csr()?;
    let client = current.borrow().clone();
    let renewed = client.renew(&csr_pem).await?;
    let next = Identity { cert_pem: renewed.cert_pem, ca_pem: renewed.ca_pem, key_pem, ..identity.clone() };
    adopt(state, identity, current, next)?;
    let (_, not_after) = pki::cert_validity(&identity.cert_pem)?;
    let worker_id = &identity.worker_id;
    events.emit(json!({"event": "renewed", "worker_id": worker_id, "cert_not_after": not_after.to_rfc3339()}));
    Ok(pki::renewal_due(&identity.cert_pem)?)
}

/// The directory for tasks' secret files (`STATE_DIR/run`, 0700), emptied
/// of whatever a crash left behind.
fn prepare_scratch(state_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = state_dir.join("run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The client with the newest certificate (the guard is not held).
fn latest(clients: &watch::Receiver<BrokerClient>) -> BrokerClient {
    clients.borrow().clone()
}

async fn run_task(
    clients: watch::Receiver<BrokerClient>,
    config: Arc<WorkerConfig>,
    scratch: &std::path::Path,
    task: LeasedTask,
    heartbeat: Duration,
    lease: Duration,
    events: Events,
) {
    events.emit(json!({"event": "task_started", "task_id": task.id, "kind": task.kind, "attempt": task.attempt}));
    let timeout = Duration::from_secs(task.timeout_s.max(1));
    let (reports, reporter) = progress::start(clients.clone(), task.id.clone(), task.lease_id.clone());
    let job = handlers::Job {
        kind: &task.kind,
        input: task.input.clone(),
        timeout,
        secrets: &task.secrets,
        scratch,
        reports,
    };
    // Boxed, so that it can be dropped once done (see below).
    let mut work = Box::pin(handlers::run(&config, job));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = beat.tick() => match latest(&clients).heartbeat(&task.id, &task.lease_id).await {
                Ok(reply) if reply.cancel => {
                    events.emit(json!({"event": "task_cancelled", "task_id": task.id}));
                    return;
                }
                Ok(_) => {}
                Err(CallError::LeaseLost) => {
                    events.emit(json!({"event": "task_lease_lost", "task_id": task.id}));
                    return;
                }
                Err(e) => tracing::warn!(task = %task.id, error = %e, "heartbeat failed; will retry"),
            },
        }
    };
    // What the command printed goes before its end: the job (and with it
    // the last handle on its reports) is gone, so the reporter finishes.
    drop(work);
    let _ = reporter.await;
    let lease_id = task.lease_id.clone();
    let (report, label) = match outcome {
        Ok(result) => (Report::Succeeded { lease_id, result }, "succeeded"),
        Err(f) => {
            let error = ReportedError { code: f.code.into(), message: f.message, retryable: f.retryable };
            (Report::Failed { lease_id, error }, "failed")
        }
    };
    // Keep trying to report while the lease could still be ours.
    let deadline = tokio::time::Instant::now() + lease;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match latest(&clients).complete(&task.id, &report).await {
            Ok(_) => {
                events.emit(json!({"event": "task_finished", "task_id": task.id, "outcome": label}));
                return;
            }
            Err(CallError::LeaseLost) => {
                events.emit(json!({"event": "task_lease_lost", "task_id": task.id}));
                return;
            }
            Err(CallError::Unreachable(e)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(task = %task.id, error = %e, "report failed; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(CallError::Sealed) => {
                tracing::warn!(task = %task.id, "broker is sealed; holding the report until it is unsealed");
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) => {
                tracing::error!(task = %task.id, error = %e, "could not report; the lease will expire and the task will be retried");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(waits[3] >= Duration::from_millis(400) && waits[3] <= Duration::from_millis(800));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;

    const PIN: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_join_string_names_the_gateway_the_token_and_the_pin() {
        let join =
            Join::parse(&format!("tether://tether.site.lan:9443?token=tetherenroll_x&ca={}", PIN.to_uppercase()))
                .unwrap();
        assert_eq!(
            join,
            Join { broker: "https://tether.site.lan:9443".into(), token: "tetherenroll_x".into(), ca_pin: PIN.into() }
        );
    }

    #[test]
    fn a_join_string_missing_a_part_says_which() {
        for (raw, says) in [
            ("https://h:1?token=t&ca=x", "tether://"),
            (&format!("tether://h?token=t&ca={PIN}") as &str, "no port"),
            (&format!("tether://h:1?ca={PIN}"), "no token"),
            ("tether://h:1?token=t", "no ca pin"),
            ("tether://h:1?token=t&ca=sha256:abc", "64 hex digits"),
            (&format!("tether://h:1?token=t&ca={PIN}&extra=1"), "unknown parameter"),
        ] {
            let err = Join::parse(raw).unwrap_err().to_string();
            assert!(err.contains(says), "{raw}: {err}");
        }
    }
}
