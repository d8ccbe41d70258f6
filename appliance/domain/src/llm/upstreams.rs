//! Upstreams: the site's Ollama and vLLM (or other OpenAI-compatible)
//! servers, configured by an admin. Their credentials are sealed in the
//! vault; nothing about an upstream (address, headers, errors) is ever
//! shown to a gateway client.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::{self, Event, Origin, Resource};
use crate::vault::{self, Keys, Place, Sealed};
use tether_base::clock::Timestamp;
use tether_store::{self as store, Collection, ReadTx, WriteTx};

/// Keyed by name.
const UPSTREAMS: Collection<Upstream> = Collection::new("llm_upstreams");

/// Which wire protocol the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// Ollama's native API (`/api/chat`, `/api/tags`, ...).
    Ollama,
    /// vLLM or any OpenAI-compatible server (`/v1/chat/completions`, ...).
    Openai,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub name: String,
    pub kind: UpstreamKind,
    /// Base URL, e.g. `http://10.0.0.5:11434` or `https://vllm.site.lan:8000`.
    pub url: String,
    /// The models it serves, as clients name them.
    pub models: Vec<String>,
    /// The CA that signs an `https` upstream's certificate (PEM).
    pub ca_pem: Option<String>,
    /// A bearer credential the upstream wants (vLLM's `--api-key`), sealed.
    pub credential: Option<Sealed>,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// What an admin asks an upstream to be (the body of `PUT
/// /api/v1/llm/upstreams/{name}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub kind: UpstreamKind,
    pub url: String,
    pub models: Vec<String>,
    pub ca_pem: Option<String>,
    /// A bearer credential the upstream wants, in the clear: sealed before
    /// it is stored, never shown again.
    pub credential: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings").field("kind", &self.kind).field("url", &self.url).finish_non_exhaustive()
    }
}

/// Why an upstream was not set.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The settings do not make an upstream (the message says why).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What an admin sees of an upstream (never the credential).
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamInfo {
    pub name: String,
    pub kind: UpstreamKind,
    pub url: String,
    pub models: Vec<String>,
    pub has_ca: bool,
    pub has_credential: bool,
    #[serde(serialize_with = "tether_base::clock::as_rfc3339")]
    pub updated_at: Timestamp,
    pub updated_by: String,
}

impl From<&Upstream> for UpstreamInfo {
    fn from(u: &Upstream) -> UpstreamInfo {
        UpstreamInfo {
            name: u.name.clone(),
            kind: u.kind,
            url: u.url.clone(),
            models: u.models.clone(),
            has_ca: u.ca_pem.is_some(),
            has_credential: u.credential.is_some(),
            updated_at: u.updated_at,
            updated_by: u.updated_by.clone(),
        }
    }
}

/// Where an upstream's credential is sealed.
pub fn credential_place(name: &str) -> Place<'_> {
    Place::new("llm_upstreams", name.as_bytes(), "credential")
}

/// `request` with the upstream's credential, if it has one (opened from
/// the vault for this request only).
pub fn authorize(
    vault: &crate::vault::Vault,
    upstream: &Upstream,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::RequestBuilder, crate::vault::Error> {
    let Some(sealed) = &upstream.credential else { return Ok(request) };
    let secret = zeroize::Zeroizing::new(vault.decrypt(credential_place(&upstream.name), sealed)?);
    Ok(request.bearer_auth(String::from_utf8_lossy(&secret)))
}

/// Checks what an admin asks for before it is stored.
pub fn check(name: &str, url: &str, models: &[String]) -> Result<(), String> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err("an upstream's name is 1-64 characters of a-z, 0-9, '-', '_', '.'".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| format!("{url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} must be an http:// or https:// URL"));
    }
    if parsed.query().is_some() || !parsed.username().is_empty() {
        return Err("give the base URL only: no query, no user (a credential goes in `credential`)".into());
    }
    if models.is_empty() || models.iter().any(|m| m.is_empty() || m.len() > 200 || m.chars().any(char::is_control)) {
        return Err("list the models the upstream serves (names of 1-200 printable characters)".into());
    }
    Ok(())
}

/// Adds or replaces an upstream.
pub fn put(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, upstream: &Upstream) -> Result<(), store::Error> {
    let existed = tx.get(UPSTREAMS, upstream.name.as_bytes())?.is_some();
    tx.put(UPSTREAMS, upstream.name.as_bytes(), upstream)?;
    let event = Event::new(
        "llm.upstream_set",
        if existed { "update" } else { "create" },
        Resource::new("llm_upstream", &upstream.name),
    )
    .detail("kind", format!("{:?}", upstream.kind).to_lowercase())
    .detail("url", &upstream.url)
    .detail("models", upstream.models.join(","))
    .detail("credential", upstream.credential.is_some());
    audit::append(tx, now, origin, event)?;
    Ok(())
}

pub fn list(tx: &ReadTx) -> Result<Vec<Upstream>, store::Error> {
    tx.values(UPSTREAMS)
}

/// Removes an upstream. Returns whether it existed.
pub fn remove(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, name: &str) -> Result<bool, store::Error> {
    if !tx.delete(UPSTREAMS, name.as_bytes())? {
        return Ok(false);
    }
    audit::append(tx, now, origin, Event::new("llm.upstream_removed", "delete", Resource::new("llm_upstream", name)))?;
    Ok(true)
}

/// Re-seals upstream credentials under the newest data key.
pub fn refresh_seals(tx: &mut WriteTx<'_>, keys: &Keys) -> Result<usize, crate::vault::Error> {
    let mut moved = 0;
    for mut upstream in tx.values(UPSTREAMS)? {
        let Some(sealed) = &upstream.credential else { continue };
        if let Some(fresh) = keys.refresh(credential_place(&upstream.name), sealed)? {
            upstream.credential = Some(fresh);
            tx.put(UPSTREAMS, upstream.name.as_bytes(), &upstream)?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// An HTTP client for a model server: `https` trusting only `ca_pem`,
/// plain `http` trusting nothing (a redirect to https fails); no proxy,
/// no redirects followed, TCP_NODELAY.
pub fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let tls = match ca_pem {
        Some(ca) => tether_base::tls::client(ca, None, tether_base::tls::CLIENT_HTTP_ALPN),
        None => tether_base::tls::client_without_roots(tether_base::tls::CLIENT_HTTP_ALPN),
    }
    .map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}
