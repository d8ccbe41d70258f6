//! People: first login, console sessions, throttling, tokens, and the
//! separation of duties around the security officer role.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Appliance, Console, count_events, totp_now};

#[tokio::test(flavor = "multi_thread")]
async fn the_first_admin_sets_up_its_account_and_sessions_carry_strict_cookies_and_csrf() {
    let a = Appliance::start();
    let api = a.api();
    let initial = a.init["admin_password"].as_str().unwrap().to_owned();
    let first = Console::login(&api, "admin", &initial, None).await;
    for flag in ["__Host-tether_session=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=28800"] {
        assert!(first.set_cookie.contains(flag), "{flag} missing from {}", first.set_cookie);
    }
    // Until the account is set up, nothing else answers.
    let (s, v) = first.get("/api/v1/tasks").await;
    assert_eq!((s, v["code"].as_str()), (403, Some("account_setup_required")), "{v}");
    let (s, v) = first.post("/api/v1/auth/password", &json!({"current": initial, "new": "too short"})).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("account_refused")), "{v}");
    let own = "a long and private admin passphrase";
    assert_eq!(first.post("/api/v1/auth/password", &json!({"current": initial, "new": own})).await.0, 204);
    let (s, v) = first.get("/api/v1/tasks").await;
    assert_eq!((s, v["code"].as_str()), (403, Some("account_setup_required")), "an admin needs TOTP too: {v}");
    let (_, setup) = first.post("/api/v1/auth/totp", &json!({})).await;
    let secret = setup["secret"].as_str().unwrap();
    assert!(setup["uri"].as_str().unwrap().starts_with("otpauth://totp/Tether:admin?secret="));
    let (s, v) = first.post("/api/v1/auth/totp/confirm", &json!({"code": "000000"})).await;
    assert_eq!(s, 401, "a wrong code does not enroll: {v}");
    let code = totp_now(secret);
    let (s, codes) = first.post("/api/v1/auth/totp/confirm", &json!({"code": code})).await;
    assert_eq!(s, 200, "{codes}");
    assert_eq!(codes["recovery_codes"].as_array().unwrap().len(), 10);
    assert_eq!(first.get("/api/v1/tasks").await.0, 200);

    // CSRF: a state-changing request without the session's token is refused.
    let submit = json!({"kind": "echo", "input": {}, "labels": ["nobody"]});
    let (s, v, _) = first.api.send(Method::POST, "/api/v1/tasks", Some(&submit), &[("cookie", &first.cookie)]).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("csrf_token_invalid")), "{v}");
    let (s, v, _) = first
        .api
        .send(Method::POST, "/api/v1/tasks", Some(&submit), &[("cookie", &first.cookie), ("x-csrf-token", "0000")])
        .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("csrf_token_invalid")), "{v}");
    assert_eq!(first.post("/api/v1/tasks", &submit).await.0, 201);

    // The password is now the admin's own and the second factor is required.
    let (s, v, _) = Console::try_login(&api, "admin", own, None).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("second_factor_required")), "{v}");
    let recovery = codes["recovery_codes"][0].as_str().unwrap();
    let body = json!({"username": "admin", "password": own, "recovery_code": recovery.to_uppercase()});
    let (s, v, _) = api.with_token(None).send(Method::POST, "/api/v1/auth/login", Some(&body), &[]).await;
    assert_eq!(s, 200, "a recovery code stands in for TOTP: {v}");
    let (s, _, _) = api.with_token(None).send(Method::POST, "/api/v1/auth/login", Some(&body), &[]).await;
    assert_eq!(s, 401, "each recovery code works once");

    // An admin's revocation ends another person's sessions at once.
    let dev = a.person("dana", "developer").await;
    assert_eq!(dev.console.get("/api/v1/tasks").await.0, 200);
    let (s, v) = first.send(Method::DELETE, "/api/v1/users/dana/sessions", None).await;
    assert_eq!((s, v["sessions_ended"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(dev.console.get("/api/v1/tasks").await.0, 401);
    assert_eq!(first.post("/api/v1/auth/logout", &json!({})).await.0, 204);
    assert_eq!(first.get("/api/v1/tasks").await.0, 401, "logout takes effect at once");

    // Nothing secret reached the audit log.
    let log = serde_json::to_string(&a.api().audit_log().await).unwrap();
    for secret in [initial.as_str(), own, secret, recovery, first.cookie.split('=').nth(1).unwrap()] {
        assert!(!log.contains(secret), "a secret reached the audit log");
    }
}

// The throttle's whole schedule, the lockout and its alert, and sessions
// that idle out or grow too old, are shown on a manual clock in process
// (`appliance/api/tests/app/time_rules.rs`). Here, over real TLS from a real
// address: the first wait, the pseudonymous records, the per-address rule.
#[tokio::test(flavor = "multi_thread")]
async fn guessing_a_password_is_slowed_and_recorded_under_a_pseudonym() {
    let a = Appliance::start();
    let api = a.api();
    a.person("victor", "developer").await;
    let attempt = |password: &'static str| {
        let api = api.clone();
        async move { Console::try_login(&api, "victor", password, None).await }
    };
    // Three free failures, then a wait before the next try.
    for _ in 0..3 {
        assert_eq!(attempt("wrong password 1").await.0, 401);
    }
    let (s, v, h) = loop {
        let answer = attempt("wrong password 2").await;
        if answer.0 != 401 {
            break answer;
        }
    };
    assert_eq!((s, v["code"].as_str()), (429, Some("login_throttled")), "{v}");
    assert_eq!(h["retry-after"], "1", "the schedule's first wait");
    let records = a.api().audit_log().await;
    let failed: Vec<_> = records.iter().filter(|r| r["event_type"] == "auth.login_failed").collect();
    assert!(!failed.is_empty());
    for r in &failed {
        let id = r["resource"]["id"].as_str().unwrap();
        assert!(id.starts_with("hmac:") && !id.contains("victor"), "{r}");
        assert_eq!(r["metadata"]["source_ip"], "127.0.0.1", "{r}");
    }

    // From one address, guesses at many accounts are slowed too.
    let b = Appliance::start();
    let api = b.api();
    for i in 0..6 {
        let (s, _, _) = Console::try_login(&api, &format!("nobody{i}"), "wrong password 3", None).await;
        assert_eq!(s, 401);
    }
    let (s, v, _) = Console::try_login(&api, "someone-else", "wrong password 3", None).await;
    assert_eq!((s, v["code"].as_str()), (429, Some("login_throttled")), "the address waits: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_never_carries_more_than_its_creator_and_rotation_and_revocation_bite_at_once() {
    let a = Appliance::start();
    let admin = a.api();
    let dev = a.person("devi", "developer").await;

    let (s, v) = dev.console.post("/api/v1/tokens", &json!({"role": "viewer"})).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("exceeds_your_rights")), "a viewer sees all tasks' metadata: {v}");
    let (s, v) = admin.post("/api/v1/tokens", &json!({"role": "security_officer", "name": "ops"})).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("exceeds_your_rights")), "{v}");
    let (s, v) = admin.post("/api/v1/tokens", &json!({"role": "admin", "name": "devi"})).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("exceeds_your_rights")), "not for another person: {v}");
    let (s, v) = dev.console.post("/api/v1/tokens", &json!({"role": "developer", "ttl": "400d"})).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")), "beyond token_max_ttl: {v}");

    let (s, made) = dev.console.post("/api/v1/tokens", &json!({"role": "developer"})).await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(made["name"], "devi");
    let expires = made["expires_at"].as_str().unwrap();
    let in_90_days = time::OffsetDateTime::now_utc() + time::Duration::days(90);
    assert!(expires.starts_with(&in_90_days.date().to_string()), "default expiry 90 days: {expires}");
    let token = admin.with_token(Some(made["token"].as_str().unwrap()));
    assert_eq!(token.get("/api/v1/tasks").await.0, 200);
    let (_, listed) = dev.console.get("/api/v1/tokens").await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "a developer lists only its own: {listed:?}");
    assert!(listed[0]["last_used"].as_str().is_some_and(|t| t.ends_with('Z')), "{listed:?}");
    assert!(admin.get("/api/v1/tokens").await.1.as_array().unwrap().len() >= 2, "an admin lists all");

    let id = made["id"].as_str().unwrap();
    let (s, rotated) = dev.console.post(&format!("/api/v1/tokens/{id}/rotate"), &json!({})).await;
    assert_eq!(s, 200, "{rotated}");
    assert_eq!(token.get("/api/v1/tasks").await.0, 401, "the old secret stops at once");
    let new = admin.with_token(Some(rotated["token"].as_str().unwrap()));
    assert_eq!(new.get("/api/v1/tasks").await.0, 200);
    assert_eq!(rotated["expires_at"], made["expires_at"]);
    let new_id = rotated["id"].as_str().unwrap();
    assert_eq!(dev.console.send(Method::DELETE, &format!("/api/v1/tokens/{new_id}"), None).await.0, 204);
    assert_eq!(new.get("/api/v1/tasks").await.0, 401, "revocation is instant");

    // Disabling a person ends their sessions and tokens.
    let (_, again) = dev.console.post("/api/v1/tokens", &json!({"role": "developer"})).await;
    let again = admin.with_token(Some(again["token"].as_str().unwrap()));
    assert_eq!(admin.post("/api/v1/users/devi/disable", &json!({})).await.0, 204);
    assert_eq!(again.get("/api/v1/tasks").await.0, 401);
    assert_eq!(dev.console.get("/api/v1/tasks").await.0, 401);
    let (s, _, _) = Console::try_login(&admin, "devi", &dev.password, None).await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn granting_or_removing_security_officer_waits_for_a_second_officer() {
    let a = Appliance::start();
    let first_officer = a.person("sofia", "security_officer").await;
    let admin = a.person("andy", "admin").await;
    let admin_console = &admin.console;
    let carol = a.person("carol", "viewer").await;
    drop(carol);

    // Nobody changes their own role.
    let (s, v) =
        admin_console.send(Method::PUT, "/api/v1/users/andy/role", Some(&json!({"role": "security_officer"}))).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("account_refused")), "{v}");
    // Granting security_officer waits; an admin cannot approve.
    let (s, v) =
        admin_console.send(Method::PUT, "/api/v1/users/carol/role", Some(&json!({"role": "security_officer"}))).await;
    assert_eq!((s, v["result"].as_str()), (200, Some("awaiting_approval")), "{v}");
    let (_, users) = admin_console.get("/api/v1/users").await;
    let carol = users.as_array().unwrap().iter().find(|u| u["name"] == "carol").unwrap().clone();
    assert_eq!((carol["role"].as_str(), carol["pending_role"].as_str()), (Some("viewer"), Some("security_officer")));
    assert_eq!(admin_console.post("/api/v1/users/carol/role/approve", &json!({})).await.0, 403);
    let (s, v) = first_officer.console.post("/api/v1/users/carol/role/approve", &json!({})).await;
    assert_eq!((s, v["role"].as_str()), (200, Some("security_officer")), "{v}");

    // Removing an officer waits too, and the officer concerned cannot approve it.
    let (s, v) = admin_console.send(Method::PUT, "/api/v1/users/sofia/role", Some(&json!({"role": "viewer"}))).await;
    assert_eq!((s, v["result"].as_str()), (200, Some("awaiting_approval")), "{v}");
    let (s, v) = first_officer.console.post("/api/v1/users/sofia/role/approve", &json!({})).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("account_refused")), "{v}");
    let records = a.api().audit_log().await;
    assert_eq!(count_events(&records, "user.role_requested"), 2);
    assert_eq!(count_events(&records, "user.role_changed"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_adds_lists_and_disables_people_and_lists_rotates_and_revokes_tokens() {
    let a = Appliance::start();
    let run = |args: &[&str]| {
        let out = a.cli(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let added = run(&["user", "add", "carol", "--role", "developer"]);
    let password = added.lines().find_map(|l| l.split("in person): ").nth(1)).expect(&added).to_owned();
    let (s, v, _) = Console::try_login(&a.api(), "carol", &password, None).await;
    assert_eq!((s, v["set_up"].as_bool()), (200, Some(false)), "must choose her own first: {v}");
    let listed = run(&["user", "list"]);
    let carol = listed.lines().find(|l| l.starts_with("carol")).expect(&listed);
    assert!(carol.contains("developer") && carol.contains("new"), "{carol}");

    let made: serde_json::Value =
        serde_json::from_str(&run(&["token", "create", "--role", "viewer", "--name", "ci-bot", "--json"])).unwrap();
    let id = made["id"].as_str().unwrap();
    assert!(run(&["token", "list"]).lines().any(|l| l.starts_with(id) && l.contains("ci-bot")));
    let rotated: serde_json::Value = serde_json::from_str(&run(&["token", "rotate", id, "--json"])).unwrap();
    let new_id = rotated["id"].as_str().unwrap();
    assert!(!run(&["token", "list"]).contains(id));
    run(&["token", "revoke", new_id]);
    assert!(!run(&["token", "list"]).contains(new_id));

    run(&["user", "disable", "carol"]);
    let (s, _, _) = Console::try_login(&a.api(), "carol", &password, None).await;
    assert_eq!(s, 401);
    let out = a.cli(&["user", "add", "Bad Name", "--role", "viewer"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user name is 1-64 characters"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_can_require_a_second_factor_of_more_roles() {
    let mut env = crate::harness::fast_env();
    env.push(("TETHER_MFA_REQUIRED_ROLES", "admin,security_officer,developer"));
    let a = Appliance::start_with(env);
    let api = a.api();
    let (s, v) =
        api.post("/api/v1/users", &json!({"name": "dev", "role": "developer", "password": "first-dev-password"})).await;
    assert_eq!(s, 201, "{v}");
    let first = Console::login(&api, "dev", "first-dev-password", None).await;
    let own = json!({"current": "first-dev-password", "new": "the developer's own password"});
    assert_eq!(first.post("/api/v1/auth/password", &own).await.0, 204);
    let (s, v) = first.get("/api/v1/tasks").await;
    assert_eq!((s, v["code"].as_str()), (403, Some("account_setup_required")), "a developer needs TOTP here: {v}");
    let (_, setup) = first.post("/api/v1/auth/totp", &json!({})).await;
    let code = totp_now(setup["secret"].as_str().unwrap());
    assert_eq!(first.post("/api/v1/auth/totp/confirm", &json!({"code": code})).await.0, 200);
    assert_eq!(first.get("/api/v1/tasks").await.0, 200);
}
