//! Starting an appliance in process, and calling its console router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

use tether_api::app::{App, AppHandle, Listeners, init};
use tether_api::config::{CONFIG_FILE, Config, RawConfig};
use tether_base::clock::{SharedClock, SystemClock};
use tether_base::crypto::CryptoPolicy;
use tether_domain::firmware::upload::OnTheImage;
use tether_domain::vault::Choice;

/// A running appliance, the sender that stops it, and the first
/// administrator's API token.
pub struct Started {
    pub app: AppHandle,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub admin_token: String,
}

impl Started {
    /// Stops the appliance as a signal would, and waits until it has stopped.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.app.wait().await.unwrap();
    }
}

/// An appliance on a fresh data directory under `dir`, unsealed from its key
/// file, on the system clock.
pub async fn start(dir: &tempfile::TempDir) -> Started {
    start_with(dir, Arc::new(SystemClock), |_| {}).await
}

/// As [`start`], on `clock`, with `settings` applied to the configuration
/// `init` wrote.
pub async fn start_with(dir: &tempfile::TempDir, clock: SharedClock, settings: impl FnOnce(&mut RawConfig)) -> Started {
    start_configured(dir, clock, settings, |_| {}).await
}

/// As [`start`], as `tether serve` starts on a machine running the
/// firmware image.
pub async fn start_on_the_image(dir: &tempfile::TempDir, image: OnTheImage) -> Started {
    start_configured(dir, Arc::new(SystemClock), no_second_factor, |config| config.firmware = Some(image)).await
}

async fn start_configured(
    dir: &tempfile::TempDir,
    clock: SharedClock,
    settings: impl FnOnce(&mut RawConfig),
    adjust: impl FnOnce(&mut Config),
) -> Started {
    let data = dir.path().join("data");
    let key_file = dir.path().join("unseal.key");
    let (d, k) = (data.clone(), key_file.clone());
    // It waits on the store's writer: off the runtime, as `serve --dev` calls it.
    let outcome = tokio::task::spawn_blocking(move || {
        init::initialise(&d, &[], CryptoPolicy::STANDARD, Choice::KeyFile, Some(&k))
    })
    .await
    .unwrap()
    .unwrap();
    let app = serve(dir, clock, settings, adjust).await;
    Started { app: app.app, stop: app.stop, admin_token: outcome.admin_token }
}

/// Serves the data directory [`start_with`] made under `dir` again (a
/// restart); the admin token is the caller's to keep.
pub async fn restart(dir: &tempfile::TempDir, clock: SharedClock, settings: impl FnOnce(&mut RawConfig)) -> Started {
    serve(dir, clock, settings, |_| {}).await
}

