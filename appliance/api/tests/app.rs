//! The composition root, started in process on loopback port 0 from a data
//! directory made the way `tether init` makes one: real store, real TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use tether_api::app::{App, AppHandle, Listeners, init};
use tether_api::config::{CONFIG_FILE, RawConfig};
use tether_base::crypto::CryptoPolicy;
use tether_domain::vault::Choice;

/// An appliance on a fresh data directory, unsealed from its key file, and
/// the sender that stops it.
async fn start(dir: &tempfile::TempDir) -> (AppHandle, tokio::sync::oneshot::Sender<()>) {
    let data = dir.path().join("data");
    let key_file = dir.path().join("unseal.key");
    let (d, k) = (data.clone(), key_file.clone());
    // It waits on the store's writer: off the runtime, as `serve --dev` calls it.
    tokio::task::spawn_blocking(move || init::initialise(&d, &[], CryptoPolicy::STANDARD, Choice::KeyFile, Some(&k)))
        .await
        .unwrap()
        .unwrap();
    let mut raw = RawConfig::from_file(&data.join(CONFIG_FILE), false).unwrap();
    raw.unseal_key_file = Some(key_file.display().to_string());
    let config = Arc::new(raw.validate(data).unwrap());
    let listeners = Listeners {
        console: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        workers: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let app = App::start(config, listeners, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    (app, stop)
}

async fn health(app: &AppHandle) -> Value {
    let ca = std::fs::read_to_string(&app.ready().ca_file).unwrap();
    let config = tether_base::tls::client(&ca, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap();
    let client = tether_base::tls::https_client(config, Duration::from_secs(10)).unwrap();
    let url = format!("https://{}/healthz", app.ready().console);
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_background_task_that_stops_early_turns_health_to_degraded_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut app, stop) = start(&dir).await;
    let before = health(&app).await;
    assert_eq!(before["status"], "ok", "{before}");
    assert!(before.get("tasks_stopped").is_none(), "{before}");

    app.spawn("doomed", async {});
    let tasks = app.state().tasks.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.stopped_early().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the task's end is seen");
    let after = health(&app).await;
    assert_eq!(after["status"], "degraded", "{after}");
    assert_eq!(after["tasks_stopped"], serde_json::json!(["doomed"]));

    stop.send(()).unwrap();
    app.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_appliance_stops_in_order_and_seals_its_vault() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _stop) = start(&dir).await;
    let (store, vault) = (app.state().store.clone(), app.state().vault.clone());
    assert!(!vault.is_sealed());
    app.shutdown().await.unwrap();
    assert!(vault.is_sealed(), "the vault is sealed on the way out");
    assert!(store.read(|tx| Ok(tether_domain::audit::verify(tx))).unwrap().is_ok());
}
