//! The appliance under test: the release `tether` binary, started as an
//! operator would, and clients for its API and worker gateway.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tether::worker::client::BrokerClient;

pub struct Appliance {
    child: Reaped,
    pub console: String,
    pub gateway: String,
    pub admin_token: String,
    pub ca_pem: String,
    /// The data directory (its certificates serve the bare rustls peer).
    pub data: std::path::PathBuf,
}

/// A process the bench started (the appliance, a peer, a fake): killed and
/// reaped when dropped, so no measurement leaves a server behind.
pub struct Reaped(pub Child);

impl Reaped {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time process `pid` has used (user + system), in seconds.
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime is 14th, stime 15th overall.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11).context("utime")?.parse::<f64>()? + fields.get(12).context("stime")?.parse::<f64>()?;
    // Linux reports these in USER_HZ, which is 100 on every mainstream build.
    Ok(ticks / 100.0)
}

/// Whether this build of `tether` has the vault (`init --unseal`).
pub fn has_vault(tether: &Path) -> anyhow::Result<bool> {
    let help = Command::new(tether).args(["init", "--help"]).output()?;
    Ok(String::from_utf8_lossy(&help.stdout).contains("--unseal"))
}

impl Appliance {
    /// Initialises and starts `tether` in `dir`. A build with the vault is
    /// made with a key file and unseals itself from it; a build from before
    /// the vault (a baseline) is started as it was.
    pub fn start(tether: &Path, dir: &Path) -> anyhow::Result<Appliance> {
        Appliance::start_pinned(tether, dir, None)
    }

    /// Like [`Appliance::start`], with `serve` confined to `cpus` (taskset).
    pub fn start_pinned(tether: &Path, dir: &Path, cpus: Option<&str>) -> anyhow::Result<Appliance> {
        let data = dir.join("data");
        let key_file = dir.join("unseal.key");
        let mut init = Command::new(tether);
        init.args(["init", "--json", "--data-dir"]).arg(&data);
        let vault = has_vault(tether)?;
        if vault {
            init.args(["--unseal", "key-file", "--key-file"]).arg(&key_file);
        }
        let out = init.output()?;
        if !out.status.success() {
            bail!("tether init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let init: Value = serde_json::from_slice(&out.stdout)?;
        let admin_token = init["admin_token"].as_str().context("admin token")?;
        Appliance::serve(tether, dir, admin_token, cpus)
    }

    /// Serves the data directory `start` initialised in `dir` again.
    pub fn serve(tether: &Path, dir: &Path, admin_token: &str, cpus: Option<&str>) -> anyhow::Result<Appliance> {
        let (data, key_file) = (dir.join("data"), dir.join("unseal.key"));
        let vault = has_vault(tether)?;
        let ca_pem = std::fs::read_to_string(data.join("ca.pem"))?;
        let mut serve = match cpus {
            Some(cpus) => {
                let mut pinned = Command::new("taskset");
                pinned.args(["-c", cpus]).arg(tether);
                pinned
            }
            None => Command::new(tether),
        };
        serve
            .args(["serve", "--json", "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("TETHER_MAX_CONNECTIONS", "16384")
            .stdout(Stdio::piped());
        if vault {
            serve.env("TETHER_UNSEAL_KEY_FILE", &key_file);
        }
        let mut child = serve.spawn()?;
        let stdout = child.stdout.take().context("serve stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ready: Value = serde_json::from_str(&line).context("serve did not print its ready line")?;
        let addr = |k: &str| ready[k].as_str().map(|a| format!("https://{a}")).context("ready line");
        Ok(Appliance {
            console: addr("listen")?,
            gateway: addr("worker_listen")?,
            admin_token: admin_token.to_owned(),
            ca_pem,
            data,
            child: Reaped(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the appliance process, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
    }

    /// CPU time the appliance process has used (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds_of(self.pid())
    }

    /// A client with its own connection pool.
    pub fn api(&self) -> anyhow::Result<Api> {
        Api::at(&self.console, &self.ca_pem, &self.admin_token)
    }

    /// Enrolls a worker the way `tether worker` does and returns its mTLS client.
    pub async fn enroll_worker(&self, api: &Api) -> anyhow::Result<BrokerClient> {
        let who = enroll_identity(&self.gateway, &self.ca_pem, api).await?;
        Ok(BrokerClient::mtls(&self.gateway, &self.ca_pem, &who.cert_pem, &who.key_pem)?)
    }
}

/// An enrolled worker's certificate and key.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Enrolls a worker at `gateway` the way `tether worker` does (own key, CSR).
pub async fn enroll_identity(gateway: &str, ca_pem: &str, api: &Api) -> anyhow::Result<Identity> {
    let token = api.post("/api/v1/workers/enrollment-tokens", &json!({})).await?;
    let token = token["token"].as_str().context("enrollment token")?;
    let (key_pem, csr) = tether_domain::pki::new_worker_key_and_csr()?;
    let enrolled = BrokerClient::enroll(gateway, tether_base::tls::Trust::Ca(ca_pem), token, &csr, &[])
        .await
        .map_err(|e| anyhow::anyhow!("enroll: {e}"))?;
    Ok(Identity { cert_pem: enrolled.cert_pem, key_pem })
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A client with its own connection pool for the API at `base`.
    pub fn at(base: &str, ca_pem: &str, token: &str) -> anyhow::Result<Api> {
        let config = tether_base::tls::client(ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN)?;
        Ok(Api {
            http: tether_base::tls::https_client(config, Duration::from_secs(60))?,
            base: base.to_owned(),
            token: token.to_owned(),
        })
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.http.request(method, url).bearer_auth(&self.token).json(body).send().await?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {v}");
        }
        Ok(v)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        Ok(resp.json().await?)
    }

    /// Opens the event stream at `path` and reads it until `count` events
    /// of `kind` have come whole; answers how long the first took.
    pub async fn read_events(&self, path: &str, kind: &str, count: usize) -> anyhow::Result<Duration> {
        let start = std::time::Instant::now();
        let mut resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{path}: HTTP {}", resp.status());
        let (marker, mut text, mut seen, mut first) = (format!("event: {kind}\n"), String::new(), 0, None);
        while seen < count {
            let chunk = resp.chunk().await?.with_context(|| format!("{path} ended after {seen} {kind} events"))?;
            text.push_str(&String::from_utf8_lossy(&chunk));
            // An event is whole at its blank line.
            while let Some(end) = text.find("\n\n") {
                if text[..end + 1].contains(&marker) {
                    seen += 1;
                    first.get_or_insert_with(|| start.elapsed());
                }
                text.drain(..end + 2);
            }
        }
        Ok(first.unwrap_or_default())
    }

    pub async fn parked_polls(&self) -> anyhow::Result<u64> {
        self.get("/api/v1/system/status").await?["parked_polls"].as_u64().context("parked_polls")
    }
}
