//! The CLI's HTTPS client for the management API.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

use tether_base::tls;

/// Talks to `TETHER_URL` with `TETHER_TOKEN`, trusting only `TETHER_CA_FILE`.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

const DEFAULT_URL: &str = "https://127.0.0.1:8443";

impl ApiClient {
    pub fn from_env(timeout: std::time::Duration) -> anyhow::Result<ApiClient> {
        let token = match (std::env::var("TETHER_TOKEN"), std::env::var("TETHER_TOKEN_FILE")) {
            (Ok(t), _) => t,
            (Err(_), Ok(path)) => {
                std::fs::read_to_string(&path).with_context(|| format!("cannot read TETHER_TOKEN_FILE {path}"))?
            }
            _ => bail!("set TETHER_TOKEN (or TETHER_TOKEN_FILE) to an API token"),
        };
        ApiClient::connect(timeout, Some(token))
    }

    /// For the routes that take no token (unsealing, vault status).
    pub fn anonymous_from_env(timeout: std::time::Duration) -> anyhow::Result<ApiClient> {
        ApiClient::connect(timeout, None)
    }

    /// An anonymous client for `base`, trusting what `trust` names (the
    /// machine's own checks, which read the fingerprint from its status file).
    pub fn pinned(base: &str, trust: tls::Trust<'_>, timeout: std::time::Duration) -> anyhow::Result<ApiClient> {
        let config = tls::trusting(trust, None, tls::CLIENT_HTTP_ALPN)?;
        Ok(ApiClient {
            http: tls::https_client(config, timeout)?,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        })
    }

    fn connect(timeout: std::time::Duration, token: Option<String>) -> anyhow::Result<ApiClient> {
        let base = https_only(&std::env::var("TETHER_URL").unwrap_or_else(|_| DEFAULT_URL.into()))?;
        let ca_path = std::env::var("TETHER_CA_FILE")
            .context("set TETHER_CA_FILE to the appliance CA certificate (ca.pem in its data directory)")?;
        let ca = std::fs::read_to_string(&ca_path).with_context(|| format!("cannot read TETHER_CA_FILE {ca_path}"))?;
        let config = tls::client(&ca, None, tls::CLIENT_HTTP_ALPN)?;
        Ok(ApiClient { http: tls::https_client(config, timeout)?, base, token: token.map(|t| t.trim().to_owned()) })
    }

    /// Sends a request and returns the JSON body, or an error that carries
    /// the problem's detail and code.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let bytes = self.send(method, path, body, headers).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("the reply is not JSON")
    }

    /// Sends a request and returns the body's bytes, or the problem as an error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Vec<u8>> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.answer(req).await
    }

    /// Streams `body` (`length` bytes) to `path` with no overall time limit
    /// (a model bundle is gigabytes) and returns the JSON answer.
    pub async fn upload(
        &self,
        path: &str,
        body: reqwest::Body,
        length: u64,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(std::time::Duration::from_secs(7 * 86400))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let bytes = self.answer(req).await?;
        serde_json::from_slice(&bytes).context("the reply is not JSON")
    }

    /// Sends the request; the body of a success, or the problem as an error.
    async fn answer(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Vec<u8>> {
        let resp = req.send().await.map_err(|e| not_reached(&self.base, &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the reply")?;
        if !status.is_success() {
            let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let detail = problem["detail"].as_str().unwrap_or(status.canonical_reason().unwrap_or("error"));
            let code = problem["code"].as_str().unwrap_or("unknown");
            bail!("{detail} (HTTP {}, code {code})", status.as_u16());
        }
        Ok(bytes.to_vec())
    }
}

/// Why a request did not reach the appliance, saying what to change: a
/// certificate the trusted CA did not sign is named as such, not as a
/// network failure.
fn not_reached(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let chain = tls::error_chain(e);
    if chain.contains("invalid peer certificate") {
        anyhow::anyhow!(
            "certificate not trusted: {base} showed a certificate the CA in TETHER_CA_FILE did not sign ({chain}); \
             set TETHER_CA_FILE to that appliance's ca.pem"
        )
    } else {
        anyhow::anyhow!("cannot reach {base} (is TETHER_URL right?): {chain}")
    }
}

/// The appliance's address as TETHER_URL gives it, if it is an https:// one
/// (without its trailing slash); otherwise what to write instead.
fn https_only(url: &str) -> anyhow::Result<String> {
    let url = url.trim();
    match url.split_once("://") {
        Some(("https", rest)) if rest.trim_end_matches('/').is_empty() => {
            bail!("TETHER_URL is {url}: it names no host; use https://HOST:8443")
        }
        Some(("https", _)) => Ok(url.trim_end_matches('/').to_owned()),
        Some(("http", rest)) => bail!("TETHER_URL is {url}: the appliance speaks HTTPS only; use https://{rest}"),
        Some((scheme, _)) => bail!("TETHER_URL is {url}: {scheme}:// is not the appliance's; use https://HOST:8443"),
        None => bail!("TETHER_URL is {url}, with no scheme: the appliance speaks HTTPS only; use https://{url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_https_address_is_taken_and_the_others_say_what_to_write() {
        assert_eq!(https_only("https://tether.site.lan:8443/").unwrap(), "https://tether.site.lan:8443");
        let said = |url: &str| https_only(url).unwrap_err().to_string();
        assert!(said("http://10.0.0.5:8443").contains("HTTPS only; use https://10.0.0.5:8443"));
        assert!(
            said("10.0.0.5:8443")
                .contains("with no scheme: the appliance speaks HTTPS only; use https://10.0.0.5:8443")
        );
        assert!(said("ftp://x").contains("ftp:// is not the appliance's"));
        assert!(said("https://").contains("it names no host"));
    }
}
