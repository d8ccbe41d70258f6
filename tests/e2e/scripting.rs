//! The command line and the logs as scripts and log shippers meet them:
//! bash completes the real command tree from `tether completions bash`;
//! `tether man` writes a page for every command that groff renders
//! without a warning; `serve` and `worker` with `--log-format json` write
//! nothing but JSON objects (timestamp, level, target, fields), one a line,
//! and none of them holds a password, a secret or a task's input; a CLI
//! given the wrong CA or a plain-HTTP address says so and what to do; a
//! failure has its exit code and, asked for JSON, is a problem document
//! that names the role needed or why a token was refused.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Appliance, Proc, bin};

fn tether(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(out.status.success(), "tether {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// What bash's completion offers for `words` (the last one being typed).
fn bash_completes(script: &std::path::Path, words: &str) -> Vec<String> {
    let cword = words.split(' ').count() - 1;
    let run = format!(
        "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
         _tether tether \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").args(["--norc", "-c", &run]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn bash_completes_commands_and_flags_and_every_command_has_a_manual_page() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tether.bash");
    std::fs::write(&script, tether(&["completions", "bash"])).unwrap();
    assert_eq!(bash_completes(&script, "tether ta"), ["task"]);
    let flags = bash_completes(&script, "tether serve --log-f");
    assert!(flags.contains(&"--log-format".to_owned()) && flags.contains(&"--log-file".to_owned()), "{flags:?}");
    for shell in ["zsh", "fish"] {
        let script = tether(&["completions", shell]);
        assert!(script.contains("security-check") && script.contains("log-format"), "{shell}:\n{script}");
    }

    let pages = dir.path().join("man");
    tether(&["man", "--out-dir", pages.to_str().unwrap()]);
    for page in ["tether.1", "tether-serve.1", "tether-task-submit.1", "tether-image-install.1"] {
        let path = pages.join(page);
        assert!(path.exists(), "{page} missing");
        let out =
            Command::new("groff").args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"]).arg(&path).output().expect("groff");
        let (text, warnings) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && warnings.is_empty(), "{page}: {warnings}");
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{page}:\n{text}");
    }
    let main = tether(&["man"]);
    assert!(main.contains(".TH tether 1") && main.contains("security\\-check"), "{main}");
}

fn canary(what: &str) -> String {
    format!("canary{what}{:016x}", fastrand::u64(..))
}

/// Every line of `log` is a JSON object with the fields a shipper keys on.
fn json_lines(log: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(log.to_vec()).expect("the log is UTF-8");
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(v.get(key).is_some(), "no {key}: {line}");
            }
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_a_line_and_hold_no_secret() {
    let mut a = Appliance::start_logging(vec![("TETHER_LOG_FORMAT", "json"), ("TETHER_LOG", "debug")]);
    let log = a.dir.path().join("worker-json.log");
    let token = a.enrollment_token(None).await;
    let mut cmd = a.worker_command("json", Some(&token), &[], None);
    cmd.args(["--log-format", "json"]).env("TETHER_LOG", "debug");
    let mut worker = Proc::spawn_logging(cmd, Some(&log));
    worker.expect_event("ready", Duration::from_secs(30));
    let api = a.api();

    let (input, secret, password) = (canary("input"), canary("secret"), canary("password"));
    let id = api.submit("echo", json!({"text": input}), &[]).await;
    assert_eq!(api.wait(&id, 30).await["state"], "succeeded");
    let body = json!({"value": secret, "policy": {"kinds": ["echo"]}});
    let (s, v, _) = api.send(reqwest::Method::PUT, "/api/v1/secrets/canary", Some(&body), &[]).await;
    assert_eq!(s, 201, "{v}");
    let login = json!({"username": "admin", "password": password});
    let (s, _) = api.with_token(None).post("/api/v1/auth/login", &login).await;
    assert_eq!(s, 401);
    drop(worker);
    assert!(a.stop().success());

    for name in ["serve.log", "worker-json.log"] {
        let lines = json_lines(&std::fs::read(a.dir.path().join(name)).unwrap());
        assert!(lines.iter().any(|v| v["level"] == "DEBUG"), "{name}: TETHER_LOG=debug reached the JSON log");
    }
    let logs = a.logs();
    let text = String::from_utf8_lossy(&logs);
    for c in [&input, &secret, &password] {
        assert!(!text.contains(c.as_str()), "{c} in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_says_what_is_wrong_with_the_address_or_the_ca_it_was_given() {
    let a = Appliance::start();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=another appliance", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let said = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let untrusted = said(a.cli(&["status"]).env("TETHER_CA_FILE", &other_ca));
    assert!(untrusted.contains("certificate not trusted: ") && untrusted.contains("pass --ca-file or TETHER_CA_FILE"));
    // The flag before the command does what the variable does, and wins.
    let flagged = a.cli(&["--ca-file", other_ca.to_str().unwrap(), "status"]).output().unwrap();
    assert_eq!(flagged.status.code(), Some(4), "{}", String::from_utf8_lossy(&flagged.stderr));
    let right =
        a.cli(&["--ca-file", a.ca_file().to_str().unwrap(), "status"]).env("TETHER_CA_FILE", &other_ca).output();
    assert!(right.unwrap().status.success(), "--ca-file over TETHER_CA_FILE");
    let host = a.console.trim_start_matches("https://").to_owned();
    let http = said(a.cli(&["status"]).env("TETHER_URL", format!("http://{host}")));
    assert!(http.contains(&format!("the appliance speaks HTTPS only; use https://{host}")), "{http}");
    let bare = said(a.cli(&["status"]).env("TETHER_URL", &host));
    assert!(bare.contains("has no scheme") && bare.contains(&format!("use https://{host}")), "{bare}");
}

/// The problem+json a failed `tether --json …` wrote on stderr, and its exit code.
fn failed_with_json(cmd: &mut Command) -> (i32, Value) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let problem =
        serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stderr}"));
    (out.status.code().unwrap(), problem)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_has_its_exit_code_a_problem_in_json_and_says_which_role_or_why_the_token_was_refused() {
    let a = Appliance::start();
    let (s, auditor) = a.api().post("/api/v1/tokens", &json!({"role": "auditor"})).await;
    assert_eq!(s, 201, "{auditor}");
    let token = auditor["token"].as_str().unwrap();

    // A role that may not: 403 naming the roles that may, exit 6.
    let (code, problem) = failed_with_json(a.cli(&["--json", "task", "list"]).env("TETHER_TOKEN", token));
    assert_eq!((code, problem["status"].as_u64(), problem["exit_code"].as_i64()), (6, Some(403), Some(6)), "{problem}");
    assert_eq!(
        (problem["code"].as_str(), problem["type"].as_str()),
        (Some("forbidden"), Some("urn:tether:problem:forbidden"))
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("your role (auditor)") && detail.contains("admin") && detail.contains("developer"),
        "{detail}"
    );
    // A command's own --json asks for the same.
    let (code, own) = failed_with_json(a.cli(&["task", "list", "--json"]).env("TETHER_TOKEN", token));
    assert_eq!((code, &own["code"]), (6, &json!("forbidden")), "{own}");

    // Revoked, and a token never issued: both 401 (exit 5), told apart.
    let id = auditor["id"].as_str().unwrap();
    let revoked = a.cli(&["token", "revoke", id]).output().unwrap();
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let out = a.cli(&["task", "list"]).env("TETHER_TOKEN", token).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(said.contains("this token was revoked") && said.contains("code unauthenticated"), "{said}");
    let mut never = token.to_owned();
    let last = never.pop().unwrap();
    never.push(if last == 'a' { 'b' } else { 'a' });
    let (code, problem) = failed_with_json(a.cli(&["--json", "task", "list"]).env("TETHER_TOKEN", &never));
    assert_eq!(code, 5, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("not known to this appliance"), "{problem}");
    assert!(!problem.to_string().contains(token), "the token is not repeated");

    // Nothing there, and a local failure.
    let (code, problem) = failed_with_json(&mut a.cli(&["--json", "--url", "https://127.0.0.1:1", "status"]));
    assert_eq!((code, problem["code"].as_str()), (3, Some("unreachable")), "{problem}");
    let (code, problem) = failed_with_json(a.cli(&["--json", "status"]).env_remove("TETHER_TOKEN"));
    assert_eq!((code, problem["code"].as_str()), (1, Some("failed")), "{problem}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tether_login_trades_credentials_and_a_code_for_a_short_lived_token_kept_where_only_its_owner_reads_it() {
    use std::os::unix::fs::PermissionsExt;
    let a = Appliance::start();
    let ada = a.person("ada", "admin").await;
    let home = tempfile::tempdir().unwrap();
    let password_file = home.path().join("password");
    std::fs::write(&password_file, &ada.password).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // As a person's shell has it: the address and the CA, no token.
    let as_ada = |args: &[&str]| {
        let mut cmd = a.cli(args);
        cmd.env_remove("TETHER_TOKEN").env("HOME", home.path()).env_remove("XDG_CONFIG_HOME");
        cmd
    };
    let password = password_file.to_str().unwrap();
    let sessions = || async { a.api().get("/api/v1/sessions?user=ada").await.1.as_array().map_or(0, Vec::len) };
    let sessions_before = sessions().await;

    // An admin needs the second factor: without a terminal, it says how to give it.
    let out = as_ada(&["login", "--user", "ada", "--password-file", password]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("pass --totp CODE"), "{said}");
    let out = as_ada(&["login", "--user", "ada", "--password-file", password, "--totp", &ada.next_code().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let token_file = home.path().join(".config/tether/token");
    assert!(said.contains("signed in as ada (admin)") && said.contains(token_file.to_str().unwrap()), "{said}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&token_file), mode(token_file.parent().unwrap())), (0o600, 0o700));
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(!said.contains(token.trim()), "the token is not printed");

    // The other commands use it; it is a token of her role that expires in 12 h.
    let listed = as_ada(&["token", "list", "--json"]).output().unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let tokens: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let mine: Vec<&Value> = tokens.iter().filter(|t| t["owner"] == "ada").collect();
    assert_eq!(mine.len(), 1, "{tokens:?}");
    assert_eq!(mine[0]["role"], "admin");
    let lifetime = time::OffsetDateTime::parse(
        mine[0]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
        - time::OffsetDateTime::parse(
            mine[0]["created_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
    assert_eq!(lifetime.whole_hours(), 12, "{:?}", mine[0]);
    // The sign-in's session was ended: only the token stays.
    assert_eq!(sessions().await, sessions_before, "the sign-in's session was ended");

    // A token file others can read is refused, saying how to fix it.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = as_ada(&["token", "list"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("can be read by group or others") && said.contains("chmod 600"),
        "{said}"
    );
    // A wrong password: 401, exit 5, nothing written.
    std::fs::remove_file(&token_file).unwrap();
    std::fs::write(&password_file, "not her password").unwrap();
    let out = as_ada(&["login", "--user", "ada", "--password-file", password, "--totp", "000000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!token_file.exists());
}
