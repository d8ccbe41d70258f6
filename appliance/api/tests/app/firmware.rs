//! The console's firmware upload, in process, with real signed release
//! bundles: refused unless it is checked as `tether update apply` checks
//! it (signature, digests, the firmware image in it, no downgrade), each
//! refusal in the audit log; accepted, it is handed over byte for byte to
//! the root unit's path and audited, and the next upload waits for it. A
//! tether that does not run from the image has no uploads.

use std::path::Path;

use serde_json::Value;

use crate::support::{As, call, send_bytes, start, start_on_the_image};
use tether_base::crypto::p256::PrivateKey;
use tether_domain::firmware::upload::{HANDOFF, OnTheImage, UPLOAD_DIR};
use tether_domain::release::{self, About, Manifest, SYSTEMD_FILES};

const UPLOAD: &str = "/api/v1/system/firmware/update";

/// A release bundle of `version`, signed with `key`; `firmware`: with the image's files.
pub(crate) fn bundle(dir: &Path, version: &str, key: &PrivateKey, firmware: bool) -> (Vec<u8>, Manifest) {
    let tree = dir.join(format!("tree-{version}-{firmware}"));
    let mut files: Vec<&str> = vec!["tether"];
    files.extend(SYSTEMD_FILES);
    if firmware {
        files.extend(tether_domain::firmware::FILES);
    }
    for file in files {
        let path = tree.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{file} of {version}")).unwrap();
    }
    let about = About {
        version: version.parse().unwrap(),
        min_version: "0.0.1".parse().unwrap(),
        commit: format!("{:0>40}", version.replace('.', "")),
        built: "2026-12-07T00:00:00Z".into(),
    };
    let out = dir.join(format!("{version}-{firmware}.bundle"));
    let manifest = release::pack(&tree, about, key, &out, &mut |_| {}).unwrap();
    (std::fs::read(&out).unwrap(), manifest)
}

fn octets(bytes: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/octet-stream", bytes.to_vec()))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_update_is_checked_as_apply_checks_it_then_handed_over_to_the_root_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (release_key, other_key) = (PrivateKey::generate().unwrap(), PrivateKey::generate().unwrap());
    let (_, running) = bundle(dir.path(), "0.1.1", &release_key, true);
    let (good, _) = bundle(dir.path(), "0.1.2", &release_key, true);
    let (foreign, _) = bundle(dir.path(), "0.1.2", &other_key, true);
    let (older, _) = bundle(dir.path(), "0.1.0", &release_key, true);
    let (for_hosts, _) = bundle(dir.path(), "0.1.3", &release_key, false);
    // One byte of the root image changed (its content is "firmware/root.img of 0.1.2").
    let mut tampered = good.clone();
    let content = b"root.img of 0.1.2";
    let at = good.windows(content.len()).position(|w| w == content).expect("the root image's content");
    tampered[at] ^= 1;

    let image = OnTheImage { trusted: vec![release_key.public()], running };
    let started = start_on_the_image(&dir, image).await;
    let router = tether_api::console_router(started.app.state().clone());
    let admin = As::Token(&started.admin_token);
    let refused = |answer: &(u16, Value, _), says: &str| {
        let (status, v, _) = answer;
        assert_eq!((*status, v["code"].as_str()), (422, Some("bundle_refused")), "{v}");
        assert!(v["detail"].as_str().unwrap().contains(says), "{says}: {v}");
    };
    refused(&send_bytes(&router, admin, "POST", UPLOAD, octets(&foreign)).await, "is signed by key");
    refused(&send_bytes(&router, admin, "POST", UPLOAD, octets(&tampered)).await, "tampered");
    refused(&send_bytes(&router, admin, "POST", UPLOAD, octets(&older)).await, "0.1.0");
    refused(&send_bytes(&router, admin, "POST", UPLOAD, octets(&for_hosts)).await, "without the firmware image");
    let upload_dir = dir.path().join("data").join(UPLOAD_DIR);
    assert!(!upload_dir.join(HANDOFF).exists(), "nothing handed over");
    let (status, log) =
        call(&router, &started.admin_token, "GET", "/api/v1/audit/records?action=firmware.", None).await;
    assert_eq!(status, 200, "{log}");
    let records = log["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "{log}");
    assert!(records.iter().all(|r| r["event_type"] == "firmware.update_refused" && r["result"] == "denied"), "{log}");

    let (status, v, _) = send_bytes(&router, admin, "POST", UPLOAD, octets(&good)).await;
    assert_eq!(
        (status, v["update"]["state"].as_str(), v["update"]["version"].as_str()),
        (202, Some("handed over"), Some("0.1.2")),
        "{v}"
    );
    assert_eq!(
        (&v["on_the_image"], v["version"].as_str()),
        (&Value::Bool(true), Some("0.1.1")),
        "0.1.1 runs until the restart: {v}"
    );
    assert!(std::fs::read(upload_dir.join(HANDOFF)).unwrap() == good, "handed over byte for byte");
    let (status, v) = call(&router, &started.admin_token, "GET", "/api/v1/system/firmware", None).await;
    assert_eq!((status, v["update"]["state"].as_str()), (200, Some("handed over")), "{v}");
    let (status, log) =
        call(&router, &started.admin_token, "GET", "/api/v1/audit/records?action=firmware.update_up", None).await;
    let uploaded = &log["records"][0]["metadata"]["details"];
    assert_eq!(
        (status, uploaded["from"].as_str(), uploaded["to"].as_str()),
        (200, Some("0.1.1"), Some("0.1.2")),
        "{log}"
    );

    // One update at a time; a body must say how long it is.
    let (status, v, _) = send_bytes(&router, admin, "POST", UPLOAD, octets(&good)).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("update_in_progress")), "{v}");
    let (status, v, _) = crate::support::send(&router, admin, "POST", UPLOAD, None).await;
    assert_eq!((status, v["code"].as_str()), (411, Some("length_required")), "{v}");
    started.stop().await;

    // A tether that does not run from the image.
    let host = tempfile::tempdir().unwrap();
    let started = start(&host).await;
    let router = tether_api::console_router(started.app.state().clone());
    let (status, v, _) = send_bytes(&router, As::Token(&started.admin_token), "POST", UPLOAD, octets(&good)).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("not_the_image")), "{v}");
    let (status, v) = call(&router, &started.admin_token, "GET", "/api/v1/system/firmware", None).await;
    assert_eq!((status, &v["on_the_image"], &v["version"]), (200, &Value::Bool(false), &Value::Null), "{v}");
    started.stop().await;
}
