//! Forwarding the audit log to a SIEM: RFC 5424 syslog (or CEF in a syslog
//! message) over TLS with RFC 5425 framing, or JSON lines appended to a
//! file. Each sink has a durable cursor and delivers every record in
//! order, at least once: after an outage or a crash it starts again after
//! the last record it knows arrived, so a receiver may see a record twice
//! (the `seq` tells) but never misses one.
//!
//! Syslog over TLS has no acknowledgements, so "arrived" is judged: a
//! record counts as delivered once it was written to a connection that then
//! stayed healthy for [`CONFIRM_AFTER`]. On any failure the sink reconnects
//! and resends from there. A file sink's cursor moves after each fsync.

use std::collections::{HashMap, VecDeque};
use std::path::{Component, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::siem::{cef, frame, rfc5424};
use super::{Origin, Record};
use tether_base::clock::{SharedClock, Timestamp};
use tether_store::{self as store, Collection, ReadTx, Store, WriteTx};

const SINKS: Collection<SinkConfig> = Collection::new("audit_sinks");
/// Sink name → the last seq known delivered.
const CURSORS: Collection<u64> = Collection::new("audit_sink_cursors");

/// A record written this long before, on a connection still healthy, is
/// taken as received.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(5);
/// Records read and sent at a time.
const BATCH: usize = 500;
/// How often a sink with nothing to send looks for new records.
const IDLE_LOOK: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where and how a sink delivers. In JSON, externally tagged:
/// `{"syslog_tls": {"address": …}}` or `{"jsonl_file": {"path": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkKind {
    /// Syslog over TLS (RFC 5425) to `address` (host:port), trusting the
    /// CA in `ca_pem`; `server_name` is checked in its certificate (the
    /// host of `address` by default).
    SyslogTls { address: String, ca_pem: String, server_name: Option<String>, format: Format },
    /// JSON lines appended to `path` (each record with its hash).
    JsonlFile { path: PathBuf },
}

/// The message format inside syslog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// RFC 5424, the record as JSON in the message, seq and hash in
    /// structured data.
    Rfc5424,
    /// ArcSight CEF as the syslog message.
    Cef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// Why a sink was refused.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("a sink name is 1-32 characters of a-z, 0-9, '-', '_'")]
    BadName,
    #[error("{0}")]
    Invalid(String),
    #[error("no such sink")]
    NotFound,
    #[error(transparent)]
    Store(#[from] store::Error),
}

