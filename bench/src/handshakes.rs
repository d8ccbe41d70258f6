//! (f) server CPU per new mTLS connection, and (g) a reconnect storm, each
//! against a bare rustls mTLS server measured in the same run.
//!
//! The bare server is this bench binary started as a separate process
//! (`--bare-mtls-server DIR`): tokio-rustls with the same provider, suites,
//! server certificate and CA as the appliance's worker gateway, a client
//! certificate required and checked against the CA, then one fixed HTTP
//! answer. The appliance adds what a worker connection costs it: its
//! revocation and grace admission, reading the worker identity out of the
//! certificate, HTTP, the route, and (for a poll) the worker record.
//!
//! Every connection is a full handshake (client resumption disabled) that
//! sends one request with `Connection: close` and reads the answer.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::appliance::Reaped;
use anyhow::{Context, bail, ensure};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::appliance::Identity;

/// A client configuration that always does a full handshake.
pub fn client_config(ca_pem: &str, who: &Identity) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut config =
        tether_base::tls::client(ca_pem, Some((&who.cert_pem, &who.key_pem)), tether_base::tls::WORKER_ALPN)?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// One connection: handshake, one request, the whole answer. Returns how
/// long it took.
pub async fn one_connection(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    tls.write_all(request).await?;
    let answer = read_http_answer(&mut tls).await?;
    ensure!(answer.starts_with(b"HTTP/1.1 200"), "answer: {}", String::from_utf8_lossy(&answer));
    Ok(start.elapsed())
}

/// Reads headers, then as many body bytes as Content-Length says.
async fn read_http_answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse())
                .transpose()?
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(buf);
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens `count` connections, `concurrency` at a time; returns each one's
/// duration and how many failed.
pub async fn connections(
    addr: SocketAddr,
    configs: &[Arc<rustls::ClientConfig>],
    request: &'static [u8],
    count: usize,
    concurrency: usize,
) -> (Vec<Duration>, usize) {
    let mut set = tokio::task::JoinSet::new();
    let (mut times, mut failed) = (Vec::with_capacity(count), 0);
    for i in 0..count {
        if set.len() >= concurrency
            && let Some(done) = set.join_next().await
        {
            match done {
                Ok(Ok(t)) => times.push(t),
                _ => failed += 1,
            }
        }
        let config = configs[i % configs.len()].clone();
        set.spawn(async move { one_connection(addr, config, request).await });
    }
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(t)) => times.push(t),
            Ok(Err(e)) => {
                if failed == 0 {
                    eprintln!("    first failure: {e:#}");
                }
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    (times, failed)
}

/// The bare rustls mTLS server, in its own process.
pub struct BareServer {
    child: Reaped,
    pub addr: SocketAddr,
}

impl BareServer {
    /// Starts this binary as a bare server on the appliance's certificates in `data`.
    pub fn start(data: &Path) -> anyhow::Result<BareServer> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--bare-mtls-server")
            .arg(data)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line.trim().parse().with_context(|| format!("bare server said {line:?}"))?;
        Ok(BareServer { child: Reaped(child), addr })
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        crate::appliance::cpu_seconds_of(self.child.id())
    }
}

/// The bare server's main: prints its address, then serves until killed.
pub fn serve_bare(data: &Path) -> anyhow::Result<()> {
    let read = |name: &str| std::fs::read_to_string(data.join(name)).with_context(|| format!("reading {name}"));
    let (cert_pem, key_pem, ca_pem) = (read("server.pem")?, read("server.key")?, read("ca.pem")?);
    let policy = tether_base::crypto::CryptoPolicy::STANDARD;
    let mut roots = rustls::RootCertStore::empty();
    for cert in tether_base::tls::certs_from_pem(&ca_pem, "ca.pem")? {
        roots.add(cert)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), policy.tls_provider()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(policy.tls_provider())
        .with_protocol_versions(policy.tls_versions())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            tether_base::tls::certs_from_pem(&cert_pem, "server.pem")?,
            tether_base::tls::key_from_pem(&key_pem, "server.key")?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    // The same runtime shape as the appliance: one worker thread per core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = [0u8; 4096];
                let mut seen = 0;
                while seen < request.len() {
                    match tls.read(&mut request[seen..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen += n,
                    }
                    if request[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let body = br#"{"tasks":[],"lease_s":60,"heartbeat_s":20}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    })
}