async fn serve(
    dir: &tempfile::TempDir,
    clock: SharedClock,
    settings: impl FnOnce(&mut RawConfig),
    adjust: impl FnOnce(&mut Config),
) -> Started {
    let (data, key_file) = (dir.path().join("data"), dir.path().join("unseal.key"));
    let mut raw = RawConfig::from_file(&data.join(CONFIG_FILE), false).unwrap();
    raw.unseal_key_file = Some(key_file.display().to_string());
    settings(&mut raw);
    let mut config = raw.validate(data).unwrap();
    adjust(&mut config);
    let config = Arc::new(config);
    let listeners = Listeners {
        console: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        workers: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let app = App::start_with_clock(config, listeners, shutdown, clock).await.unwrap();
    Started { app, stop, admin_token: String::new() }
}

/// `/healthz` over real TLS.
pub async fn health(app: &AppHandle) -> Value {
    let ca = std::fs::read_to_string(&app.ready().ca_file).unwrap();
    let config = tether_base::tls::client(&ca, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap();
    let client = tether_base::tls::https_client(config, Duration::from_secs(10)).unwrap();
    let url = format!("https://{}/healthz", app.ready().console);
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// How a request proves who sends it.
#[derive(Debug, Clone, Copy)]
pub enum As<'a> {
    Anyone,
    Token(&'a str),
    /// A console session: its cookie and CSRF token.
    Session(&'a str, &'a str),
}

/// What came back: status, JSON body (a string if it was not JSON, null if
/// empty) and headers.
pub type Answer = (u16, Value, HeaderMap);

/// The address every in-process request comes from.
pub const CLIENT: &str = "127.0.0.1:50000";

/// One request through `router` in process (no TCP, no TLS), as if from
/// [`CLIENT`].
pub async fn send(router: &axum::Router, who: As<'_>, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    send_bytes(router, who, method, path, body).await
}

/// As [`send`], with a body of its content type (and its Content-Length).
pub async fn send_bytes(
    router: &axum::Router,
    who: As<'_>,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let response = router.clone().oneshot(request(who, method, path, body)).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // An event stream never ends: its headers are the answer.
    if headers.get("content-type").is_some_and(|t| t == "text/event-stream") {
        return (status, Value::Null, headers);
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        if bytes.is_empty() { Value::Null } else { Value::String(String::from_utf8_lossy(&bytes).into()) }
    });
    (status, body, headers)
}

/// One event of a stream: its kind, its data, its id.
pub type StreamEvent = (String, Value, Option<String>);

/// Reads the event stream at `path` (resuming after event id `resume`, as
/// a reconnecting browser does) until `enough` says it has what it wants,
/// or 20 seconds pass; answers the events read and whether the stream
/// ended by itself.
pub async fn follow(
    router: &axum::Router,
    who: As<'_>,
    path: &str,
    resume: Option<u64>,
    mut enough: impl FnMut(&[StreamEvent]) -> bool,
) -> (Vec<StreamEvent>, bool) {
    use futures_util::StreamExt;
    let mut request = request(who, "GET", path, None);
    if let Some(id) = resume {
        request.headers_mut().insert("last-event-id", id.into());
    }
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream", "{path}");
    let mut body = response.into_body().into_data_stream();
    let (mut events, mut text) = (Vec::new(), String::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !enough(&events) {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => chunk.unwrap(),
            Ok(None) => return (events, true),
            Err(_) => panic!("{path}: not enough events in 20 s: {events:?}"),
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            if let (Some(kind), Some(data)) = (field("event: "), field("data: ")) {
                events.push((kind, serde_json::from_str(&data).unwrap(), field("id: ")));
            }
        }
    }
    (events, false)
}

fn request(
    who: As<'_>,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> axum::http::Request<axum::body::Body> {
    let mut request = axum::http::Request::builder().method(method).uri(path);
    match who {
        As::Anyone => {}
        As::Token(token) => request = request.header("authorization", format!("Bearer {token}")),
        As::Session(cookie, csrf) => request = request.header("cookie", cookie).header("x-csrf-token", csrf),
    }
    if let Some((content_type, bytes)) = &body {
        request = request.header("content-type", *content_type).header("content-length", bytes.len());
    }
    let remote: SocketAddr = CLIENT.parse().unwrap();
    request = request.extension(tether_api::ConnInfo { remote, peer: None });
    let body = body.map_or_else(axum::body::Body::empty, |(_, bytes)| axum::body::Body::from(bytes));
    request.body(body).unwrap()
}

/// As [`send`], with a bearer token, answering status and body.
pub async fn call(router: &axum::Router, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body, _) = send(router, As::Token(token), method, path, body.as_ref()).await;
    (status, body)
}

/// A console session: the cookie and the CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    pub fn who(&self) -> As<'_> {
        As::Session(&self.cookie, &self.csrf)
    }
}

/// A login attempt's answer.
pub async fn try_login(router: &axum::Router, name: &str, password: &str) -> Answer {
    let body = json!({"username": name, "password": password});
    send(router, As::Anyone, "POST", "/api/v1/auth/login", Some(&body)).await
}

/// Logs in; panics unless the login succeeds.
pub async fn login(router: &axum::Router, name: &str, password: &str) -> Session {
    let (status, v, headers) = try_login(router, name, password).await;
    assert_eq!(status, 200, "login as {name}: {v}");
    let cookie = headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    Session { cookie, csrf: v["csrf_token"].as_str().unwrap().to_owned() }
}

/// Adds `name` with `role` and signs them in with their own password.
pub async fn person(router: &axum::Router, admin: &str, name: &str, role: &str) -> (String, Session) {
    let initial = format!("first-{name}-password");
    let body = json!({"name": name, "role": role, "password": initial});
    assert_eq!(call(router, admin, "POST", "/api/v1/users", Some(body)).await.0, 201);
    let first = login(router, name, &initial).await;
    let password = format!("{name}-own-password-2026");
    let change = json!({"current": initial, "new": password});
    let (status, v, _) = send(router, first.who(), "POST", "/api/v1/auth/password", Some(&change)).await;
    assert_eq!(status, 204, "{v}");
    (password, first)
}

/// No second factor here: the rules under test are about time.
pub fn no_second_factor(raw: &mut RawConfig) {
    raw.mfa_required_roles = Some(String::new());
}
