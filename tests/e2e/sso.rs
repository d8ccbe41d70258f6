//! Single sign-on against a real OpenID provider: `oidc-provider` from the
//! npm registry (the certified Node.js implementation), run by the test over
//! HTTPS on loopback, driven by a scripted browser that follows redirects
//! and keeps cookies the way a browser does.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Appliance, count_events, totp_now};

const CLIENT_SECRET: &str = "a-client-secret-that-must-never-be-logged";

/// The provider, killed when dropped.
struct Idp {
    child: Child,
    issuer: String,
    ca_file: PathBuf,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Starts the provider for an appliance whose console is `console`.
    fn start(dir: &Path, console: &str, people: Value) -> Idp {
        let script = crate::harness::repo_root().join("tests/idp/idp.mjs");
        assert!(
            script.with_file_name("node_modules").exists(),
            "the provider's npm packages are missing: run scripts/test.sh (it runs npm ci in appliance/tests/idp)"
        );
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
        let (cert_file, key_file, ca_file) = (dir.join("idp.pem"), dir.join("idp-key.pem"), dir.join("idp-ca.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let config = json!({
            "cert_file": cert_file, "key_file": key_file,
            "client_id": "tether", "client_secret": CLIENT_SECRET,
            "redirect_uri": format!("{console}/api/v1/auth/sso/callback"),
            "post_logout_redirect_uri": format!("{console}/"),
            "people": people,
        });
        let config_file = dir.join("idp.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        // Once, under a loaded CI run, node stalled before listening and
        // the suite waited on it for minutes: each start gets a minute, and
        // a stalled one is killed and started again, once.
        for attempt in 1..=2 {
            let mut child = Command::new("node")
                .arg(&script)
                .arg(&config_file)
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(dir.join("idp.log")).unwrap())
                .spawn()
                .expect("run node (scripts/test.sh installs it)");
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let (said, heard) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut stdout, &mut line);
                let _ = said.send(line);
                // Keep reading: the provider dies of EPIPE if its stdout closes.
                std::io::copy(&mut stdout, &mut std::io::sink())
            });
            let Ok(line) = heard.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                assert!(attempt < 2, "the OpenID provider did not start within a minute, twice (see idp.log)");
                continue;
            };
            let issuer =
                line.trim().strip_prefix("issuer ").unwrap_or_else(|| panic!("the provider said {line:?}")).to_owned();
            return Idp { child, issuer, ca_file };
        }
        unreachable!("the loop returns or panics")
    }
}

/// Points the (stopped) appliance at the provider; `extra` goes into `[sso]`.
fn configure_sso(a: &Appliance, idp: &Idp, extra: &str) {
    let secret_file = a.dir.path().join("oidc-client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        r#"
[sso]
issuer = "{issuer}"
client_id = "tether"
client_secret_file = "{secret}"
ca_file = "{ca}"
console_url = "{console}"
scopes = "openid profile groups"
{extra}

[[sso.role]]
group = "tether-admins"
role = "admin"

[[sso.role]]
group = "tether-developers"
role = "developer"
"#,
        issuer = idp.issuer,
        secret = secret_file.display(),
        ca = idp.ca_file.display(),
        console = a.console,
    );
    std::fs::write(a.data_dir().join("tether.toml"), config).unwrap();
}

/// A scripted browser: follows redirects one by one, keeps each host's
/// cookies, submits the provider's login form when it is shown.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, HashMap<String, String>>,
}

/// Where a sign-in ended.
#[derive(Debug)]
enum Landing {
    /// The appliance's answer to the callback (status, body, headers, URL).
    Appliance(u16, String, reqwest::header::HeaderMap, String),
    /// The provider showed its login form and no credentials were given.
    LoginForm,
}

impl Browser {
    fn new(appliance_ca: &str, idp: &Idp) -> Browser {
        let roots = format!("{appliance_ca}\n{}", std::fs::read_to_string(&idp.ca_file).unwrap());
        let tls = tether_base::tls::client(&roots, None, tether_base::tls::CLIENT_HTTP_ALPN).unwrap();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Browser { http, cookies: HashMap::new() }
    }

