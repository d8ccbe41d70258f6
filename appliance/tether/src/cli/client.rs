//! The CLI's HTTPS client for the management API: where the appliance is
//! (`--url` or TETHER_URL) and which CA to trust (`--ca-file` or
//! TETHER_CA_FILE), given once before the command; its failures typed
//! ([`super::failure`]) so that each has its exit code.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

use super::failure::{ApiProblem, NotReached};
use tether_base::tls;

/// Where the appliance is and which CA to trust, as the command line gave them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Connection {
    /// The appliance's console/API address [default: https://127.0.0.1:8443].
    #[arg(long, env = "TETHER_URL", value_name = "URL")]
    pub url: Option<String>,
    /// The appliance CA certificate to trust (ca.pem in its data directory).
    #[arg(long, env = "TETHER_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

static CONNECTION: OnceLock<Connection> = OnceLock::new();

/// Keeps the command line's connection for every client this run makes.
pub fn use_connection(connection: Connection) {
    let _ = CONNECTION.set(connection);
}

/// Talks to `TETHER_URL` with `TETHER_TOKEN`, trusting only `TETHER_CA_FILE`.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

const DEFAULT_URL: &str = "https://127.0.0.1:8443";

impl ApiClient {
    /// With the token in TETHER_TOKEN, else the file TETHER_TOKEN_FILE
    /// names, else the one `tether login` keeps (refused if others can read it).
    pub fn from_env(timeout: std::time::Duration) -> anyhow::Result<ApiClient> {
        let token = match (std::env::var("TETHER_TOKEN"), std::env::var("TETHER_TOKEN_FILE")) {
            (Ok(t), _) => t,
            (Err(_), Ok(path)) => {
                std::fs::read_to_string(&path).with_context(|| format!("cannot read TETHER_TOKEN_FILE {path}"))?
            }
            _ => match super::login::default_token_file().filter(|f| f.exists()) {
                Some(file) => tether_base::files::read_secret(&file)?.to_string(),
                None => bail!("set TETHER_TOKEN (or TETHER_TOKEN_FILE) to an API token, or run `tether login`"),
            },
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
        let given = CONNECTION.get().cloned().unwrap_or_default();
        let url = given.url.or_else(|| std::env::var("TETHER_URL").ok()).unwrap_or_else(|| DEFAULT_URL.into());
        let base = https_only(&url)?;
        let ca_path = given.ca_file.or_else(|| std::env::var_os("TETHER_CA_FILE").map(PathBuf::from)).context(
            "pass --ca-file or set TETHER_CA_FILE to the appliance CA certificate (ca.pem in its data directory)",
        )?;
        let ca = std::fs::read_to_string(&ca_path)
            .with_context(|| format!("cannot read the CA certificate {}", ca_path.display()))?;
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

    /// Like [`ApiClient::call`], with the answer's headers (a sign-in's cookie).
    pub async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(Value, reqwest::header::HeaderMap)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| not_reached(&self.base, &e))?;
        let headers = resp.headers().clone();
        let bytes = ApiClient::success(resp).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).context("the reply is not JSON")?
        };
        Ok((value, headers))
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

    /// Opens a stream of server-sent events at `path`, held open for as long
    /// as the appliance sends (no overall time limit); a refusal is the
    /// problem as an error.
    pub async fn open_stream(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(std::time::Duration::from_secs(7 * 86400))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|e| not_reached(&self.base, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        ApiClient::success(resp).await?;
        anyhow::bail!("the appliance answered without a stream")
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
        ApiClient::success(resp).await
    }

    /// The body of a success, or the problem as an error.
    async fn success(resp: reqwest::Response) -> anyhow::Result<Vec<u8>> {
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the reply")?;
        if !status.is_success() {
            let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let detail = problem["detail"].as_str().unwrap_or(status.canonical_reason().unwrap_or("error"));
            let code = problem["code"].as_str().unwrap_or("unknown");
            return Err(ApiProblem { status: status.as_u16(), code: code.to_owned(), detail: detail.to_owned() }.into());
        }
        Ok(bytes.to_vec())
    }
}

/// Why a request did not reach the appliance, saying what to change: a
/// certificate the trusted CA did not sign is named as such, not as a
/// network failure.
fn not_reached(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let chain = tls::error_chain(e);
    let untrusted = chain.contains("invalid peer certificate");
    let message = if untrusted {
        format!(
            "certificate not trusted: {base} showed a certificate the CA given did not sign ({chain}); \
             pass --ca-file or TETHER_CA_FILE naming that appliance's ca.pem"
        )
    } else {
        format!("cannot reach {base} (is --url or TETHER_URL right?): {chain}")
    };
    NotReached { untrusted, message }.into()
}

/// The appliance's address as --url or TETHER_URL gives it, if it is an https:// one
/// (without its trailing slash); otherwise what to write instead.
fn https_only(url: &str) -> anyhow::Result<String> {
    let url = url.trim();
    match url.split_once("://") {
        Some(("https", rest)) if rest.trim_end_matches('/').is_empty() => {
            bail!("the address {url} names no host; use https://HOST:8443")
        }
        Some(("https", _)) => Ok(url.trim_end_matches('/').to_owned()),
        Some(("http", rest)) => bail!("the address {url}: the appliance speaks HTTPS only; use https://{rest}"),
        Some((scheme, _)) => bail!("the address {url}: {scheme}:// is not the appliance's; use https://HOST:8443"),
        None => bail!("the address {url} has no scheme: the appliance speaks HTTPS only; use https://{url}"),
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
            said("10.0.0.5:8443").contains("has no scheme: the appliance speaks HTTPS only; use https://10.0.0.5:8443")
        );
        assert!(said("ftp://x").contains("ftp:// is not the appliance's"));
        assert!(said("https://").contains("names no host"));
    }
}
