//! The machine's network and time settings in the console, in process: on
//! the firmware image an admin's change is checked (a refusal says what
//! is wrong and keeps nothing), audited and kept in the data directory,
//! where the root unit applies it; leaving a setting out restores the
//! image's default. A tether that does not run from the image changes
//! nothing of its host's.

use serde_json::{Value, json};

use crate::support::{call, start, start_on_the_image};
use tether_domain::firmware::site::{CHANGED_FILE, SITE_FILE, Site};
use tether_domain::firmware::upload::OnTheImage;

const SITE: &str = "/api/v1/system/site";

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_sets_a_static_address_and_time_servers_which_are_checked_audited_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let key = tether_base::crypto::p256::PrivateKey::generate().unwrap();
    let (_, running) = crate::firmware::bundle(dir.path(), "0.1.1", &key, true);
    let image = OnTheImage { trusted: vec![key.public()], running };
    let started = start_on_the_image(&dir, image).await;
    let router = tether_api::console_router(started.app.state().clone());
    let token = &started.admin_token;
    let data = dir.path().join("data");

    let (status, v) = call(&router, token, "GET", SITE, None).await;
    assert_eq!((status, &v["on_the_image"]), (200, &Value::Bool(true)), "{v}");
    assert!(v.get("network").is_none() && v.get("hostname").is_none(), "the image's defaults: {v}");

    for (body, says) in [
        (json!({"hostname": "not_a_name"}), "not a host name"),
        (json!({"network": {"address": "10.0.2.15"}}), "prefix length"),
        (json!({"ntp": ["ntp.site.example\nFallbackNTP=pool.ntp.org"]}), "not a host name"),
    ] {
        let (status, v) = call(&router, token, "PUT", SITE, Some(body.clone())).await;
        assert_eq!((status, v["code"].as_str()), (422, Some("site_invalid")), "{body}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert!(!data.join(SITE_FILE).exists() && !data.join(CHANGED_FILE).exists(), "a refusal keeps nothing");

    let wanted = json!({"hostname": "tether-01", "ntp": ["10.0.2.2"],
        "network": {"address": "10.0.2.15/24", "gateway": "10.0.2.2", "dns": ["10.0.2.3"]}});
    let (status, v) = call(&router, token, "PUT", SITE, Some(wanted.clone())).await;
    assert_eq!(status, 200, "{v}");
    let kept = Site::read(&data).unwrap();
    assert_eq!(serde_json::to_value(&kept).unwrap(), wanted, "kept for the root unit");
    assert!(data.join(CHANGED_FILE).exists(), "and handed over to it");
    let (_, v) = call(&router, token, "GET", SITE, None).await;
    assert_eq!(v["network"]["address"], "10.0.2.15/24", "{v}");
    let (_, log) = call(&router, token, "GET", "/api/v1/audit/records?action=system.site_changed", None).await;
    let details = &log["records"][0]["metadata"]["details"];
    assert_eq!(
        (details["hostname"].as_str(), details["network"].as_str(), details["ntp"].as_str()),
        (Some("tether-01"), Some("static 10.0.2.15/24"), Some("10.0.2.2")),
        "{log}"
    );

    // Left out: DHCP again, no time servers.
    let (status, _) = call(&router, token, "PUT", SITE, Some(json!({"hostname": "tether-01"}))).await;
    assert_eq!(status, 200);
    let kept = Site::read(&data).unwrap();
    assert_eq!((kept.network, kept.ntp.len()), (None, 0));
    started.stop().await;

    let host = tempfile::tempdir().unwrap();
    let started = start(&host).await;
    let router = tether_api::console_router(started.app.state().clone());
    let (status, v) = call(&router, &started.admin_token, "PUT", SITE, Some(json!({"hostname": "x"}))).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("not_the_image")), "{v}");
    let (status, v) = call(&router, &started.admin_token, "GET", SITE, None).await;
    assert_eq!((status, &v["on_the_image"]), (200, &Value::Bool(false)), "{v}");
    assert!(!host.path().join("data").join(SITE_FILE).exists());
    started.stop().await;
}
