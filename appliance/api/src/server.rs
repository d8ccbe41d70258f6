//! The two TLS listeners and their accept loops.
//!
//! Per connection: a slot from the connection limit (refused when none is
//! free), the TLS handshake within the header timeout, the peer certificate
//! read once and attached to every request as [`ConnInfo`], then HTTP/1.1 or
//! HTTP/2. A connection with no request in flight for the idle timeout is
//! closed. On shutdown, listeners stop accepting, every connection is asked
//! to finish gracefully, and [`Server::wait`] returns once all are gone (or
//! the grace period has passed).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor, server::TlsStream};
use tower::ServiceExt;

use super::linger::Lingering;
use super::{AppState, ConnInfo};
use crate::config::Limits;
use tether_base::ids::WorkerId;
use tether_base::tls::{ClientTrust, ENROLL_ALPN};
use tether_domain::audit::{Actor, Event, Origin, Outcome, Resource};
use tether_domain::metrics::{Handshake, Listener, Metrics};
use tether_domain::pki;

/// The most an HTTP/1.1 request's head (request line and headers) may hold;
/// more is answered 431. Without it, the limit is hyper's read buffer,
/// reached anywhere from 400 to 600 KiB depending on how the bytes arrive.
/// (HTTP/2 keeps hyper's 16 KiB header list: a connection there carries up
/// to 256 requests at once.)
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What a listener serves.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// Server-authenticated TLS; one router; its handshakes counted in `metrics`.
    Console { tls: Arc<ServerConfig>, app: Router, metrics: Arc<Metrics> },
    /// The worker gateway: mTLS for everything, except connections that
    /// offer the enrollment ALPN, which get the enrollment router only.
    /// Refused certificates are audited through `state`.
    Worker { mtls: Arc<ServerConfig>, app: Router, enroll_tls: Arc<ServerConfig>, enroll_app: Router, state: AppState },
}

/// The running listeners.
#[derive(Debug)]
pub struct Server {
    stop: watch::Sender<bool>,
    slots: Arc<Semaphore>,
    max_connections: u32,
    grace: Duration,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts one accept loop per listener. They share the connection limit.
    pub fn start(listeners: Vec<(TcpListener, Endpoint)>, limits: &Limits) -> Server {
        let max_connections =
            u32::try_from(limits.max_connections).unwrap_or(u32::MAX >> 3).min(Semaphore::MAX_PERMITS as u32);
        let slots = Arc::new(Semaphore::new(max_connections as usize));
        let (stop, stopped) = watch::channel(false);
        let loops = listeners
            .into_iter()
            .map(|(listener, endpoint)| {
                tokio::spawn(accept_loop(listener, endpoint, limits.clone(), slots.clone(), stopped.clone()))
            })
            .collect();
        Server { stop, slots, max_connections, grace: limits.shutdown_grace, loops }
    }

    /// Stops accepting, asks every connection to finish, and waits for them
    /// (at most the shutdown grace period).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for l in self.loops {
            let _ = l.await;
        }
        let all_closed = self.slots.acquire_many(self.max_connections);
        if tokio::time::timeout(self.grace, all_closed).await.is_err() {
            tracing::warn!("connections still open after the shutdown grace period; closing them");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    endpoint: Endpoint,
    limits: Limits,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "connection limit reached; refusing a connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (endpoint, limits, stop) = (endpoint.clone(), limits.clone(), stop.clone());
        tokio::spawn(async move {
            serve_connection(tcp, remote, endpoint, &limits, stop).await;
            drop(slot);
        });
    }
}

impl Endpoint {
    /// Which listener this is, and where its handshakes are counted.
    fn counted(&self) -> (Listener, Arc<Metrics>) {
        match self {
            Endpoint::Console { metrics, .. } => (Listener::console, metrics.clone()),
            Endpoint::Worker { state, .. } => (Listener::worker, state.metrics.clone()),
        }
    }
}

async fn handshake(tcp: TcpStream, endpoint: Endpoint) -> std::io::Result<(TlsStream<TcpStream>, Router)> {
    match endpoint {
        Endpoint::Console { tls, app, .. } => Ok((TlsAcceptor::from(tls).accept(tcp).await?, app)),
        Endpoint::Worker { mtls, app, enroll_tls, enroll_app, state: _ } => {
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
            let enrolling = start.client_hello().alpn().is_some_and(|mut offered| offered.any(|p| p == ENROLL_ALPN));
            if enrolling {
                Ok((start.into_stream(enroll_tls).await?, enroll_app))
            } else {
                Ok((start.into_stream(mtls).await?, app))
            }
        }
    }
}

/// The reason to audit, if a handshake failed because of the client's
/// certificate (missing, from another CA, expired…) rather than the network.
fn certificate_refusal(e: &std::io::Error) -> Option<String> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::NoCertificatesPresented => Some("no client certificate".into()),
        rustls::Error::InvalidCertificate(why) => Some(format!("client certificate refused: {why:?}")),
        _ => None,
    }
}

