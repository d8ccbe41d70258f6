//! What browsers are told: the security headers on every answer of both
//! listeners, CORS shut unless the site lists an origin, cross-site form
//! posts refused, and CSP violation reports counted.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::fake_llm::FakeLlm;
use crate::harness::Appliance;

/// The headers every answer carries, whatever produced it.
const EVERY_ANSWER: [(&str, &str); 6] = [
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-frame-options", "DENY"),
];

/// Asserts the full set on one answer (`what` names it in failures).
/// Documents (HTML) get the console's policy; everything else the API's.
pub(crate) fn assert_security_headers(what: &str, headers: &HeaderMap) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    for (name, value) in EVERY_ANSWER {
        assert_eq!(get(name), value, "{what}: {name}");
    }
    let permissions = get("permissions-policy");
    for feature in ["camera=()", "microphone=()", "geolocation=()", "usb=()", "payment=()"] {
        assert!(permissions.contains(feature), "{what}: permissions-policy {permissions:?} lacks {feature}");
    }
    let csp = get("content-security-policy");
    let document = get("content-type").starts_with("text/html");
    let expected = if document {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
         require-trusted-types-for 'script'; trusted-types tether; "
    } else {
        "default-src 'none'; frame-ancestors 'none'; "
    };
    assert!(csp.starts_with(expected), "{what}: content-security-policy {csp:?}");
    assert!(csp.contains("report-uri /api/v1/security/csp-reports"), "{what}: {csp:?}");
    assert!(!csp.contains("unsafe-"), "{what}: {csp:?}");
    assert_eq!(get("cache-control"), "no-store", "{what}: cache-control");
    assert!(
        !headers.keys().any(|k| k.as_str().starts_with("access-control-allow-")),
        "{what}: no CORS grant without a listed origin: {headers:?}"
    );
}

