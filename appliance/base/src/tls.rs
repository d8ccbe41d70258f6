//! Every TLS configuration the appliance makes or takes, for listeners and
//! clients alike. Which versions, suites, groups and signatures they allow is
//! the [`CryptoPolicy`]'s to decide; this module builds configurations from
//! it and adds the appliance's own checks (revocation, CA pins).

use std::sync::{Arc, RwLock};

use crate::crypto::CryptoPolicy;
use crate::crypto::primitives::digest::{SHA256, digest};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, ServerConfig, SignatureScheme,
};

/// ALPN a worker offers when it enrolls. The worker gateway serves such a
/// connection without a client certificate, and only the enrollment route.
/// Every other connection to the gateway must present a certificate from the
/// appliance CA during the handshake.
pub const ENROLL_ALPN: &[u8] = b"tether-enroll/1";
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate found in {0}")]
    NoCertificate(&'static str),
    #[error("no private key found in {0}")]
    NoKey(&'static str),
    #[error("PEM could not be read ({0}): {1}")]
    Pem(&'static str, #[source] std::io::Error),
    #[error("TLS configuration rejected: {0}")]
    Config(#[source] crate::Cause),
}

/// `sha256:<hex>` of a certificate's DER encoding: how a certificate is
/// named and pinned.
pub fn fingerprint_der(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(digest(&SHA256, der)))
}

pub fn certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| TlsError::Pem(what, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

pub fn key_from_pem(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes()).map_err(|e| TlsError::Pem(what, e))?.ok_or(TlsError::NoKey(what))
}

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "the CA file")? {
        roots.add(cert).map_err(|e| TlsError::Config(e.into()))?;
    }
    Ok(roots)
}

fn server_builder(
    policy: CryptoPolicy,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError> {
    ServerConfig::builder_with_provider(policy.tls_provider())
        .with_protocol_versions(policy.tls_versions())
        .map_err(|e| TlsError::Config(e.into()))
}

fn finish_server(
    builder: rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>,
    cert: Arc<ServedCert>,
    alpn: Vec<Vec<u8>>,
) -> Arc<ServerConfig> {
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = alpn;
    Arc::new(config)
}

/// A certificate chain and key a listener serves, replaceable while it
/// runs: each new handshake takes the current pair, open connections keep
/// theirs. How the appliance renews its own certificate, or takes up an
/// operator's new one, without a restart.
pub struct ServedCert {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ServedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCert").finish_non_exhaustive()
    }
}

impl ServedCert {
    /// Loads `chain_pem` (end-entity first) and its key, checking they match.
    pub fn load(policy: CryptoPolicy, chain_pem: &str, key_pem: &str) -> Result<Arc<ServedCert>, TlsError> {
        let provider = policy.tls_provider();
        let current = RwLock::new(certified(&provider, chain_pem, key_pem)?);
        Ok(Arc::new(ServedCert { current, provider }))
    }

    /// Serves `chain_pem` and its key from the next handshake on. On an
    /// error the pair served so far stays.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let next = certified(&self.provider, chain_pem, key_pem)?;
        let mut current = self.current.write().map_err(|_| TlsError::Config("certificate lock poisoned".into()))?;
        *current = next;
        Ok(())
    }
}

fn certified(provider: &CryptoProvider, chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs_from_pem(chain_pem, "the server certificate")?;
    let key = key_from_pem(key_pem, "the server key")?;
    CertifiedKey::from_der(chain, key, provider).map(Arc::new).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Config("the key does not belong to the certificate".into()),
        other => TlsError::Config(other.into()),
    })
}

impl ResolvesServerCert for ServedCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn http_alpn() -> Vec<Vec<u8>> {
    HTTP_ALPN.iter().map(|p| p.to_vec()).collect()
}

/// The console/API listener: server authentication only.
pub fn console_server(policy: CryptoPolicy, cert: Arc<ServedCert>) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(finish_server(server_builder(policy)?.with_no_client_auth(), cert, http_alpn()))
}

/// The appliance's word on a worker certificate, before the CA's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Judge it by the chain as of now.
    Current,
    /// Expired at `not_after`, but within the renewal grace window: judge
    /// the chain as of its expiry (the HTTP layer lets it only renew).
    InGrace { not_after: UnixTime },
    /// Revoked, or naming no worker.
    Refused,
}

