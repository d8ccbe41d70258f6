//! The permission table, as the router enforces it: every console route,
//! without a credential and for every role by token and by session, and the
//! methods a path does not have.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;

use crate::support::{As, Session, call, no_second_factor, person, send, start_with};
use tether_base::clock::SystemClock;
use tether_domain::auth::{Permission, Role, grant};

const ROLES: [&str; 5] = ["security_officer", "admin", "auditor", "developer", "viewer"];

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_every_role_as_the_permission_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let started = start_with(&dir, Arc::new(SystemClock), no_second_factor).await;
    let router = tether_api::console_router(started.app.state().clone());
    let admin = started.admin_token.clone();
    // One person per role (the first security officer is named directly:
    // there is no other to approve), each with a session and a token of
    // its own role.
    let mut people: BTreeMap<&str, (Session, String)> = BTreeMap::new();
    for role in ROLES {
        let (_, session) = person(&router, &admin, &format!("{}-person", role.replace('_', "-")), role).await;
        let (s, v, _) = send(&router, session.who(), "POST", "/api/v1/tokens", Some(&json!({"role": role}))).await;
        assert_eq!(s, 201, "{role}: {v}");
        people.insert(role, (session, v["token"].as_str().unwrap().to_owned()));
    }
    // A worker is a machine: no account, no token.
    let (s, v) = call(&router, &admin, "POST", "/api/v1/users", Some(json!({"name": "w", "role": "worker"}))).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("account_refused")), "{v}");
    let (s, v) = call(&router, &admin, "POST", "/api/v1/tokens", Some(json!({"role": "worker", "name": "w"}))).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("exceeds_your_rights")), "{v}");

    let routes = tether_api::console_route_table();
    let mut methods_by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &routes {
        methods_by_path.entry(r.path).or_default().insert(r.method);
    }
    let key_file = std::fs::read_to_string(dir.path().join("unseal.key")).unwrap();
    let mut checked = 0;
    for route in &routes {
        let path = route.path.replace("{id}", &uuid_like()).replace("{name}", &uuid_like());
        let body = matches!(route.method, "POST" | "PUT").then(|| json!({}));
        let (status, _, _) = send(&router, As::Anyone, route.method, &path, body.as_ref()).await;
        if route.permission == Permission::Public {
            // Public means no credential is asked for; the body may still be wrong.
            assert!(status != 401 && status != 403, "{} {path} is public, got {status}", route.method);
        } else {
            assert_eq!(status, 401, "{} {path} without a credential", route.method);
            assert_eq!(grant(Role::Worker, route.permission), None, "workers hold no console permission");
        }
        for (role_name, (session, token)) in &people {
            let role: Role = role_name.parse().unwrap();
            let mut answers =
                vec![("token", send(&router, As::Token(token), route.method, &path, body.as_ref()).await)];
            // Logging out would end the session the walk goes on with; it
            // is checked at the end.
            if route.path != "/api/v1/auth/logout" {
                answers.push(("session", send(&router, session.who(), route.method, &path, body.as_ref()).await));
            }
            for (via, (status, v, _)) in answers {
                if path == "/api/v1/sys/seal" && status == 200 {
                    let unseal = json!({"key_file": key_file});
                    assert_eq!(send(&router, As::Anyone, "POST", "/api/v1/sys/unseal", Some(&unseal)).await.0, 200);
                }
                match grant(role, route.permission) {
                    None => assert_eq!(status, 403, "{role} by {via}: {} {path} must be forbidden: {v}", route.method),
                    Some(_) => assert!(
                        status != 401 && status != 403,
                        "{role} by {via}: {} {path} must be allowed, got {status}: {v}",
                        route.method
                    ),
                }
                checked += 1;
            }
        }
        // Methods the path does not have.
        for other in tether_api::METHODS {
            if !methods_by_path[route.path].contains(other.as_str()) {
                let (status, v) = call(&router, &admin, other.as_str(), &path, None).await;
                assert_eq!(status, 405, "{other} {path}: {v}");
            }
        }
    }
    assert_eq!(checked, routes.len() * people.len() * 2 - people.len());
    // Logging out ends the session at once.
    let viewer = &people["viewer"].0;
    assert_eq!(send(&router, viewer.who(), "POST", "/api/v1/auth/logout", Some(&json!({}))).await.0, 204);
    assert_eq!(send(&router, viewer.who(), "GET", "/api/v1/auth/session", None).await.0, 401);
    started.stop().await;
}

fn uuid_like() -> String {
    tether_base::ids::TaskId::new().to_string()
}
