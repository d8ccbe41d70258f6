//! The rules about time, on a manual clock: sessions that idle out or grow
//! too old, the re-authentication window, token expiry, and the login
//! throttle's schedule and lockout. Time is moved, never waited for.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    As, CLIENT, Session, Started, call, login, no_second_factor, person, restart, send, start_with, try_login,
};
use tether_api::config::RawConfig;
use tether_base::clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};

/// An appliance on a manual clock that starts at the real time (so the
/// certificates `init` made are valid), and its console router.
async fn on_manual_clock(
    dir: &tempfile::TempDir,
    settings: impl FnOnce(&mut RawConfig),
) -> (Started, axum::Router, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(SystemClock.now()));
    let shared: SharedClock = clock.clone();
    let started = start_with(dir, shared, settings).await;
    let router = tether_api::console_router(started.app.state().clone());
    (started, router, clock)
}

/// 30 minutes idle, 8 hours in all, 5 minutes fresh; no second factor.
fn session_lifetimes(raw: &mut RawConfig) {
    no_second_factor(raw);
    raw.session_idle = Some("30m".into());
    raw.session_absolute = Some("8h".into());
    raw.reauth_window = Some("5m".into());
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_end_when_idle_or_too_old_and_sensitive_actions_need_a_fresh_login() {
    let dir = tempfile::tempdir().unwrap();
    let (started, router, clock) = on_manual_clock(&dir, session_lifetimes).await;
    let admin = started.admin_token.clone();
    let (password, _) = person(&router, &admin, "adam", "admin").await;
    let get_tasks = |s: &Session| {
        let (router, who) = (router.clone(), (s.cookie.clone(), s.csrf.clone()));
        async move { send(&router, As::Session(&who.0, &who.1), "GET", "/api/v1/tasks", None).await.0 }
    };

    // Idle: a session left alone for the idle time is gone.
    let idle = login(&router, "adam", &password).await;
    assert_eq!(get_tasks(&idle).await, 200);
    clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(get_tasks(&idle).await, 200, "29 minutes idle: still there");
    clock.advance(Duration::from_secs(30 * 60 + 1));
    assert_eq!(get_tasks(&idle).await, 401, "30 minutes idle: gone");

    // Absolute: a session in steady use still ends 8 h after login.
    let busy = login(&router, "adam", &password).await;
    for _ in 0..16 {
        clock.advance(Duration::from_secs(29 * 60));
        assert_eq!(get_tasks(&busy).await, 200, "in use, under 8 h old");
    }
    clock.advance(Duration::from_secs(16 * 60 + 1));
    assert_eq!(get_tasks(&busy).await, 401, "8 h after login, however busy");

    // Freshness: a sensitive action (a role change) needs a login within
    // the re-authentication window; re-authenticating opens it again.
    let console = login(&router, "adam", &password).await;
    let vic = json!({"name": "vic", "role": "viewer", "password": "first-vic-password"});
    assert_eq!(call(&router, &admin, "POST", "/api/v1/users", Some(vic)).await.0, 201);
    let role = |r: &str| json!({"role": r});
    let path = "/api/v1/users/vic/role";
    let (s, v, _) = send(&router, console.who(), "PUT", path, Some(&role("auditor"))).await;
    assert_eq!(s, 200, "fresh after login: {v}");
    clock.advance(Duration::from_secs(4 * 60));
    assert_eq!(get_tasks(&console).await, 200);
    clock.advance(Duration::from_secs(61));
    let (s, v, _) = send(&router, console.who(), "PUT", path, Some(&role("viewer"))).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("reauthentication_required")), "{v}");
    let reauth = json!({"password": password});
    assert_eq!(send(&router, console.who(), "POST", "/api/v1/auth/reauth", Some(&reauth)).await.0, 204);
    let (s, v, _) = send(&router, console.who(), "PUT", path, Some(&role("viewer"))).await;
    assert_eq!(s, 200, "{v}");
    started.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_says_when_it_ends_and_minting_a_token_needs_a_fresh_login() {
    let dir = tempfile::tempdir().unwrap();
    let (started, router, clock) = on_manual_clock(&dir, session_lifetimes).await;
    let (password, _) = person(&router, &started.admin_token, "adam", "admin").await;
    let signed_in_at = clock.now();
    let console = login(&router, "adam", &password).await;
    let (status, view, _) = send(&router, console.who(), "GET", "/api/v1/auth/session", None).await;
    assert_eq!(status, 200, "{view}");
    let at = |field: &str| Timestamp::parse_rfc3339(view[field].as_str().unwrap()).unwrap();
    assert_eq!(at("expires_at"), signed_in_at.plus(Duration::from_secs(8 * 3600)));
    assert_eq!(at("reauth_until"), signed_in_at.plus(Duration::from_secs(5 * 60)));
    assert_eq!((view["idle_timeout_s"].as_u64(), view["idle_slack_s"].as_u64()), (Some(1800), Some(60)));
    let sensitive: Vec<&str> = view["sensitive"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert!(sensitive.contains(&"token_manage") && sensitive.contains(&"vault_manage"), "{sensitive:?}");
    assert!(!sensitive.contains(&"task_read"), "{sensitive:?}");

    let mint = json!({"role": "viewer"});
    let (s, first, _) = send(&router, console.who(), "POST", "/api/v1/tokens", Some(&mint)).await;
    assert_eq!(s, 201, "fresh after login: {first}");
    clock.advance(Duration::from_secs(6 * 60));
    let (s, v, _) = send(&router, console.who(), "POST", "/api/v1/tokens", Some(&mint)).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("reauthentication_required")), "{v}");
    let revoke = format!("/api/v1/tokens/{}", first["id"].as_str().unwrap());
    let (s, v, _) = send(&router, console.who(), "DELETE", &revoke, None).await;
    assert_eq!(s, 204, "revoking takes no fresh login: {v}");
    let reauth = json!({"password": password});
    assert_eq!(send(&router, console.who(), "POST", "/api/v1/auth/reauth", Some(&reauth)).await.0, 204);
    assert_eq!(send(&router, console.who(), "POST", "/api/v1/tokens", Some(&mint)).await.0, 201);
    started.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_token_works_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (started, router, clock) = on_manual_clock(&dir, no_second_factor).await;
    let admin = started.admin_token.clone();
    let body = json!({"role": "viewer", "name": "ci-bot", "ttl": "1h"});
    let (s, v) = call(&router, &admin, "POST", "/api/v1/tokens", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    clock.advance(Duration::from_secs(3599));
    assert_eq!(call(&router, &token, "GET", "/api/v1/tasks", None).await.0, 200, "a second before it expires");
    clock.advance(Duration::from_secs(2));
    let (s, v) = call(&router, &token, "GET", "/api/v1/tasks", None).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthenticated")), "{v}");
    started.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_a_password_waits_out_a_doubling_schedule_then_is_locked_out_with_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (started, router, clock) = on_manual_clock(&dir, no_second_factor).await;
    let admin = started.admin_token.clone();
    let (password, _) = person(&router, &admin, "victor", "developer").await;
    let attempt = |password: &str| {
        let (router, password) = (router.clone(), password.to_owned());
        async move { try_login(&router, "victor", &password).await }
    };
    let retry_after =
        |headers: &axum::http::HeaderMap| -> u64 { headers["retry-after"].to_str().unwrap().parse().unwrap() };
    // Three free failures, then a doubling wait between tries.
    for _ in 0..3 {
        assert_eq!(attempt("wrong password 1").await.0, 401);
    }
    let mut waits = Vec::new();
    for _ in 0..100 {
        let (s, v, headers) = attempt("wrong password 2").await;
        if s == 401 {
            continue;
        }
        assert_eq!((s, v["code"].as_str()), (429, Some("login_throttled")), "{v}");
        let wait = retry_after(&headers);
        if wait > 60 {
            break; // locked out
        }
        waits.push(wait);
        clock.advance(Duration::from_secs(wait));
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30], "the documented schedule");
    // Locked: even the right password is refused, without being checked.
    let (s, v, headers) = attempt(&password).await;
    assert_eq!((s, v["code"].as_str()), (429, Some("login_throttled")), "{v}");
    let locked_for = retry_after(&headers);
    assert!(locked_for > 800, "locked for {locked_for} s");

    // Ten failures: one alert, listed and audited; the name appears only as
    // a keyed pseudonym.
    let (s, alerts) = call(&router, &admin, "GET", "/api/v1/alerts", None).await;
    assert_eq!(s, 200, "{alerts}");
    // (The machine's own disk may raise a disk_usage alert of its own: not this test's.)
    let alerts: Vec<&Value> = alerts.as_array().unwrap().iter().filter(|a| a["kind"] != "disk_usage").collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0]["kind"].as_str(), alerts[0]["subject"].as_str()),
        (Some("failed_logins"), CLIENT.split(':').next())
    );
    let (_, log) = call(&router, &admin, "GET", "/api/v1/audit/export", None).await;
    let records: Vec<Value> = log.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |kind: &str| records.iter().filter(|r| r["event_type"] == kind).count();
    let disk =
        records.iter().filter(|r| r["event_type"] == "alert.raised" && r["resource"]["id"] == "disk_usage").count();
    assert_eq!((count("alert.raised") - disk, count("auth.locked_out")), (1, 1));
    for r in records.iter().filter(|r| r["event_type"] == "auth.login_failed") {
        let id = r["resource"]["id"].as_str().unwrap();
        assert!(id.starts_with("hmac:") && !id.contains("victor"), "{r}");
    }

    // A restart forgives no one: the lockout was stored with the failure.
    // (The router holds the store open: it goes first.)
    drop(router);
    started.stop().await;
    let shared: SharedClock = clock.clone();
    let restarted = restart(&dir, shared, no_second_factor).await;
    let router = tether_api::console_router(restarted.app.state().clone());
    let (s, v, headers) = try_login(&router, "victor", &password).await;
    assert_eq!((s, v["code"].as_str()), (429, Some("login_throttled")), "still locked after a restart: {v}");
    assert_eq!(retry_after(&headers), locked_for, "the same lockout, not a new one");

    // The lockout ends when its time is up.
    clock.advance(Duration::from_secs(locked_for));
    assert_eq!(try_login(&router, "victor", &password).await.0, 200, "the right password works again");
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_newest_signed_checkpoint_downloads_as_a_file_the_audit_key_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (started, router, clock) = on_manual_clock(&dir, |raw| raw.audit_checkpoint_interval = Some("1m".into())).await;
    let admin = started.admin_token.clone();
    let (status, problem) = call(&router, &admin, "GET", "/api/v1/audit/checkpoint", None).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("no_checkpoint")), "none before the first: {problem}");
    assert!(problem["detail"].as_str().unwrap().contains("unsealed"), "{problem}");

    // News, then a checkpoint signs the head (the writer's schedule is
    // `checkpoints::due`'s unit test; here it is written at once).
    call(&router, &admin, "POST", "/api/v1/tasks", Some(json!({"kind": "echo", "input": {}}))).await;
    let state = started.app.state();
    tether_domain::evidence::checkpoints::write(&state.store, &state.vault, clock.now()).await.unwrap();
    let answer = send(&router, As::Token(&admin), "GET", "/api/v1/audit/checkpoint", None).await;
    let (status, body, headers) = answer;
    assert_eq!(status, 200, "{body}");
    let covers = body["covers_seq"].as_u64().unwrap();
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"tether-audit-checkpoint-{covers}.json\"").as_str()
    );
    let signed: tether_domain::evidence::checkpoints::Signed = serde_json::from_value(body).unwrap();
    let (_, pem) = call(&router, &admin, "GET", "/api/v1/audit/public-key", None).await;
    let key = tether_domain::evidence::signing::PublicKey::from_pem(pem.as_str().unwrap()).unwrap();
    assert!(signed.verifies(&key), "the audit key vouches for it");
    // The record it covers is the one the log holds.
    let (_, found) =
        call(&router, &admin, "GET", &format!("/api/v1/audit/records?before={}&limit=1", covers + 1), None).await;
    assert_eq!(found["records"][0]["seq"].as_u64(), Some(covers), "{found}");
    started.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spike_of_tasks_or_keys_over_the_baseline_raises_one_alert_each() {
    let dir = tempfile::tempdir().unwrap();
    let (started, router, clock) = on_manual_clock(&dir, no_second_factor).await;
    let admin = started.admin_token.clone();
    let monitor = started.app.state().monitor.clone();
    let make = |tasks: usize, tokens: usize| {
        let (router, admin) = (router.clone(), admin.clone());
        async move {
            for n in 0..tasks {
                let task = json!({"kind": "echo", "input": {"n": n}});
                assert_eq!(call(&router, &admin, "POST", "/api/v1/tasks", Some(task)).await.0, 201);
            }
            for n in 0..tokens {
                let token = json!({"role": "viewer", "name": format!("bot-{n}"), "ttl": "1h"});
                assert_eq!(call(&router, &admin, "POST", "/api/v1/tokens", Some(token)).await.0, 201);
            }
        }
    };
    // A minute ends when a look finds it over; the watches look by
    // themselves too, and a look waits for one under way.
    let minute = || async {
        clock.advance(Duration::from_secs(60));
        monitor.check().await.unwrap();
    };
    let volume_alerts = || async {
        let (_, alerts) = call(&router, &admin, "GET", "/api/v1/alerts", None).await;
        let mut kinds: Vec<String> = alerts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"].as_str().is_some_and(|k| k.ends_with("_volume")))
            .map(|a| format!("{} {}", a["kind"].as_str().unwrap(), a["details"]))
            .collect();
        kinds.sort();
        kinds
    };
    monitor.check().await.unwrap(); // the first minute starts
    // A baseline of ten steady minutes: two tasks and one token each.
    for _ in 0..10 {
        make(2, 1).await;
        minute().await;
    }
    assert_eq!(volume_alerts().await, Vec::<String>::new(), "steady volume is no anomaly");
    // A minute of 12 tasks and 9 tokens: one alert each.
    make(12, 9).await;
    minute().await;
    let raised = volume_alerts().await;
    assert_eq!(raised.len(), 2, "{raised:?}");
    assert!(raised[0].starts_with("key_volume") && raised[0].contains(r#""keys_last_minute":"9""#), "{raised:?}");
    assert!(raised[1].starts_with("task_volume") && raised[1].contains(r#""tasks_last_minute":"12""#), "{raised:?}");
    // The spike going on raises nothing more; back to normal re-arms.
    make(12, 9).await;
    minute().await;
    assert_eq!(volume_alerts().await.len(), 2, "one alert while it lasts");
    started.stop().await;
}