/// Requests in flight and the time of the last activity on one connection.
#[derive(Debug)]
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    endpoint: Endpoint,
    limits: &Limits,
    stop: watch::Receiver<bool>,
) {
    let gateway = match &endpoint {
        Endpoint::Worker { state, .. } => Some(AppState::clone(state)),
        Endpoint::Console { .. } => None,
    };
    // Subscribed before the handshake judges the certificate, so no
    // revocation or trust change after that judgement goes unseen.
    let standing_of = gateway.as_ref().map(|state| {
        let (revoked, trust) = (state.revoked.clone(), state.certs.worker_trust.clone());
        let changes = (revoked.subscribe(), trust.subscribe());
        (revoked, trust, changes)
    });
    // Boxed, here and below: the task keeps only what the connection's
    // current stage needs, not room for every stage at once (a parked
    // long-poll's connection task was 19 KiB before; see BENCHMARKS.md).
    let (listener, metrics) = endpoint.counted();
    let handshake = tokio::time::timeout(limits.header_timeout, Box::pin(handshake(tcp, endpoint))).await;
    let result = if matches!(handshake, Ok(Ok(_))) { Handshake::ok } else { Handshake::failed };
    metrics.handshake(listener, result);
    let (stream, app) = match handshake {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            if let (Some(state), Some(reason)) = (gateway, certificate_refusal(&e)) {
                let origin = Origin { actor: Actor::anonymous(), source_ip: Some(remote.ip()), user_agent: None };
                let event = Event::new("auth.failed", "authenticate", Resource::new("worker_gateway", "tls"))
                    .outcome(Outcome::Failure)
                    .detail("reason", reason);
                state.failures.note(origin, event).await;
            }
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let presented = stream.get_ref().1.peer_certificates().and_then(|certs| certs.first()).cloned();
    let peer = presented.as_deref().and_then(pki::peer_cert);
    // A worker's connections close the moment it is revoked or its CA is
    // retired, a parked long-poll included.
    let standing = match (standing_of, presented, &peer) {
        (Some((revoked, trust, changes)), Some(cert), Some(peer)) => {
            let valid_at = UnixTime::since_unix_epoch(Duration::from_millis(peer.not_after.as_millis()));
            Some(Standing { revoked, worker: peer.worker, trust, cert, valid_at, changes })
        }
        _ => None,
    };
    let info = ConnInfo { remote, peer };
    let activity =
        Arc::new(Activity { started: Instant::now(), in_flight: AtomicUsize::new(0), last_ms: AtomicU64::new(0) });
    let tracked = activity.clone();
    let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let (app, tracked) = (app.clone(), tracked.clone());
        tracked.in_flight.fetch_add(1, Ordering::Relaxed);
        async move {
            let response = app.oneshot(req.map(Body::new)).await;
            tracked.touch();
            tracked.in_flight.fetch_sub(1, Ordering::Relaxed);
            response
        }
    });
    // ALPN decides the protocol: workers and most tools speak HTTP/1.1, which
    // keeps a parked long-poll's connection small; HTTP/2 when asked for.
    let speaks_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let service = TowerToHyperService::new(service);
    if speaks_h2 {
        let io = TokioIo::new(stream);
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(256)
            .serve_connection(io, service);
        drive(Box::pin(conn), remote, &activity, limits, stop, standing).await;
    } else {
        // A refused head is answered before the rest of it has arrived:
        // the connection drains that rest before it closes.
        let io = TokioIo::new(Lingering::new(stream));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            .serve_connection(io, service);
        drive(Box::pin(conn), remote, &activity, limits, stop, standing).await;
    }
}

/// What keeps a worker's connection open: its worker not revoked, its
/// certificate's CA still trusted.
struct Standing {
    revoked: Arc<pki::Revoked>,
    worker: WorkerId,
    trust: Arc<ClientTrust>,
    cert: CertificateDer<'static>,
    /// A moment the certificate was valid, to ask the trust about its CA.
    valid_at: UnixTime,
    /// Revocations and trust changes since before the handshake.
    changes: (watch::Receiver<u64>, watch::Receiver<u64>),
}

/// Resolves, saying why, once the connection loses its standing; never for
/// a connection without one. The handshake has just judged the certificate,
/// so only what changes after it is looked at, and only the side that
/// changed (a chain check per open connection only when the trust changes).
async fn lost_standing(standing: Option<Standing>) -> &'static str {
    let Some(mut s) = standing else {
        return std::future::pending().await;
    };
    let (revocations, trust_changes) = &mut s.changes;
    loop {
        tokio::select! {
            r = revocations.changed() => {
                if r.is_err() {
                    return std::future::pending().await;
                }
                if s.revoked.contains(s.worker) {
                    return "its worker was revoked";
                }
            }
            r = trust_changes.changed() => {
                if r.is_err() {
                    return std::future::pending().await;
                }
                if !s.trust.trusts(&s.cert, s.valid_at) {
                    return "its certificate's CA is no longer trusted";
                }
            }
        }
    }
}

/// Runs a connection to its end: asks it to finish when the server stops,
/// drops it when it has been idle too long or it loses its standing.
async fn drive<C>(
    mut conn: Pin<Box<C>>,
    remote: SocketAddr,
    activity: &Activity,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
    standing: Option<Standing>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let lost = lost_standing(standing);
    tokio::pin!(lost);
    let mut idle_check = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(100)));
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            why = &mut lost => {
                tracing::info!(%remote, "closing a worker's connection: {why}");
                return;
            }
            _ = idle_check.tick() => {
                if activity.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                    tracing::debug!(%remote, "closing an idle connection");
                    return;
                }
            }
        }
    }
}
