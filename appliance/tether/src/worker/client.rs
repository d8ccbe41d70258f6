//! The worker's side of the gateway protocol. Every call is outbound HTTPS.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use tether_base::tls;
pub use tether_wire::{
    CompleteReply, DeliveredSecret, EnrollRequest, Enrolled, HeartbeatReply, HeartbeatRequest, LeasedTask, Offers,
    PollReply, PollRequest, ProgressReply, ProgressRequest, RenewRequest, Renewed, Report, ReportedError,
};

/// How a call failed, as far as the agent's next move is concerned.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Network trouble or a 5xx: try again later.
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    /// 409: the lease is gone; drop the task.
    #[error("lease no longer held")]
    LeaseLost,
    /// 503 `sealed`: the broker is up but sealed. Leases get a fresh term at
    /// the unseal, so a finished task's report is worth keeping until then.
    #[error("the broker is sealed")]
    Sealed,
    /// Any other refusal: retrying the same call will not help.
    #[error("{detail} (HTTP {status}, code {code})")]
    Refused { status: u16, code: String, detail: String },
}

/// A connection to the broker's worker gateway.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    http: reqwest::Client,
    base: String,
}

/// Long enough for the longest poll the broker holds, plus slack.
const CALL_TIMEOUT: Duration = Duration::from_secs(45);

impl BrokerClient {
    /// An mTLS client presenting the worker's certificate.
    pub fn mtls(base: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<BrokerClient, tls::TlsError> {
        let config = tls::client(ca_pem, Some((cert_pem, key_pem)), tls::WORKER_ALPN)?;
        Ok(BrokerClient { http: tls::https_client(config, CALL_TIMEOUT)?, base: base.trim_end_matches('/').into() })
    }

    /// Enrolls: a connection without a certificate, offering the enrollment
    /// ALPN. The token is sent only once the broker has proved itself by
    /// `trust`; a broker whose CA does not match a pin is `Refused`
    /// (`broker_untrusted`), since asking again cannot help.
    pub async fn enroll(
        base: &str,
        trust: tls::Trust<'_>,
        token: &str,
        csr_pem: &str,
        labels: &[String],
    ) -> Result<Enrolled, CallError> {
        let config =
            tls::trusting(trust, None, tls::CLIENT_ENROLL_ALPN).map_err(|e| refused(0, "tls", &e.to_string()))?;
        let http = tls::https_client(config, CALL_TIMEOUT).map_err(|e| refused(0, "tls", &e.to_string()))?;
        let client = BrokerClient { http, base: base.trim_end_matches('/').into() };
        let request = EnrollRequest { token: token.into(), csr_pem: csr_pem.into(), labels: labels.to_vec() };
        client.post(tether_wire::ENROLL, &request).await
    }

    pub async fn poll(&self, max_tasks: usize, wait: Duration) -> Result<PollReply, CallError> {
        let max_tasks = Some(u32::try_from(max_tasks).unwrap_or(u32::MAX));
        self.post(tether_wire::POLL, &PollRequest { max_tasks, wait_s: Some(wait.as_secs()) }).await
    }

    pub async fn heartbeat(&self, task: &str, lease: &str) -> Result<HeartbeatReply, CallError> {
        self.post(&tether_wire::heartbeat_path(task), &HeartbeatRequest { lease_id: lease.into() }).await
    }

    /// Tells the broker what this worker runs.
    pub async fn offer(&self, offers: &Offers) -> Result<Offers, CallError> {
        self.post(tether_wire::OFFERS, offers).await
    }

    pub async fn progress(&self, task: &str, report: &ProgressRequest) -> Result<ProgressReply, CallError> {
        self.post(&tether_wire::progress_path(task), report).await
    }

    pub async fn complete(&self, task: &str, report: &Report) -> Result<CompleteReply, CallError> {
        self.post(&tether_wire::complete_path(task), report).await
    }

    pub async fn renew(&self, csr_pem: &str) -> Result<Renewed, CallError> {
        self.post(tether_wire::RENEW, &RenewRequest { csr_pem: csr_pem.into() }).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, CallError> {
        let resp =
            self.http.post(format!("{}{path}", self.base)).json(body).send().await.map_err(|e| send_error(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| CallError::Unreachable(tether_base::tls::error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| CallError::Unreachable(format!("unexpected reply: {e}")));
        }
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = problem["code"].as_str().unwrap_or("unknown");
        let detail = problem["detail"].as_str().unwrap_or("");
        match status.as_u16() {
            409 => Err(CallError::LeaseLost),
            503 if code == "sealed" => Err(CallError::Sealed),
            s if s >= 500 || s == 408 || s == 429 => Err(CallError::Unreachable(format!("HTTP {s} ({code})"))),
            s => Err(refused(s, code, detail)),
        }
    }
}

/// A request that got no answer: the network; or a handshake that no retry
/// mends: a broker that failed its pin, or a broker that refused this
/// worker's certificate as revoked or as expired past its grace window.
fn send_error(e: &reqwest::Error) -> CallError {
    match tls_cause(e) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)))
            if other.0.downcast_ref::<tls::PinMismatch>().is_some() =>
        {
            refused(0, "broker_untrusted", &tls::PinMismatch.to_string())
        }
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)) => refused(
            0,
            "worker_revoked",
            "the broker refused this worker's certificate as revoked; enroll it again with a new token",
        ),
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired)) => refused(
            0,
            "certificate_expired",
            "the broker refused this worker's certificate as expired past the renewal grace window; enroll it again with a new token",
        ),
        _ => CallError::Unreachable(tether_base::tls::error_chain(e)),
    }
}

/// The rustls error behind `e`, if any. It sits inside `io::Error`s (one
/// or more), whose `source()` skips what they wrap, so each layer is opened
/// by hand.
fn tls_cause<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(current) = next {
        let mut layer: &(dyn std::error::Error + 'static) = current;
        while let Some(wrapped) = layer.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            layer = wrapped;
        }
        if let Some(found) = layer.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}

fn refused(status: u16, code: &str, detail: &str) -> CallError {
    CallError::Refused { status, code: code.into(), detail: detail.into() }
}
