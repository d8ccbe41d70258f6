//! The clients a test talks to the appliance through: the API with a token,
//! a console session (cookie and CSRF token), a person's account, and a
//! worker driven by hand.

use std::time::Duration;

use serde_json::{Value, json};

use super::Appliance;

/// A console session, as a browser holds it: the cookie and the CSRF token.
#[derive(Clone)]
pub struct Console {
    pub api: Api,
    pub cookie: String,
    pub csrf: String,
    /// The whole `Set-Cookie` header the login answered with.
    pub set_cookie: String,
}

impl Console {
    /// Logs in; panics unless the login succeeds.
    pub async fn login(api: &Api, name: &str, password: &str, totp: Option<&str>) -> Console {
        let (status, body, headers) = Console::try_login(api, name, password, totp).await;
        assert_eq!(status, 200, "login as {name}: {body}");
        let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        Console { api: api.with_token(None), cookie, csrf: body["csrf_token"].as_str().unwrap().to_owned(), set_cookie }
    }

    pub async fn try_login(
        api: &Api,
        name: &str,
        password: &str,
        totp: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut body = json!({"username": name, "password": password});
        if let Some(code) = totp {
            body["totp"] = json!(code);
        }
        api.with_token(None).send(reqwest::Method::POST, "/api/v1/auth/login", Some(&body), &[]).await
    }

    /// A request with the session cookie and its CSRF token.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (s, v, _) =
            self.api.send(method, path, body, &[("cookie", &self.cookie), ("x-csrf-token", &self.csrf)]).await;
        (s, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
}

/// A person with an account, set up and logged in.
pub struct Person {
    pub password: String,
    /// The TOTP secret (base32), for roles that need a second factor.
    pub totp: Option<String>,
    pub(super) last_step: std::cell::Cell<u64>,
    pub console: Console,
    pub recovery_codes: Vec<String>,
}

impl Person {
    /// A TOTP code not used before. Codes work once per 30 s step and the
    /// appliance accepts the next step's too, so two codes are at hand in
    /// any step; a test that needs a third before the step turns uses a
    /// recovery code instead (nothing here waits for the clock).
    pub fn next_code(&self) -> Option<String> {
        let secret = self.totp.as_ref()?;
        let bytes = data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).unwrap();
        let secret = tether_domain::auth::totp::TotpSecret::from_bytes(bytes);
        let current = tether_base::clock::Clock::now(&tether_base::clock::SystemClock).as_millis() / STEP_MS;
        let use_step = current.max(self.last_step.get() + 1);
        assert!(use_step <= current + 1, "a third TOTP code in one step: log in with a recovery code instead");
        self.last_step.set(use_step);
        let at = tether_base::clock::Timestamp::from_millis(use_step * STEP_MS);
        Some(tether_domain::auth::totp::code(&secret, at))
    }
}

/// The TOTP code for `secret` (base32) now.
pub fn totp_now(secret: &str) -> String {
    let bytes = data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).unwrap();
    let now = tether_base::clock::Clock::now(&tether_base::clock::SystemClock);
    tether_domain::auth::totp::code(&tether_domain::auth::totp::TotpSecret::from_bytes(bytes), now)
}

/// A TOTP step, in milliseconds.
const STEP_MS: u64 = 30_000;

/// A bearer-token client for the console API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, ca_pem: &str, token: &str) -> Api {
        let config = tether_base::tls::client(ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap();
        let http = tether_base::tls::https_client(config, Duration::from_secs(90)).unwrap();
        Api { http, base: base.to_owned(), token: Some(token.to_owned()) }
    }

    /// Tokenless, over a client made elsewhere (another trust).
    pub fn from_client(http: reqwest::Client, base: &str) -> Api {
        Api { http, base: base.to_owned(), token: None }
    }

    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api { token: token.map(str::to_owned), ..self.clone() }
    }

    /// Like [`Api::get`], but a transport failure is an `Err`, not a panic.
    pub async fn try_get(&self, path: &str) -> Result<(u16, Value), reqwest::Error> {
        self.try_send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// Like [`Api::post`], but a transport failure is an `Err`, not a panic.
    pub async fn try_post(&self, path: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        self.try_send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    async fn try_send(&self, mut req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }

    /// Sends raw bytes; returns status, content type and the parsed body.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> (u16, String, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let text = resp.text().await.unwrap();
        (status, ct, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Every audit record, oldest first, through `GET /api/v1/audit/export`.
    pub async fn audit_log(&self) -> Vec<Value> {
        let (status, log) = self.get("/api/v1/audit/export").await;
        assert_eq!(status, 200, "{log}");
        log.as_str().unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.send(reqwest::Method::GET, path, None, &[]).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, v, _) = self.send(reqwest::Method::POST, path, Some(body), &[]).await;
        (s, v)
    }

    pub async fn submit(&self, kind: &str, input: Value, labels: &[&str]) -> String {
        let (s, v) = self.post("/api/v1/tasks", &json!({"kind": kind, "input": input, "labels": labels})).await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// The task once finished (waits up to `secs`).
    pub async fn wait(&self, id: &str, secs: u64) -> Value {
        let (s, v) = self.get(&format!("/api/v1/tasks/{id}?wait={secs}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

/// A worker driven by the test itself through the library's client, for
/// cases a well-behaved agent never produces (stale reports).
pub async fn manual_worker(a: &Appliance) -> tether::worker::client::BrokerClient {
    use tether::worker::client::BrokerClient;
    let token = a.enrollment_token(None).await;
    let (key, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let enrolled = BrokerClient::enroll(&a.worker_gateway, tether_base::tls::Trust::Ca(&a.ca_pem), &token, &csr, &[])
        .await
        .unwrap();
    BrokerClient::mtls(&a.worker_gateway, &a.ca_pem, &enrolled.cert_pem, &key).unwrap()
}
