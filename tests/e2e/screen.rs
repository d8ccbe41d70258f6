//! The machine's own console (the firmware image's tty1 and serial
//! console): `tether serve --status-file` keeps the setup code out of what
//! it prints (the journal keeps that) and in the status file, where
//! `tether screen` shows it with the address and the certificate to
//! expect; setup through the API with that code; the rescue login opens
//! a root shell only with the password set at setup. `tether health`, the
//! image's boot check, passes while the appliance answers (setup mode,
//! then serving) and fails once it stops.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::terminal::Terminal;
use crate::harness::{bin, eventually, pinned};

/// `tether screen` on pipes, driven line by line as a person at the console.
struct Screen {
    child: std::process::Child,
    console: Terminal,
}

impl Screen {
    fn start(data: &std::path::Path, status: &std::path::Path) -> Screen {
        let mut child = Command::new(bin())
            .args(["screen", "--data-dir"])
            .arg(data)
            .arg("--status-file")
            .arg(status)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let console = Terminal::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        Screen { child, console }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_setup_code_is_on_the_machines_screen_only_and_the_rescue_login_needs_the_password_set_at_setup() {
    let dir = tempfile::tempdir().unwrap();
    let (data, status, printed) = (dir.path().join("data"), dir.path().join("status.json"), dir.path().join("out"));
    let mut serve = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--status-file")
        .arg(&status)
        .stdout(std::fs::File::create(&printed).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    eventually("the status file in setup mode", Duration::from_secs(30), || async {
        read(&printed).contains("certificate") && read(&status).contains("\"setup\"")
    })
    .await;
    let shown: Value = serde_json::from_str(&read(&status)).unwrap();
    let code = shown["setup_code"].as_str().unwrap().to_owned();
    assert!(
        !read(&printed).contains(&code),
        "the code is not printed (the journal would keep it):\n{}",
        read(&printed)
    );
    assert!(read(&printed).contains("status screen"), "{}", read(&printed));

    // The screen shows the code, where to go and the certificate; with no
    // rescue password there is no login at all.
    let once = Command::new(bin())
        .args(["screen", "--once", "--data-dir"])
        .arg(&data)
        .arg("--status-file")
        .arg(&status)
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&once.stdout);
    let listen = shown["listen"].as_str().unwrap();
    let fingerprint = shown["certificate_fingerprint"].as_str().unwrap();
    for want in [format!("https://{listen}/"), format!("Setup code     {code}"), fingerprint.to_owned()] {
        assert!(screen.contains(&want), "{want} on the screen:\n{screen}");
    }
    assert!(screen.contains("There is no login at this console"), "{screen}");
    let health = || {
        let out = Command::new(bin()).arg("health").arg("--status-file").arg(&status).output();
        let out = out.unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (healthy, said) = health();
    assert!(healthy && said.contains("healthy: setup mode"), "{said}");
    let mut at_machine = Screen::start(&data, &status);
    at_machine.console.expect(&code);
    at_machine.console.type_line("");
    at_machine.console.expect("no rescue password was set");
    drop(at_machine);

    // First boot through the API, trusting the certificate the screen named
    // (and no other).
    let wrong = format!("sha256:{}", "0".repeat(64));
    let impostor = pinned::setup_api(&format!("https://{listen}"), &wrong);
    assert!(impostor.try_post("/api/v1/setup/code", &json!({"code": code})).await.is_err(), "another pin is refused");
    let setup = pinned::setup_api(&format!("https://{listen}"), fingerprint);
    let (s, refused) = setup
        .post(
            "/api/v1/setup",
            &json!({"code": code, "server_names": ["127.0.0.1"], "admin_password": "the first admin's passphrase",
                "rescue_password": "short", "unseal": {"shares": {"count": 3, "threshold": 2}}}),
        )
        .await;
    assert_eq!((s, refused["code"].as_str()), (422, Some("setup_refused")), "{refused}");
    let rescue = "the machine's rescue passphrase";
    let (s, done) = setup
        .post(
            "/api/v1/setup",
            &json!({"code": code, "server_names": ["127.0.0.1"], "admin_password": "the first admin's passphrase",
                "rescue_password": rescue, "unseal": {"shares": {"count": 3, "threshold": 2}}}),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    eventually("the screen's status says serving, sealed", Duration::from_secs(30), || async {
        read(&status).contains("\"serving\"") && read(&status).contains("sealed")
    })
    .await;
    let shown: Value = serde_json::from_str(&read(&status)).unwrap();
    assert_eq!(shown["ca_fingerprint"], done["ca_fingerprint"], "{shown}");
    assert!(shown.get("setup_code").is_none(), "the used code is gone from the screen: {shown}");
    let (healthy, said) = health();
    assert!(healthy && said.contains("healthy: serving") && said.contains("sealed"), "{said}");

    // The rescue login: a wrong password is refused; the right one opens a
    // root shell on this console, and what is typed next is the shell's.
    let mut at_machine = Screen::start(&data, &status);
    at_machine.console.expect("press Enter");
    at_machine.console.type_line("");
    at_machine.console.expect("Rescue password: ");
    at_machine.console.type_line("not the rescue password");
    at_machine.console.expect("That is not the rescue password.");
    at_machine.console.rescue_login(rescue);
    at_machine.console.type_line("echo rescued-$((6 * 7)) as $(id -u)");
    at_machine.console.expect(&format!("rescued-42 as {}", rustix::process::geteuid().as_raw()));
    at_machine.console.type_line("echo errors-show-here >&2");
    at_machine.console.expect("errors-show-here");
    at_machine.console.type_line("exit");
    assert!(at_machine.child.wait().unwrap().success());
    drop(at_machine);

    let everything = format!("{}{}", read(&printed), read(&data.join("rescue-login.json")));
    assert!(!everything.contains(rescue), "the rescue password is kept as a hash only");
    let pid = rustix::process::Pid::from_raw(serve.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(serve.wait().unwrap().success());
    let (healthy, said) = health();
    assert!(!healthy && said.contains("did not answer"), "a stopped appliance is not healthy: {said}");
}