fn http(ca_pem: &str, identity: Option<(&str, &str)>, alpn: &[&[u8]]) -> reqwest::Client {
    let config = tether_base::tls::client(ca_pem, identity, alpn).unwrap();
    tether_base::tls::https_client(config, Duration::from_secs(30)).unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let resp = req.send().await.expect("an answer");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    // An event stream never ends: its headers are the answer.
    if headers.get("content-type").is_some_and(|t| t == "text/event-stream") {
        return (status, headers, Value::Null);
    }
    let text = resp.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A path of the route table with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "0190f0a0-0000-7000-8000-000000000000")
        .replace("{name}", "no-such-name")
        .replace("{step}", "no-such-step")
        .replace("{level}", "no-such-level")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_of_both_listeners_carries_the_security_headers() {
    let a = Appliance::start();
    let console = http(&a.ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN);
    // A 404, a 405 and an unauthenticated error; the sealed refusal follows the walk.
    let (s, h, _) = send(console.get(format!("{}/no/such/path", a.console))).await;
    assert_eq!(s, 404);
    assert_security_headers("404", &h);
    let (s, h, _) = send(console.patch(format!("{}/api/v1/tasks", a.console))).await;
    assert_eq!(s, 405);
    assert_security_headers("405", &h);
    let (s, h, v) = send(console.get(format!("{}/api/v1/tasks", a.console))).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthenticated")), "{v}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_security_headers("401 problem", &h);
    let mut routes = tether_api::console_route_table();
    // Sealing would turn every later answer into 503: it goes last.
    routes.sort_by_key(|r| r.path == "/api/v1/sys/seal");
    let mut statuses = std::collections::BTreeSet::new();
    for route in &routes {
        let method: Method = route.method.parse().unwrap();
        let url = format!("{}{}", a.console, concrete(route.path));
        let mut req = console.request(method.clone(), &url).bearer_auth(&a.admin_token);
        if matches!(route.method, "POST" | "PUT") {
            req = req.json(&json!({}));
        }
        let (status, headers, _) = send(req).await;
        statuses.insert(status);
        assert_security_headers(&format!("{} {}", route.method, route.path), &headers);
    }
    assert!(statuses.len() >= 4, "the walk met successes and several errors: {statuses:?}");

    let (s, h, v) = send(console.get(format!("{}/healthz", a.console))).await;
    assert_eq!((s, v["sealed"].as_bool()), (200, Some(true)), "the walk ended by sealing: {v}");
    assert_security_headers("/healthz, sealed", &h);
    let (s, h, _) = send(console.get(format!("{}/api/v1/tasks", a.console)).bearer_auth(&a.admin_token)).await;
    assert_eq!(s, 503);
    assert_security_headers("503 sealed", &h);
    a.unseal_from_key_file().await;

    // The worker gateway: enrollment (no certificate), then every route an
    // enrolled worker has, over its own connection.
    let enroll = http(&a.ca_pem, None, tether_base::tls::CLIENT_ENROLL_ALPN);
    let enroll_url = format!("{}/worker/v1/enroll", a.worker_gateway);
    let (_, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let (s, h, _) = send(enroll.post(&enroll_url).json(&json!({"token": "wrong", "csr_pem": csr}))).await;
    assert_eq!(s, 401);
    assert_security_headers("enroll refused", &h);
    let token = a.enrollment_token(None).await;
    let (key, csr) = tether_domain::pki::new_worker_key_and_csr().unwrap();
    let (s, h, enrolled) = send(enroll.post(&enroll_url).json(&json!({"token": token, "csr_pem": csr}))).await;
    assert_eq!(s, 201, "{}", enrolled["code"]);
    assert_security_headers("enrolled", &h);
    let cert = enrolled["cert_pem"].as_str().unwrap();
    let worker = http(&a.ca_pem, Some((cert, &key)), tether_base::tls::CLIENT_HTTP_ALPN);
    let gateway = |path: &str| format!("{}{}", a.worker_gateway, concrete(path));
    let worker_calls = [
        (Method::POST, tether_wire::POLL, json!({"max_tasks": 1, "wait_s": 0})),
        (Method::POST, tether_wire::HEARTBEAT, json!({"lease_id": "0190f0a0-0000-7000-8000-000000000000"})),
        (Method::POST, tether_wire::COMPLETE, json!({})),
        (Method::POST, tether_wire::RENEW, json!({"csr_pem": "not a csr"})),
        (Method::GET, "/healthz", Value::Null),
        (Method::GET, "/worker/v1/nothing-here", Value::Null),
    ];
    for (method, path, body) in worker_calls {
        let mut req = worker.request(method.clone(), gateway(path));
        if !body.is_null() {
            req = req.json(&body);
        }
        let (status, headers, _) = send(req).await;
        assert_security_headers(&format!("worker gateway {method} {path} ({status})"), &headers);
    }

    // A stream: the gateway relaying a model server's answer chunk by chunk.
    let upstream = FakeLlm::start().await;
    crate::llm::add_upstream(&a, "local", &upstream.url(), &["llama3"]).await;
    let (s, created) =
        a.api().post("/api/v1/llm/keys", &json!({"owner": "admin", "enforcement": "unrestricted"})).await;
    assert_eq!(s, 201, "{created}");
    let ask = json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "hello there"}]});
    let (s, h, body) = send(
        console
            .post(format!("{}/v1/chat/completions", a.console))
            .bearer_auth(created["key"].as_str().unwrap())
            .json(&ask),
    )
    .await;
    assert_eq!((s, h["content-type"].to_str().unwrap()), (200, "text/event-stream"), "{body}");
    assert_security_headers("a streamed completion", &h);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_grants_nothing_unless_the_site_lists_the_origin_and_never_with_credentials() {
    let listed = "https://notebook.site.lan:8888";
    let mut env = crate::harness::fast_env();
    env.push(("TETHER_CORS_ALLOWED_ORIGINS", listed));
    let a = Appliance::start_with(env);
    let client = http(&a.ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN);
    let tasks = format!("{}/api/v1/tasks", a.console);
    let preflight = |origin: &str| {
        client
            .request(Method::OPTIONS, &tasks)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
    };
    let grants = |h: &HeaderMap| h.keys().filter(|k| k.as_str().starts_with("access-control-allow-")).count();

    // An unlisted origin's preflight: 403 problem+json, no grant.
    let (s, h, v) = send(preflight("https://evil.example")).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("cross_origin_refused")), "{v}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_security_headers("refused preflight", &h);

    // A credentialed cross-origin read from an unlisted origin: answered
    // (a read changes nothing) but with no grant, so the page cannot see it.
    let person = a.person("dana", "developer").await;
    let (s, h, _) =
        send(client.get(&tasks).header("origin", "https://evil.example").header("cookie", &person.console.cookie))
            .await;
    assert_eq!(s, 200);
    assert_security_headers("credentialed cross-origin read", &h);

    // The listed origin: its preflight is granted for that origin exactly,
    // never with credentials, and a bearer-token read is granted too.
    let (s, h, _) = send(preflight(listed)).await;
    assert_eq!(s, 204);
    assert_eq!(h["access-control-allow-origin"], listed);
    assert!(h["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    assert!(!h.contains_key("access-control-allow-credentials"), "{h:?}");
    let (s, h, _) = send(client.get(&tasks).header("origin", listed).bearer_auth(&a.admin_token)).await;
    assert_eq!((s, h["access-control-allow-origin"].to_str().unwrap()), (200, listed));
    assert!(!h.contains_key("access-control-allow-credentials"), "{h:?}");
    // Even the listed origin gets no grant for a request that carries a cookie.
    let (s, h, _) = send(client.get(&tasks).header("origin", listed).header("cookie", &person.console.cookie)).await;
    assert_eq!((s, grants(&h)), (200, 0), "{h:?}");
    // A prefix or a look-alike of the listed origin is another origin.
    let (s, _, _) = send(preflight("https://notebook.site.lan:8888.evil.example")).await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_site_form_post_with_the_session_cookie_changes_nothing() {
    let a = Appliance::start();
    let person = a.person("erin", "developer").await;
    let client = http(&a.ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN);
    let url = format!("{}/api/v1/tasks", a.console);
    // What a page elsewhere can make a browser send: a form post, with the
    // cookie (were it not SameSite=Strict), no CSRF header.
    let form = |origin: Option<&str>| {
        let req = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &person.console.cookie)
            .body("kind=echo&input=%7B%7D");
        match origin {
            Some(o) => req.header("origin", o),
            None => req,
        }
    };
    let (s, h, v) = send(form(Some("https://evil.example"))).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("cross_origin_refused")), "{v}");
    assert_security_headers("cross-site form post", &h);
    // A browser that leaves Origin out meets the CSRF token check instead.
    let (s, _, v) = send(form(None)).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("csrf_token_invalid")), "{v}");
    // The same origin's request without the token is refused as well.
    let (s, _, v) = send(form(Some(&a.console))).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("csrf_token_invalid")), "{v}");
    let (s, tasks) = a.api().get("/api/v1/tasks").await;
    assert_eq!(s, 200);
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0), "no task was made: {tasks}");
}

#[tokio::test(flavor = "multi_thread")]
async fn csp_violation_reports_are_counted_in_status_and_nothing_more() {
    let a = Appliance::start();
    let client = http(&a.ca_pem, None, tether_base::tls::CLIENT_HTTP_ALPN);
    let report = json!({"csp-report": {
        "document-uri": "https://tether.site.lan/", "violated-directive": "script-src",
        "blocked-uri": "inline", "original-policy": "<script>alert(1)</script>"
    }});
    for content_type in ["application/csp-report", "application/reports+json"] {
        let (s, h, _) = send(
            client
                .post(format!("{}/api/v1/security/csp-reports", a.console))
                .header("content-type", content_type)
                .body(report.to_string()),
        )
        .await;
        assert_eq!(s, 204);
        assert_security_headers("csp report", &h);
    }
    let (s, status) = a.api().get("/api/v1/system/status").await;
    assert_eq!((s, status["csp_violations"].as_u64()), (200, Some(2)), "{status}");
    let records = a.api().audit_log().await;
    assert!(!Value::from(records).to_string().contains("alert(1)"), "a report is not input to anything");
}