/// Decides the [`Admission`] of a client certificate at a given time.
pub type AdmitCert = Arc<dyn Fn(&CertificateDer<'_>, UnixTime) -> Admission + Send + Sync>;

/// The CAs whose client certificates the worker gateway accepts,
/// replaceable while it runs (a CA rotation adds one, then retires one).
pub struct ClientTrust {
    chain: RwLock<Arc<dyn ClientCertVerifier>>,
    policy: CryptoPolicy,
    schemes: Vec<SignatureScheme>,
    /// Bumped at every replacement, for connections to look again.
    changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTrust").finish_non_exhaustive()
    }
}

impl ClientTrust {
    /// Trusts every CA certificate in `bundle_pem`.
    pub fn new(policy: CryptoPolicy, bundle_pem: &str) -> Result<Arc<ClientTrust>, TlsError> {
        let chain = chain_verifier(policy, bundle_pem)?;
        let schemes = chain.supported_verify_schemes();
        let changed = tokio::sync::watch::Sender::new(0);
        Ok(Arc::new(ClientTrust { chain: RwLock::new(chain), policy, schemes, changed }))
    }

    /// Trusts exactly the CAs in `bundle_pem` from the next handshake on.
    pub fn replace(&self, bundle_pem: &str) -> Result<(), TlsError> {
        let next = chain_verifier(self.policy, bundle_pem)?;
        *self.chain.write().map_err(|_| TlsError::Config("trust lock poisoned".into()))? = next;
        self.changed.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Wakes when the trusted CAs change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether a client certificate still chains to a trusted CA, judged at
    /// `at` (a moment it was valid: this asks about the CA, not the time).
    pub fn trusts(&self, cert: &CertificateDer<'_>, at: UnixTime) -> bool {
        self.current().is_ok_and(|chain| chain.verify_client_cert(cert, &[], at).is_ok())
    }

    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.chain.read().map(|c| c.clone()).map_err(|_| rustls::Error::General("trust lock poisoned".into()))
    }
}

fn chain_verifier(policy: CryptoPolicy, bundle_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(bundle_pem)?), policy.tls_provider())
        .build()
        .map_err(|e| TlsError::Config(e.into()))
}

/// The worker gateway for enrolled workers: a client certificate from a CA
/// `trust` holds, and which `admit` does not refuse, is required during the
/// handshake.
pub fn worker_server(
    policy: CryptoPolicy,
    cert: Arc<ServedCert>,
    trust: Arc<ClientTrust>,
    admit: AdmitCert,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = Arc::new(GatedVerifier { trust, admit });
    Ok(finish_server(server_builder(policy)?.with_client_cert_verifier(verifier), cert, http_alpn()))
}

/// The CA chain check, as of the time `admit` says, then its verdict: a
/// revoked worker fails the handshake with a `certificate_revoked` alert,
/// one expired past its grace window with `certificate_expired`.
struct GatedVerifier {
    trust: Arc<ClientTrust>,
    admit: AdmitCert,
}

impl std::fmt::Debug for GatedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatedVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for GatedVerifier {
    /// No hints: the trusted CAs change at run time, and a worker presents
    /// its one certificate whatever the hints say.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let admission = (self.admit)(end_entity, now);
        let at = match admission {
            Admission::InGrace { not_after } => not_after,
            Admission::Current | Admission::Refused => now,
        };
        let verified = self.trust.current()?.verify_client_cert(end_entity, intermediates, at)?;
        if admission == Admission::Refused {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.schemes.clone()
    }
}

/// The worker gateway for a connection that asked to enroll. `cert`'s
/// chain must end with the CA certificate, for workers that enroll with a
/// pin (see [`enroll_chain`]).
pub fn enroll_server(policy: CryptoPolicy, cert: Arc<ServedCert>) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(finish_server(server_builder(policy)?.with_no_client_auth(), cert, vec![ENROLL_ALPN.to_vec()]))
}

/// The chain the enrollment listener serves: the server certificate, then
/// the CA's.
pub fn enroll_chain(cert_pem: &str, ca_pem: &str) -> String {
    format!("{}\n{ca_pem}", cert_pem.trim_end())
}

const CLIENT_POLICY: CryptoPolicy = CryptoPolicy::STANDARD;