    async fn request(&mut self, method: Method, url: &str, form: Option<&[(&str, &str)]>) -> reqwest::Response {
        let parsed = reqwest::Url::parse(url).unwrap();
        let host = format!("{}:{}", parsed.host_str().unwrap(), parsed.port_or_known_default().unwrap());
        let jar = self.cookies.entry(host).or_default();
        let mut req = self.http.request(method, url);
        if !jar.is_empty() {
            req = req.header("cookie", jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "));
        }
        if let Some(form) = form {
            let body = form.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
            req = req.header("content-type", "application/x-www-form-urlencoded").body(body);
        }
        let resp = req.send().await.unwrap();
        for value in resp.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let (name, rest) = value.split_once('=').unwrap();
            let cookie_value = rest.split(';').next().unwrap();
            if cookie_value.is_empty() || value.contains("Max-Age=0") || value.contains("expires=Thu, 01 Jan 1970") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), cookie_value.to_owned());
            }
        }
        resp
    }

    /// Begins a sign-in at the appliance and follows it through the
    /// provider; types `credentials` into the login form if it appears.
    async fn sign_in(&mut self, console: &str, fresh: bool, credentials: Option<(&str, &str)>) -> Landing {
        let mut url = format!("{console}/api/v1/auth/sso/login{}", if fresh { "?fresh=true" } else { "" });
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..12 {
            let fields: Option<Vec<(&str, &str)>> =
                form.as_ref().map(|f| f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect());
            let method = if fields.is_some() { Method::POST } else { Method::GET };
            let resp = self.request(method, &url, fields.as_deref()).await;
            form = None;
            let status = resp.status().as_u16();
            if url.starts_with(console) && !url.contains("/sso/login") {
                let headers = resp.headers().clone();
                return Landing::Appliance(status, resp.text().await.unwrap(), headers, url);
            }
            if let Some(location) = resp.headers().get("location") {
                url = reqwest::Url::parse(&url).unwrap().join(location.to_str().unwrap()).unwrap().to_string();
                continue;
            }
            assert_eq!(status, 200, "{url}: {}", resp.text().await.unwrap());
            assert!(url.contains("/interaction/"), "stopped at {url}");
            let Some((login, password)) = credentials else { return Landing::LoginForm };
            url = format!("{url}/login");
            form = Some(vec![("login".into(), login.into()), ("password".into(), password.into())]);
        }
        panic!("too many redirects, last at {url}");
    }

    /// The session cookie the appliance holds for this browser.
    fn session(&self, console: &str) -> Option<String> {
        let host = console.trim_start_matches("https://");
        self.cookies.get(host)?.get("__Host-tether_session").map(|v| format!("__Host-tether_session={v}"))
    }
}

/// A console session from a browser's cookie: its CSRF token and who it is.
async fn session_of(a: &Appliance, cookie: &str) -> (u16, Value) {
    let (s, v, _) =
        a.api().with_token(None).send(Method::GET, "/api/v1/auth/session", None, &[("cookie", cookie)]).await;
    (s, v)
}

