//! What the console's live views and searches read: the event stream each
//! role gets its own part of and that ends with its session, the audit
//! search, and the list of sessions.

use std::sync::Arc;

use serde_json::json;

use crate::support::{As, follow, no_second_factor, person, send, start_with};
use tether_base::clock::SystemClock;

#[tokio::test(flavor = "multi_thread")]
async fn each_role_follows_only_what_it_may_read_and_a_stream_ends_with_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let started = start_with(&dir, Arc::new(SystemClock), no_second_factor).await;
    let router = tether_api::console_router(started.app.state().clone());
    let admin = started.admin_token.clone();
    let (_, adam) = person(&router, &admin, "adam", "admin").await;
    let (_, vera) = person(&router, &admin, "vera", "viewer").await;
    let (_, aude) = person(&router, &admin, "aude", "auditor").await;
    let task = json!({"kind": "echo", "input": {"n": 1}});
    for _ in 0..3 {
        assert_eq!(send(&router, adam.who(), "POST", "/api/v1/tasks", Some(&task)).await.0, 201);
    }

    // The admin: the overview now (three tasks ready), then the log's tail.
    let kinds = |events: &[crate::support::StreamEvent], kind: &str| events.iter().filter(|e| e.0 == kind).count();
    let (mut go, later) = submit_once_told(&router, &admin);
    let (events, _) = follow(&router, adam.who(), "/api/v1/events", None, |e| {
        go.tell_once(!e.is_empty());
        kinds(e, "overview") >= 1 && e.iter().any(|(k, d, _)| k == "audit" && d.to_string().contains("task.created"))
    })
    .await;
    assert_eq!(later.await.unwrap(), 201);
    let overview = &events.iter().find(|e| e.0 == "overview").unwrap().1;
    assert_eq!(overview["queue"]["ready"], 3, "{overview}");
    assert_eq!(overview["sealed"], false);
    assert!(overview["workers"]["enrolled"].is_u64());
    let (_, tail, id) = events.iter().find(|e| e.0 == "audit").unwrap();
    let newest = tail.as_array().unwrap().last().unwrap();
    assert_eq!(id.as_deref(), Some(newest["seq"].to_string().as_str()), "the id resumes the tail");
    assert!(tail.as_array().unwrap().iter().all(|r| r["event_type"] != "user.login"), "only records after the start");

    // A viewer reads workers, not the log; an auditor the log, not workers.
    let (events, _) = follow(&router, vera.who(), "/api/v1/events", None, |e| kinds(e, "overview") >= 2).await;
    assert_eq!(kinds(&events, "audit"), 0, "a viewer gets no audit records");
    // The auditor resumes after the last record she saw, as her browser
    // would on reconnecting, and gets what came since.
    let (_, head, _) = send(&router, aude.who(), "GET", "/api/v1/audit/records?limit=1", None).await;
    let seen = head["records"][0]["seq"].as_u64().unwrap();
    assert_eq!(send(&router, adam.who(), "POST", "/api/v1/tasks", Some(&task)).await.0, 201);
    let (events, _) = follow(&router, aude.who(), "/api/v1/events", Some(seen), |e| kinds(e, "audit") >= 1).await;
    let resumed = &events.iter().find(|e| e.0 == "audit").unwrap().1;
    assert_eq!(resumed[0]["seq"].as_u64(), Some(seen + 1), "{resumed}");
    assert_eq!(kinds(&events, "overview"), 0, "an auditor gets no overview");

    // Ending the viewer's sessions ends her stream within a tick.
    let router2 = router.clone();
    let (ended, admin2) = (tokio::sync::oneshot::channel::<()>(), admin.clone());
    let ender = tokio::spawn(async move {
        let _ = ended.1.await;
        send(&router2, As::Token(&admin2), "DELETE", "/api/v1/users/vera/sessions", None).await.0
    });
    let mut ended_tx = Some(ended.0);
    let (_, closed) = follow(&router, vera.who(), "/api/v1/events", None, |e| {
        if !e.is_empty()
            && let Some(tx) = ended_tx.take()
        {
            let _ = tx.send(());
        }
        false
    })
    .await;
    assert!(closed, "the stream ended with the session");
    assert_eq!(ender.await.unwrap(), 200);
    started.stop().await;
}

/// The signal for [`submit_once_told`].
struct Go(Option<tokio::sync::oneshot::Sender<()>>);

impl Go {
    fn tell_once(&mut self, now: bool) {
        if now && let Some(go) = self.0.take() {
            let _ = go.send(());
        }
    }
}

/// Submits a task when told: once a stream is under way, for its tail to show.
fn submit_once_told(router: &axum::Router, token: &str) -> (Go, tokio::task::JoinHandle<u16>) {
    let (router, token) = (router.clone(), token.to_owned());
    let (go, told) = tokio::sync::oneshot::channel();
    let done = tokio::spawn(async move {
        let _ = told.await;
        let task = json!({"kind": "late", "input": {}});
        send(&router, As::Token(&token), "POST", "/api/v1/tasks", Some(&task)).await.0
    });
    (Go(Some(go)), done)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_search_filters_and_pages_and_says_what_is_wrong_with_a_query() {
    let dir = tempfile::tempdir().unwrap();
    let started = start_with(&dir, Arc::new(SystemClock), no_second_factor).await;
    let router = tether_api::console_router(started.app.state().clone());
    let admin = started.admin_token.clone();
    let (_, adam) = person(&router, &admin, "adam", "admin").await;
    let bad = json!({"username": "adam", "password": "not-his-password"});
    assert_eq!(send(&router, As::Anyone, "POST", "/api/v1/auth/login", Some(&bad)).await.0, 401);

    let search = |query: &str| {
        let (router, who) = (router.clone(), (adam.cookie.clone(), adam.csrf.clone()));
        let path = format!("/api/v1/audit/records?{query}");
        async move { send(&router, As::Session(&who.0, &who.1), "GET", &path, None).await }
    };
    let (s, found, _) = search("action=auth.login&outcome=failure").await;
    assert_eq!(s, 200, "{found}");
    let records = found["records"].as_array().unwrap();
    assert!(!records.is_empty() && records.iter().all(|r| r["result"] == "failure"), "{found}");
    assert!(!found.to_string().contains("not-his-password"), "no secret in the log");

    let (_, page, _) = search("limit=2").await;
    let (first, next) = (page["records"][0]["seq"].as_u64().unwrap(), page["next_before"].as_u64().unwrap());
    assert!(first > next || page["records"][1]["seq"].as_u64() == Some(next), "{page}");
    let (_, older, _) = search(&format!("limit=2&before={next}")).await;
    assert!(older["records"][0]["seq"].as_u64().unwrap() < next, "{older}");

    let (s, v, _) = search("since=yesterday").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("RFC 3339"), "{v}");
    let (s, v, _) = search("outcome=maybe").await;
    assert_eq!(s, 400, "{v}");

    let (s, sessions, _) = send(&router, adam.who(), "GET", "/api/v1/sessions?user=adam", None).await;
    assert_eq!(s, 200, "{sessions}");
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "adam's one session: {sessions:?}");
    assert_eq!(sessions[0]["user"], "adam");
    assert!(!sessions[0].to_string().contains(adam.cookie.split('=').nth(1).unwrap()), "no cookie in the list");
    started.stop().await;
}