/// What a client trusts to authenticate the broker.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The appliance CA certificate (PEM).
    Ca(&'a str),
    /// Only a CA whose certificate has this fingerprint (`sha256:<hex>`),
    /// sent by the broker in its chain: how a worker enrolls from a join
    /// string, with no CA file and no trust on first use.
    Pin(&'a str),
    /// Exactly the server certificate with this fingerprint, whatever it
    /// names: setup mode's self-signed certificate, whose fingerprint the
    /// machine's status screen shows (what an operator checks in the
    /// browser's warning).
    Certificate(&'a str),
}

/// A client that trusts only `ca_pem` and optionally presents an identity.
pub fn client(ca_pem: &str, identity: Option<(&str, &str)>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    trusting(Trust::Ca(ca_pem), identity, alpn)
}

/// A client for plain-http peers (a LAN model server): it trusts no CA, so
/// a redirect to https fails rather than trusting anything by default.
pub fn client_without_roots(alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(CLIENT_POLICY.tls_provider())
        .with_protocol_versions(CLIENT_POLICY.tls_versions())
        .map_err(|e| TlsError::Config(e.into()))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client that trusts what `trust` names and optionally presents an
/// identity. Clients follow the standard policy: a broker in FIPS mode
/// narrows what is negotiated (P-256 rather than X25519) on its side.
pub fn trusting(trust: Trust<'_>, identity: Option<(&str, &str)>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let provider = CLIENT_POLICY.tls_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(CLIENT_POLICY.tls_versions())
        .map_err(|e| TlsError::Config(e.into()))?;
    let builder = match trust {
        Trust::Ca(ca_pem) => builder.with_root_certificates(roots(ca_pem)?),
        Trust::Pin(pin) => {
            let pinned = Pinned { pin: pin.to_ascii_lowercase(), what: Pin::Ca, provider };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(pinned))
        }
        Trust::Certificate(pin) => {
            let pinned = Pinned { pin: pin.to_ascii_lowercase(), what: Pin::Certificate, provider };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(pinned))
        }
    };
    let mut config = match identity {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(
                certs_from_pem(cert_pem, "the client certificate")?,
                key_from_pem(key_pem, "the client key")?,
            )
            .map_err(|e| TlsError::Config(e.into()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server trusted by a fingerprint ([`Pin`] says of what).
#[derive(Debug)]
struct Pinned {
    pin: String,
    what: Pin,
    /// The client policy's provider: its signature algorithms verify the broker.
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug, Clone, Copy)]
enum Pin {
    /// The broker's certificate chain must hold a CA certificate with the
    /// pinned fingerprint, and the server certificate must verify against
    /// that CA (name, validity, signature) exactly as with a CA file.
    Ca,
    /// The server certificate itself is the pinned one.
    Certificate,
}

/// Why a pinned client refused the broker.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate or CA does not match the pin")]
pub struct PinMismatch;

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mismatch =
            || rustls::Error::InvalidCertificate(rustls::CertificateError::Other(OtherError(Arc::new(PinMismatch))));
        if let Pin::Certificate = self.what {
            // The handshake's signatures are still checked against it.
            return if fingerprint_der(end_entity) == self.pin {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(mismatch())
            };
        }
        let ca = intermediates.iter().find(|c| fingerprint_der(c) == self.pin).ok_or_else(mismatch)?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|_| mismatch())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// ALPN for ordinary HTTPS clients of the appliance.
pub const CLIENT_HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for an enrolled worker's connections. HTTP/1.1 only: a parked
/// long-poll then costs the appliance about a third less memory than an
/// HTTP/2 connection does (measured in BENCHMARKS.md, idle polls), and a
/// worker's few concurrent calls simply use a second pooled connection.
pub const WORKER_ALPN: &[&[u8]] = &[b"http/1.1"];
/// ALPN for the enrollment call.
pub const CLIENT_ENROLL_ALPN: &[&[u8]] = &[ENROLL_ALPN];

/// An HTTPS client over `config`: no proxies (an air-gapped site has none to
/// honour by accident), HTTP/1.1 and HTTP/2 by ALPN.
pub fn https_client(config: ClientConfig, timeout: std::time::Duration) -> Result<reqwest::Client, TlsError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(timeout)
        .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TlsError::Config(e.into()))
}

/// reqwest's top-level error says little; the cause chain says what happened.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