async fn send(a: &Appliance, cookie: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (_, session) = session_of(a, cookie).await;
    let csrf = session["csrf_token"].as_str().unwrap_or_default().to_owned();
    let (s, v, _) =
        a.api().with_token(None).send(method, path, body, &[("cookie", cookie), ("x-csrf-token", &csrf)]).await;
    (s, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn people_sign_in_through_the_sites_openid_provider_and_its_groups_decide_their_role() {
    let mut a = Appliance::start_logging(vec![("TETHER_REAUTH_WINDOW", "4s")]);
    let bob = a.person("bob", "viewer").await;
    let people = json!({
        "alice": {"password": "alice-pw", "groups": ["staff", "tether-admins"], "amr": ["pwd", "otp"]},
        "dave": {"password": "dave-pw", "groups": ["tether-developers"]},
        "outsider7": {"password": "outsider-pw", "groups": ["visitors"]},
    });
    let idp = Idp::start(a.dir.path(), &a.console, people);
    a.stop();
    configure_sso(&a, &idp, "");
    a.restart();
    let console = a.console.clone();

    // alice's groups make her an admin, and her provider vouches for her
    // second factor: the session is an ordinary console session.
    let mut alice = Browser::new(&a.ca_pem, &idp);
    let Landing::Appliance(status, page, headers, callback) =
        alice.sign_in(&console, false, Some(("alice", "alice-pw"))).await
    else {
        panic!("no login form was shown")
    };
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Signed in as sso:alice"), "{page}");
    crate::browser::assert_security_headers("the signed-in page (a document)", &headers);
    let session_cookie = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("__Host-tether_session="))
        .unwrap();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session_cookie.contains(flag), "{flag} missing from {session_cookie}");
    }
    let alice_cookie = alice.session(&console).unwrap();
    let (s, me) = session_of(&a, &alice_cookie).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!((me["user"]["name"].as_str(), me["user"]["role"].as_str()), (Some("sso:alice"), Some("admin")));
    assert_eq!((me["set_up"].as_bool(), me["recently_authenticated"].as_bool()), (Some(true), Some(true)));
    let (s, users) = send(&a, &alice_cookie, Method::GET, "/api/v1/users", None).await;
    assert_eq!(s, 200, "{users}");
    let listed = users.as_array().unwrap().iter().find(|u| u["name"] == "sso:alice").unwrap();
    assert_eq!((listed["role"].as_str(), listed["created_by"].as_str()), (Some("admin"), Some("sso")));
    // A state-changing request still needs the session's CSRF token.
    let submit = json!({"kind": "echo", "input": {}, "labels": ["nobody"]});
    let (s, _, _) =
        a.api().with_token(None).send(Method::POST, "/api/v1/tasks", Some(&submit), &[("cookie", &alice_cookie)]).await;
    assert_eq!(s, 403);

    // The code and state work once; a second browser cannot finish a
    // sign-in another began (login CSRF, stolen codes).
    let mut other = Browser::new(&a.ca_pem, &idp);
    let resp = other.request(Method::GET, &callback, None).await;
    assert_eq!(resp.status().as_u16(), 401);
    crate::browser::assert_security_headers("a refused callback", resp.headers());
    let mut dave = Browser::new(&a.ca_pem, &idp);
    let begun = dave.request(Method::GET, &format!("{console}/api/v1/auth/sso/login"), None).await;
    assert_eq!(begun.status().as_u16(), 303);
    crate::browser::assert_security_headers("the redirect to the provider", begun.headers());
    let binding = begun.headers()["set-cookie"].to_str().unwrap();
    assert!(binding.starts_with("__Host-tether_sso=") && binding.contains("SameSite=Lax"), "{binding}");
    let authorize = begun.headers()["location"].to_str().unwrap().to_owned();
    for param in ["code_challenge_method=S256", "code_challenge=", "nonce=", "state=", "max_age="] {
        assert!(authorize.contains(param), "{param} missing from {authorize}");
    }
    let mut thief = Browser::new(&a.ca_pem, &idp);
    let mut url = authorize;
    let callback = loop {
        let resp = if url.contains("/interaction/") && !url.ends_with("/login") {
            url = format!("{url}/login");
            thief.request(Method::POST, &url, Some(&[("login", "dave"), ("password", "dave-pw")])).await
        } else {
            thief.request(Method::GET, &url, None).await
        };
        let next = reqwest::Url::parse(&url).unwrap().join(resp.headers()["location"].to_str().unwrap()).unwrap();
        url = next.to_string();
        if url.starts_with(&console) {
            break url;
        }
    };
    let resp = thief.request(Method::GET, &callback, None).await;
    let refusal: Value = resp.json().await.unwrap();
    assert_eq!(refusal["code"], "sso_failed", "{refusal}");
    assert!(refusal["detail"].as_str().unwrap().contains("another browser"), "{refusal}");

    // dave is a developer: his own tasks, no people admin.
    let Landing::Appliance(200, _, _, _) = dave.sign_in(&console, false, Some(("dave", "dave-pw"))).await else {
        panic!("dave's sign-in failed")
    };
    let dave_cookie = dave.session(&console).unwrap();
    assert_eq!(send(&a, &dave_cookie, Method::GET, "/api/v1/users", None).await.0, 403);
    assert_eq!(send(&a, &dave_cookie, Method::POST, "/api/v1/tasks", Some(&submit)).await.0, 201);
    let (s, v) =
        send(&a, &dave_cookie, Method::POST, "/api/v1/auth/password", Some(&json!({"current": "x", "new": "y"}))).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")), "the IdP holds dave's password: {v}");

    // outsider7's groups map to no role: authenticated there, nothing here.
    let mut outsider = Browser::new(&a.ca_pem, &idp);
    let Landing::Appliance(status, body, _, _) =
        outsider.sign_in(&console, false, Some(("outsider7", "outsider-pw"))).await
    else {
        panic!("outsider7 saw no login form")
    };
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, refusal["code"].as_str()), (403, Some("sso_no_role")), "{refusal}");
    assert!(outsider.session(&console).is_none());

    // Sensitive actions need a fresh authentication at the provider: a
    // silent sign-in on the provider's old session is not one.
    // (The re-authentication window, 4 s here, passes in real time: the
    // provider is a real one.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    let role_change = json!({"role": "auditor"});
    let (s, v) = send(&a, &alice_cookie, Method::PUT, "/api/v1/users/bob/role", Some(&role_change)).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("reauthentication_required")), "{v}");
    let Landing::Appliance(200, _, _, _) = alice.sign_in(&console, false, None).await else {
        panic!("the provider's session should sign alice in silently")
    };
    let silent_cookie = alice.session(&console).unwrap();
    let (s, v) = send(&a, &silent_cookie, Method::PUT, "/api/v1/users/bob/role", Some(&role_change)).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("reauthentication_required")), "{v}");
    assert!(matches!(alice.sign_in(&console, true, None).await, Landing::LoginForm), "fresh=true must ask again");
    let Landing::Appliance(200, _, _, _) = alice.sign_in(&console, true, Some(("alice", "alice-pw"))).await else {
        panic!("alice's re-authentication failed")
    };
    let fresh_cookie = alice.session(&console).unwrap();
    assert_eq!(session_of(&a, &silent_cookie).await.0, 401, "re-authenticating replaced the browser's session");
    let (s, v) = send(&a, &fresh_cookie, Method::PUT, "/api/v1/users/bob/role", Some(&role_change)).await;
    assert!(s == 200 || s == 202, "{s} {v}");

    // Logout ends the session here and points the browser at the provider's logout.
    let (s, v) = send(&a, &fresh_cookie, Method::POST, "/api/v1/auth/logout", Some(&json!({}))).await;
    assert_eq!(s, 200, "{v}");
    let idp_logout = v["idp_logout_url"].as_str().unwrap();
    assert!(idp_logout.starts_with(&idp.issuer), "{idp_logout}");
    assert_eq!(session_of(&a, &fresh_cookie).await.0, 401);
    let page = alice.request(Method::GET, idp_logout, None).await.text().await.unwrap();
    let xsrf = page.split("name=\"xsrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("logout form");
    let confirm = format!("{}/session/end/confirm", idp.issuer);
    let resp = alice.request(Method::POST, &confirm, Some(&[("xsrf", xsrf), ("logout", "yes")])).await;
    assert_eq!(resp.headers()["location"].to_str().unwrap(), format!("{console}/"));
    assert!(
        matches!(alice.sign_in(&console, false, None).await, Landing::LoginForm),
        "the provider's session ended too"
    );

    // An admin ends an SSO person's sessions like anyone's.
    let admin = a.api();
    let (s, v, _) = admin.send(Method::DELETE, "/api/v1/users/sso:dave/sessions", None, &[]).await;
    assert_eq!((s, v["sessions_ended"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(session_of(&a, &dave_cookie).await.0, 401);

    // Local accounts keep working when the provider is away.
    drop(idp);
    let (s, v, _) = crate::harness::Console::try_login(&a.api(), "bob", &bob.password, None).await;
    assert_eq!(s, 200, "{v}");

    // Accountable: SSO logins and the refusal audited, the refused name
    // only as a pseudonym, the client secret nowhere.
    let records = a.api().audit_log().await;
    let sso_logins: Vec<&Value> = records
        .iter()
        .filter(|r| r["event_type"] == "auth.login" && r["metadata"]["details"]["via"] == "sso")
        .collect();
    assert!(sso_logins.len() >= 4, "{sso_logins:?}");
    assert!(sso_logins.iter().any(|r| r["actor"]["id"] == "sso:dave" && r["actor"]["roles"][0] == "developer"));
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["event_type"] == "auth.login_failed" && r["metadata"]["details"]["reason"] == "no_role")
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["resource"]["id"].as_str().unwrap().starts_with("hmac:"));
    let everything = format!("{records:?}{}", String::from_utf8_lossy(&a.logs()));
    assert!(!everything.contains("outsider7"), "the refused name appears in clear");
    assert!(!everything.contains(CLIENT_SECRET));
    // The stolen code's refusal is audited too; the replayed callback (no
    // sign-in of that state is under way any more) is not.
    let stolen = records.iter().filter(|r| {
        r["event_type"] == "auth.login_failed"
            && r["metadata"]["details"]["why"].as_str().unwrap_or("").contains("another browser")
    });
    assert_eq!(stolen.count(), 1);
    assert_eq!(count_events(&records, "auth.login_failed"), 2);
    assert_eq!(a.api().get("/api/v1/audit/verify").await.1["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sso_admin_gives_the_appliances_own_second_factor_unless_the_provider_vouches_for_one() {
    let mut a = Appliance::start_logging(vec![]);
    let people = json!({
        // A password only: the provider vouches for no second factor.
        "erin": {"password": "erin-pw", "groups": ["tether-admins"], "amr": ["pwd"]},
        // The level the site names as multi-factor.
        "frank": {"password": "frank-pw", "groups": ["tether-admins"], "acr": "urn:site:mfa"},
        "dave": {"password": "dave-pw", "groups": ["tether-developers"]},
    });
    let idp = Idp::start(a.dir.path(), &a.console, people);
    a.stop();
    configure_sso(&a, &idp, r#"mfa_acr_values = ["urn:site:mfa"]"#);
    a.restart();
    let console = a.console.clone();
    let sign_in = |name: &'static str, password: &'static str| {
        let (ca, idp, console) = (a.ca_pem.clone(), &idp, console.clone());
        async move {
            let mut browser = Browser::new(&ca, idp);
            let Landing::Appliance(200, _, _, _) = browser.sign_in(&console, false, Some((name, password))).await
            else {
                panic!("{name}'s sign-in failed")
            };
            browser.session(&console).unwrap()
        }
    };

    // erin's session may do nothing until she enrolls the appliance's TOTP.
    let erin = sign_in("erin", "erin-pw").await;
    let (_, me) = session_of(&a, &erin).await;
    assert_eq!(
        (&me["set_up"], &me["second_factor_pending"], &me["user"]["second_factor"]),
        (&json!(false), &json!(true), &json!(false)),
        "{me}"
    );
    let (s, v) = send(&a, &erin, Method::GET, "/api/v1/tasks", None).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("account_setup_required")), "{v}");
    let (s, v) = send(&a, &erin, Method::POST, "/api/v1/auth/second-factor", Some(&json!({"totp": "123456"}))).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("second_factor_not_enrolled")), "{v}");
    let (s, setup) = send(&a, &erin, Method::POST, "/api/v1/auth/totp", Some(&json!({}))).await;
    assert_eq!(s, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let code = totp_now(&secret);
    let (s, codes) = send(&a, &erin, Method::POST, "/api/v1/auth/totp/confirm", Some(&json!({"code": code}))).await;
    assert_eq!(s, 200, "{codes}");
    let recovery = codes["recovery_codes"][0].as_str().unwrap().to_owned();
    assert_eq!(send(&a, &erin, Method::GET, "/api/v1/tasks", None).await.0, 200, "enrolling gave the second factor");

    // Her next sign-in waits for it again; a wrong code is refused, her
    // recovery code (or a TOTP code) opens the session.
    let erin = sign_in("erin", "erin-pw").await;
    let (_, me) = session_of(&a, &erin).await;
    assert_eq!(
        (&me["set_up"], &me["second_factor_pending"], &me["user"]["second_factor"]),
        (&json!(false), &json!(true), &json!(true)),
        "{me}"
    );
    assert_eq!(send(&a, &erin, Method::GET, "/api/v1/users", None).await.0, 403);
    let (s, v) = send(&a, &erin, Method::POST, "/api/v1/auth/second-factor", Some(&json!({"totp": "000000"}))).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("invalid_credentials")), "{v}");
    let (s, v) =
        send(&a, &erin, Method::POST, "/api/v1/auth/second-factor", Some(&json!({"recovery_code": recovery}))).await;
    assert_eq!(s, 204, "{v}");
    let (_, me) = session_of(&a, &erin).await;
    assert_eq!((&me["set_up"], &me["second_factor_pending"]), (&json!(true), &json!(false)), "{me}");
    assert_eq!(send(&a, &erin, Method::GET, "/api/v1/users", None).await.0, 200);
    let (s, v) =
        send(&a, &erin, Method::POST, "/api/v1/auth/second-factor", Some(&json!({"recovery_code": recovery}))).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("second_factor_not_pending")), "{v}");

    // frank's provider names the site's multi-factor level; dave's role needs no second factor.
    for (name, password) in [("frank", "frank-pw"), ("dave", "dave-pw")] {
        let cookie = sign_in(name, password).await;
        let (_, me) = session_of(&a, &cookie).await;
        assert_eq!((&me["set_up"], &me["second_factor_pending"]), (&json!(true), &json!(false)), "{name}: {me}");
    }

    // The security check counts erin (the appliance's TOTP) and frank (the
    // provider's word) as having a second factor (it names only the local
    // admin this harness never set up).
    let (s, report) = a.api().get("/api/v1/security/checks").await;
    assert_eq!(s, 200, "{report}");
    let mfa = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "people.admin-without-mfa").unwrap();
    assert_eq!(mfa["evidence"], "1 without a second factor: admin", "{mfa}");

    // Audited: how each sign-in's second factor was settled, and erin's.
    let records = a.api().audit_log().await;
    let logins: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["event_type"] == "auth.login" && r["metadata"]["details"]["via"] == "sso")
        .map(|r| {
            let factor = r["metadata"]["details"]["second_factor"].as_str().unwrap().to_owned();
            (r["actor"]["id"].as_str().unwrap().to_owned(), factor)
        })
        .collect();
    let expected = [("sso:erin", "pending"), ("sso:erin", "pending"), ("sso:frank", "provider"), ("sso:dave", "none")];
    assert_eq!(logins, expected.map(|(p, f)| (p.to_owned(), f.to_owned())));
    assert_eq!(count_events(&records, "auth.second_factor"), 1);
    assert_eq!(count_events(&records, "user.second_factor_enrolled"), 1);
    let everything = format!("{records:?}{}", String::from_utf8_lossy(&a.logs()));
    assert!(!everything.contains(&secret) && !everything.contains(&recovery), "a second factor reached the records");
}