fn check(name: &str, kind: &SinkKind) -> Result<(), SinkError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(SinkError::BadName);
    }
    match kind {
        SinkKind::SyslogTls { address, ca_pem, .. } => {
            if address.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                return Err(SinkError::Invalid(format!("address {address:?} is not host:port")));
            }
            tether_base::tls::client(ca_pem, None, &[]).map_err(|e| SinkError::Invalid(format!("ca_pem: {e}")))?;
        }
        SinkKind::JsonlFile { path } => {
            if !path.is_absolute() {
                return Err(SinkError::Invalid("path must be absolute".into()));
            }
            // Written as given: no `.`, `..`, `//` or trailing `/` to make
            // the file another than the one the officer read.
            let normal: PathBuf = path.components().collect();
            let plain = path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !plain || normal.as_os_str() != path.as_os_str() || path.file_name().is_none() {
                return Err(SinkError::Invalid(format!(
                    "path {:?} must be a plain absolute file path (no '.', '..', '//' or trailing '/')",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Adds or replaces a sink; it starts from `from_seq` (the whole log by default).
pub fn put(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    name: &str,
    kind: SinkKind,
    from_seq: Option<u64>,
) -> Result<SinkConfig, SinkError> {
    check(name, &kind)?;
    let config = SinkConfig { name: name.into(), kind, created_by: origin.actor.id.clone(), created_at: now };
    let replaced = tx.get(SINKS, name.as_bytes())?.is_some();
    tx.put(SINKS, name.as_bytes(), &config)?;
    match from_seq {
        Some(0) | None if !replaced => {
            tx.delete(CURSORS, name.as_bytes())?;
        }
        Some(from) => tx.put(CURSORS, name.as_bytes(), &(from.saturating_sub(1)))?,
        None => {}
    }
    let event = super::Event::new(
        "audit.sink_configured",
        if replaced { "replace" } else { "create" },
        super::Resource::new("audit_sink", name),
    )
    .detail("kind", describe(&config.kind));
    super::append(tx, now, origin, event)?;
    Ok(config)
}

/// Removes a sink (a security officer's act, audited).
pub fn remove(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, name: &str) -> Result<(), SinkError> {
    // Checked before anything is written: a refusal after a write would
    // abort the whole batch (and answer 500).
    if tx.get(SINKS, name.as_bytes())?.is_none() {
        return Err(SinkError::NotFound);
    }
    tx.delete(SINKS, name.as_bytes())?;
    tx.delete(CURSORS, name.as_bytes())?;
    super::append(
        tx,
        now,
        origin,
        super::Event::new("audit.sink_removed", "remove", super::Resource::new("audit_sink", name)),
    )?;
    Ok(())
}

pub fn list(tx: &ReadTx) -> Result<Vec<SinkConfig>, store::Error> {
    tx.values(SINKS)
}

/// How far every sink has delivered: `Ok(None)` with no sinks, `Ok(Some(None))`
/// while one of them has delivered nothing yet.
pub fn delivered_by_all(tx: &ReadTx) -> Result<Option<Option<u64>>, store::Error> {
    let sinks = list(tx)?;
    if sinks.is_empty() {
        return Ok(None);
    }
    let mut lowest: Option<u64> = None;
    for s in sinks {
        match cursor(tx, &s.name)? {
            None => return Ok(Some(None)),
            Some(c) => lowest = Some(lowest.map_or(c, |l| l.min(c))),
        }
    }
    Ok(Some(lowest))
}

/// Where a sink stands: its durable cursor (the next record it will send
/// after a restart is `cursor + 1`).
pub fn cursor(tx: &ReadTx, name: &str) -> Result<Option<u64>, store::Error> {
    tx.get(CURSORS, name.as_bytes())
}

fn describe(kind: &SinkKind) -> String {
    match kind {
        SinkKind::SyslogTls { address, format, .. } => format!("syslog_tls {address} {format:?}"),
        SinkKind::JsonlFile { path } => format!("jsonl_file {}", path.display()),
    }
}

/// What the API shows of a running sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStatus {
    pub connected: bool,
    /// The last seq written (not yet necessarily confirmed).
    pub sent_through: Option<u64>,
    /// The durable cursor.
    pub delivered_through: Option<u64>,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339_opt")]
    pub down_since: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// The running sinks: one task each, restarted when its config changes.
#[derive(Debug)]
pub struct Sinks {
    context: SinkContext,
    running: Mutex<HashMap<String, (SinkConfig, tokio::task::JoinHandle<()>)>>,
    status: Arc<Mutex<HashMap<String, SinkStatus>>>,
}

/// What every sink task needs.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub store: Store,
    pub clock: SharedClock,
    pub hostname: String,
    /// A sink that cannot deliver for this long raises an `audit_sink_down` alert.
    pub down_alert_after: Duration,
}

impl Sinks {
    pub fn new(context: SinkContext) -> Sinks {
        Sinks { context, running: Mutex::default(), status: Arc::default() }
    }

    /// Every configured sink.
    pub fn configs(&self) -> Result<Vec<SinkConfig>, store::Error> {
        self.context.store.read(list)
    }

    /// Adds or replaces the sink `name`, audited, and starts it at once
    /// (from the beginning of the log for a new one).
    pub async fn put(&self, origin: &Origin, name: String, kind: SinkKind) -> Result<SinkConfig, SinkError> {
        let (now, origin) = (self.context.clock.now(), origin.clone());
        let config = self.context.store.write(move |tx| put(tx, now, &origin, &name, kind, None)).await?;
        self.reconcile()?;
        Ok(config)
    }

    /// Removes the sink `name` and its cursor, audited, and stops it.
    pub async fn remove(&self, origin: &Origin, name: String) -> Result<(), SinkError> {
        let (now, origin) = (self.context.clock.now(), origin.clone());
        self.context.store.write(move |tx| remove(tx, now, &origin, &name)).await?;
        Ok(self.reconcile()?)
    }

    /// Starts, restarts or stops tasks so that they match the stored configs.
    pub fn reconcile(&self) -> Result<(), store::Error> {
        let ctx = &self.context;
        let configs = ctx.store.read(list)?;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|name, (config, task)| {
            let keep = configs.iter().any(|c| c == config);
            if !keep {
                task.abort();
                self.status.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
            }
            keep
        });
        for config in configs {
            if running.contains_key(&config.name) {
                continue;
            }
            let task = tokio::spawn(deliver_forever(ctx.clone(), config.clone(), self.status.clone()));
            running.insert(config.name.clone(), (config, task));
        }
        Ok(())
    }

    pub fn status(&self) -> HashMap<String, SinkStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Records after `after` (all from the start when `None`), at most `limit`,
/// each with its export line and hash.
fn next_records(
    store: &Store,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<(Record, String, String)>, store::Error> {
    let from = after.map_or(0, |a| a + 1);
    let mut out = Vec::new();
    store.read(|tx| {
        super::chain::for_each_from(tx, from, |_, canonical, hash| {
            let record: Record = serde_json::from_slice(canonical).map_err(|e| store::Error::Storage(e.into()))?;
            let line = String::from_utf8_lossy(&super::chain::with_hash(canonical, hash)).into_owned();
            out.push((record, line, hex::encode(hash)));
            Ok(out.len() < limit)
        })
    })?;
    Ok(out)
}

fn set_status(status: &Mutex<HashMap<String, SinkStatus>>, name: &str, f: impl FnOnce(&mut SinkStatus)) {
    f(status.lock().unwrap_or_else(PoisonError::into_inner).entry(name.to_owned()).or_default());
}

async fn save_cursor(store: &Store, name: &str, seq: u64) -> Result<(), store::Error> {
    let name = name.to_owned();
    store.write(move |tx| tx.put(CURSORS, name.as_bytes(), &seq)).await
}

/// A sink's life: connect, send, confirm, and after any failure wait and
/// start again from the durable cursor.
async fn deliver_forever(ctx: SinkContext, config: SinkConfig, status: Arc<Mutex<HashMap<String, SinkStatus>>>) {
    let name = config.name.clone();
    let mut retry = RETRY_MIN;
    let mut down_since: Option<Timestamp> = None;
    let mut alerted = false;
    loop {
        let cursor = ctx.store.read(|tx| cursor(tx, &name)).unwrap_or(None);
        set_status(&status, &name, |s| s.delivered_through = cursor);
        let outcome = match &config.kind {
            SinkKind::SyslogTls { address, ca_pem, server_name, format } => {
                let target = SyslogTarget { address, ca_pem, server_name: server_name.as_deref(), format: *format };
                deliver_syslog(&ctx, &name, &target, cursor, &status).await
            }
            SinkKind::JsonlFile { path } => deliver_file(&ctx, &name, path, cursor, &status).await,
        };
        let now = ctx.clock.now();
        let progressed = matches!(outcome, Attempt::Progressed(_));
        let error = match outcome {
            Attempt::Progressed(e) | Attempt::Failed(e) => e,
        };
        tracing::warn!(sink = %name, error = %error, "audit sink interrupted; resending from its cursor");
        set_status(&status, &name, |s| {
            s.connected = false;
            s.last_error = Some(error.clone());
        });
        if progressed {
            retry = RETRY_MIN;
        }
        let since = *down_since.get_or_insert(now);
        set_status(&status, &name, |s| s.down_since = Some(since));
        if !alerted && now.since(since) >= ctx.down_alert_after {
            alerted = true;
            let (name2, error2) = (name.clone(), error.clone());
            let raised = ctx
                .store
                .write(move |tx| super::alerts::raise(tx, now, "audit_sink_down", &name2, &[("error", error2)]))
                .await;
            if let Err(e) = raised {
                tracing::error!(error = %e, "could not raise the audit-sink alert");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
        // Recovery is noted by the next attempt that confirms something.
        if progressed {
            down_since = None;
            alerted = false;
        }
    }
}

/// How an attempt ended: it delivered something first (so back-off resets),
/// or not. Either way, the error that ended it.
enum Attempt {
    Progressed(String),
    Failed(String),
}

struct SyslogTarget<'a> {
    address: &'a str,
    ca_pem: &'a str,
    server_name: Option<&'a str>,
    format: Format,
}

async fn deliver_syslog(
    ctx: &SinkContext,
    name: &str,
    target: &SyslogTarget<'_>,
    cursor: Option<u64>,
    status: &Mutex<HashMap<String, SinkStatus>>,
) -> Attempt {
    let fail = |e: String| Attempt::Failed(e);
    let config = match tether_base::tls::client(target.ca_pem, None, &[]) {
        Ok(c) => Arc::new(c),
        Err(e) => return fail(format!("ca_pem: {e}")),
    };
    let host = target.server_name.unwrap_or_else(|| target.address.rsplit_once(':').map_or("", |(h, _)| h));
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(host) else {
        return fail("the server name is not valid".into());
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(target.address).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp).await
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(format!("connect {}: {e}", target.address)),
        Err(_) => return fail(format!("connect {}: timed out", target.address)),
    };
    set_status(status, name, |s| {
        s.connected = true;
        s.last_error = None;
        s.down_since = None;
    });
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut sent: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut last_sent = cursor;
    let mut confirmed = cursor;
    let mut progressed = false;
    let mut scratch = [0u8; 256];
    loop {
        let batch = match next_records(&ctx.store, last_sent, BATCH) {
            Ok(b) => b,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        if let Some((last, _, _)) = batch.last() {
            let mut bytes = Vec::new();
            for (record, line, hash) in &batch {
                let message = match target.format {
                    Format::Rfc5424 => rfc5424(record, line, hash, &ctx.hostname),
                    Format::Cef => cef(record, hash, &ctx.hostname),
                };
                bytes.extend_from_slice(&frame(&message));
            }
            let write = async {
                writer.write_all(&bytes).await?;
                writer.flush().await
            };
            if let Err(e) = write.await {
                let e = format!("send: {e}");
                return if progressed { Attempt::Progressed(e) } else { Attempt::Failed(e) };
            }
            last_sent = Some(last.seq);
            sent.push_back((Instant::now(), last.seq));
            set_status(status, name, |s| s.sent_through = last_sent);
        } else {
            // Nothing to send: wait a little, noticing a receiver that hung up.
            tokio::select! {
                read = reader.read(&mut scratch) => {
                    let e = match read {
                        Ok(0) => "the receiver closed the connection".to_owned(),
                        Ok(_) => continue,
                        Err(e) => format!("receive: {e}"),
                    };
                    return if progressed { Attempt::Progressed(e) } else { Attempt::Failed(e) };
                }
                () = tokio::time::sleep(IDLE_LOOK) => {}
            }
        }
        // Confirm what has had time to arrive on a connection still healthy.
        let mut newly = None;
        while sent.front().is_some_and(|(at, _)| at.elapsed() >= CONFIRM_AFTER) {
            newly = sent.pop_front().map(|(_, seq)| seq);
        }
        if let Some(seq) = newly
            && confirmed.is_none_or(|c| seq > c)
        {
            if let Err(e) = save_cursor(&ctx.store, name, seq).await {
                return Attempt::Failed(e.to_string());
            }
            confirmed = Some(seq);
            progressed = true;
            set_status(status, name, |s| s.delivered_through = confirmed);
        }
    }
}

async fn deliver_file(
    ctx: &SinkContext,
    name: &str,
    path: &std::path::Path,
    cursor: Option<u64>,
    status: &Mutex<HashMap<String, SinkStatus>>,
) -> Attempt {
    // Made readable by the appliance's user alone, and never through a
    // symbolic link (someone else's file in its place).
    let opened = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .await;
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => return Attempt::Failed(format!("open {}: {e}", path.display())),
    };
    set_status(status, name, |s| {
        s.connected = true;
        s.last_error = None;
        s.down_since = None;
    });
    let mut delivered = cursor;
    let mut progressed = false;
    loop {
        let batch = match next_records(&ctx.store, delivered, BATCH) {
            Ok(b) => b,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        let Some((last, _, _)) = batch.last() else {
            tokio::time::sleep(IDLE_LOOK).await;
            continue;
        };
        let last = last.seq;
        let bytes: Vec<u8> = batch.iter().flat_map(|(_, line, _)| line.as_bytes().iter().copied()).collect();
        let written = async {
            file.write_all(&bytes).await?;
            file.sync_data().await
        };
        if let Err(e) = written.await {
            let e = format!("write {}: {e}", path.display());
            return if progressed { Attempt::Progressed(e) } else { Attempt::Failed(e) };
        }
        if let Err(e) = save_cursor(&ctx.store, name, last).await {
            return Attempt::Failed(e.to_string());
        }
        delivered = Some(last);
        progressed = true;
        set_status(status, name, |s| {
            s.sent_through = delivered;
            s.delivered_through = delivered;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_is_configured_replaced_and_removed_with_its_cursor_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let now = Timestamp::from_millis(1_000);
        let kind = SinkKind::JsonlFile { path: "/var/log/tether-audit.jsonl".into() };
        let k = kind.clone();
        store.write_blocking(move |tx| put(tx, now, &super::super::Origin::system(), "file", k, None)).unwrap();
        store.write_blocking(move |tx| tx.put(CURSORS, b"file", &7u64)).unwrap();
        let k = kind.clone();
        store.write_blocking(move |tx| put(tx, now, &super::super::Origin::system(), "file", k, None)).unwrap();
        assert_eq!(store.read(|tx| cursor(tx, "file")).unwrap(), Some(7), "replacing keeps the cursor");
        assert_eq!(store.read(list).unwrap().len(), 1);
        store.write_blocking(move |tx| remove(tx, now, &super::super::Origin::system(), "file")).unwrap();
        assert!(store.read(list).unwrap().is_empty());
        for bad in ["relative.jsonl", "/var/log/../../etc/cron.d/x", "/var/./log/a.jsonl", "/var//log/a", "/var/log/"] {
            let kind = SinkKind::JsonlFile { path: bad.into() };
            let refused = store.write_blocking(move |tx| {
                Ok::<_, SinkError>(put(tx, now, &super::super::Origin::system(), "file", kind, None).is_err())
            });
            assert!(refused.unwrap(), "{bad}");
        }
    }
}
