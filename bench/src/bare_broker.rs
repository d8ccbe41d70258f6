//! The transport ceiling beside (a) and (c): a broker that speaks the
//! appliance's task contract over the appliance's stack, and does nothing
//! else.
//!
//! It is this bench binary started as a separate process
//! (`--bare-broker DIR`): tokio with one worker thread per core, rustls with
//! the same provider, protocol versions, server certificate and CA as the
//! appliance (client certificates required on the worker port), ALPN
//! choosing HTTP/1.1 or HTTP/2 as the appliance's listeners do, hyper, axum
//! and serde_json. Tasks live in a queue in memory; nothing is
//! authenticated, authorised, audited, encrypted at rest or made durable.
//! The same clients drive it as drive the appliance. No broker that keeps
//! this contract over TLS on this machine can do more, so its figures are
//! the most (a) and (c) can reach here, whatever the store does.
//!
//! Started `--durable`, it also makes every create, lease and completion
//! durable before answering, the least a durable broker must do: a record
//! written to a preallocated file and fdatasynced, by one thread that takes
//! every pending record at once (group commit, as the appliance's writer
//! and Redis's `appendfsync always` both do). That bounds what a durable
//! broker can reach here.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::appliance::Reaped;
use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The bare broker, in its own process.
pub struct BareBroker {
    child: Reaped,
    /// Base URLs of its producer port and its worker port.
    pub console: String,
    pub gateway: String,
}

impl BareBroker {
    /// Starts this binary as a bare broker on the appliance's certificates
    /// in `data`; `durable`, it syncs a record of each change before answering.
    pub fn start(data: &Path, durable: bool) -> anyhow::Result<BareBroker> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--bare-broker").arg(data);
        if durable {
            command.arg("--durable");
        }
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let ready: Value = serde_json::from_str(&line).with_context(|| format!("bare broker said {line:?}"))?;
        let url = |k: &str| ready[k].as_str().map(|a| format!("https://{a}")).context("ready line");
        Ok(BareBroker { console: url("listen")?, gateway: url("worker_listen")?, child: Reaped(child) })
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        crate::appliance::cpu_seconds_of(self.child.id())
    }
}

/// How the tables name each variant.
pub fn name(durable: bool) -> &'static str {
    if durable { "durable bare broker" } else { "bare HTTPS broker" }
}

#[derive(Debug)]
struct Task {
    id: String,
    kind: String,
    input: Value,
}

#[derive(Default)]
struct Queue {
    created: u64,
    ready: VecDeque<Task>,
    /// Parked polls, oldest first.
    waiting: VecDeque<oneshot::Sender<Task>>,
    /// Leased tasks by id, with their lease id.
    leased: HashMap<String, String>,
}

#[derive(Clone)]
struct Shared {
    queue: Arc<Mutex<Queue>>,
    /// With `--durable`: where records go to be synced.
    log: Option<std::sync::mpsc::Sender<(Vec<u8>, oneshot::Sender<()>)>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once `record` is durable (at once without `--durable`).
    async fn sync(&self, record: Vec<u8>) {
        if let Some(log) = &self.log {
            let (done, synced) = oneshot::channel();
            if log.send((record, done)).is_ok() {
                let _ = synced.await;
            }
        }
    }
}

/// Where the durable bare broker's records go round.
const RECORD_FILE_SIZE: u64 = 64 << 20;

/// The group-commit thread: writes every pending record at the head of a
/// preallocated file, fdatasyncs once, answers them all.
fn sync_records(
    file: &std::fs::File,
    records: std::sync::mpsc::Receiver<(Vec<u8>, oneshot::Sender<()>)>,
) -> anyhow::Result<()> {
    let mut head = 0u64;
    let mut batch = Vec::new();
    while let Ok(first) = records.recv() {
        let mut waiting = vec![first];
        waiting.extend(records.try_iter());
        batch.clear();
        for (record, _) in &waiting {
            batch.extend_from_slice(record);
        }
        if head + batch.len() as u64 > RECORD_FILE_SIZE {
            head = 0;
        }
        file.write_all_at(&batch, head)?;
        file.sync_data()?;
        head += batch.len() as u64;
        for (_, done) in waiting {
            let _ = done.send(());
        }
    }
    Ok(())
}

async fn create(State(q): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let kind = body["kind"].as_str().unwrap_or("echo").to_owned();
    let input = body.get("input").cloned().unwrap_or(Value::Null);
    q.sync(serde_json::to_vec(&body).unwrap_or_default()).await;
    let mut queue = q.lock();
    queue.created += 1;
    let id = format!("task-{}", queue.created);
    let mut task = Task { id: id.clone(), kind, input };
    // Straight to a parked poll, as the appliance does; one that timed out
    // meanwhile hands the task back.
    while let Some(waiter) = queue.waiting.pop_front() {
        match waiter.send(task) {
            Ok(()) => return (StatusCode::CREATED, Json(json!({"id": id, "state": "leased"}))),
            Err(back) => task = back,
        }
    }
    queue.ready.push_back(task);
    (StatusCode::CREATED, Json(json!({"id": id, "state": "queued"})))
}

async fn poll(State(q): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let max = usize::try_from(body["max_tasks"].as_u64().unwrap_or(1)).unwrap_or(1).max(1);
    let wait = Duration::from_secs(body["wait_s"].as_u64().unwrap_or(30).min(30));
    let mut tasks = Vec::new();
    let parked = {
        let mut queue = q.lock();
        while tasks.len() < max {
            match queue.ready.pop_front() {
                Some(task) => tasks.push(task),
                None => break,
            }
        }
        if tasks.is_empty() {
            let (mailbox, delivered) = oneshot::channel();
            queue.waiting.push_back(mailbox);
            Some(delivered)
        } else {
            None
        }
    };
    if let Some(delivered) = parked
        && let Ok(Ok(task)) = tokio::time::timeout(wait, delivered).await
    {
        tasks.push(task);
    }
    if !tasks.is_empty() {
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        q.sync(format!("leased {ids:?}").into_bytes()).await;
    }
    let mut queue = q.lock();
    let leased: Vec<Value> = tasks
        .into_iter()
        .map(|t| {
            let lease = format!("lease-{}", t.id);
            queue.leased.insert(t.id.clone(), lease.clone());
            json!({"id": t.id, "kind": t.kind, "input": t.input, "lease_id": lease, "timeout_s": 60, "attempt": 1})
        })
        .collect();
    Json(json!({"tasks": leased, "lease_s": 60, "heartbeat_s": 20}))
}

async fn complete(
    State(q): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let holds = q.lock().leased.get(&id).is_some_and(|lease| Some(lease.as_str()) == body["lease_id"].as_str());
    if !holds {
        return (StatusCode::CONFLICT, Json(json!({"code": "stale_lease"})));
    }
    q.sync(serde_json::to_vec(&body).unwrap_or_default()).await;
    q.lock().leased.remove(&id);
    (StatusCode::OK, Json(json!({"id": id, "state": "succeeded"})))
}

/// The bare broker's main: prints its two addresses, then serves until killed.
pub fn serve(data: &Path, durable: bool) -> anyhow::Result<()> {
    let read = |name: &str| std::fs::read_to_string(data.join(name)).with_context(|| format!("reading {name}"));
    let (cert_pem, key_pem, ca_pem) = (read("server.pem")?, read("server.key")?, read("ca.pem")?);
    let policy = tether_base::crypto::CryptoPolicy::STANDARD;
    let certs = tether_base::tls::certs_from_pem(&cert_pem, "server.pem")?;
    let key = tether_base::tls::key_from_pem(&key_pem, "server.key")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in tether_base::tls::certs_from_pem(&ca_pem, "ca.pem")? {
        roots.add(cert)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), policy.tls_provider()).build()?;
    let builder = || {
        rustls::ServerConfig::builder_with_provider(policy.tls_provider()).with_protocol_versions(policy.tls_versions())
    };
    let mut console = builder()?.with_no_client_auth().with_single_cert(certs.clone(), key.clone_key())?;
    console.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut gateway = builder()?.with_client_cert_verifier(verifier).with_single_cert(certs, key)?;
    gateway.alpn_protocols = vec![b"http/1.1".to_vec()];

    let log = if durable {
        let (log, records) = std::sync::mpsc::channel();
        // Beside the appliance's data directory: the same disk. Written
        // with zeros first, as the appliance's journal is (an overwrite then
        // syncs data only, no file-system metadata), and before the broker
        // says it is ready, so that no measurement waits on it.
        let path = data.with_extension("bare-journal");
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        file.write_all_at(&vec![0; usize::try_from(RECORD_FILE_SIZE)?], 0)?;
        file.sync_all()?;
        std::thread::spawn(move || {
            if let Err(e) = sync_records(&file, records) {
                eprintln!("bare broker: the record file failed: {e:#}");
                std::process::exit(1);
            }
        });
        Some(log)
    } else {
        None
    };
    let queue = Shared { queue: Arc::default(), log };
    let producer = Router::new()
        .route("/api/v1/tasks", post(create))
        .route("/healthz", axum::routing::get(|| async { Json(json!({"status": "ok"})) }))
        .with_state(queue.clone());
    let workers = Router::new()
        .route("/worker/v1/poll", post(poll))
        .route("/worker/v1/tasks/{id}/complete", post(complete))
        .with_state(queue);
    // The same runtime shape as the appliance: one worker thread per core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (console_port, worker_port) =
            (TcpListener::bind("127.0.0.1:0").await?, TcpListener::bind("127.0.0.1:0").await?);
        println!(
            "{}",
            json!({"listen": console_port.local_addr()?.to_string(), "worker_listen": worker_port.local_addr()?.to_string()})
        );
        let console = tokio::spawn(accept(console_port, Arc::new(console), producer));
        accept(worker_port, Arc::new(gateway), workers).await;
        console.abort();
        Ok(())
    })
}

async fn accept(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let (io, service) = (TokioIo::new(stream), TowerToHyperService::new(app));
            // Served as the appliance serves them: the protocol ALPN chose.
            if h2 {
                let _ =
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            }
        });
    }
}
