//! The machine's own console (the firmware image's tty1 and serial
//! console): `tether serve --status-file` keeps the setup code out of what
//! it prints (the journal keeps that) and in the status file, where
//! `tether screen` shows it with the address and the certificate to
//! expect; setup through the API with that code; the rescue login opens
//! a root shell only with the password set at setup.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{bin, eventually, pinned};

/// `tether screen` on pipes, driven line by line as a person at the console.
struct Screen {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: mpsc::Receiver<String>,
    seen: String,
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
        let input = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut chunk = Vec::new();
            // Prompts end without a newline: pass on whatever arrives.
            while let Ok(buf) = reader.fill_buf() {
                if buf.is_empty() {
                    break;
                }
                chunk.extend_from_slice(buf);
                let n = buf.len();
                reader.consume(n);
                if tx.send(String::from_utf8_lossy(&chunk).into_owned()).is_err() {
                    break;
                }
                chunk.clear();
            }
        });
        Screen { child, input, output, seen: String::new() }
    }

    /// Waits until the console shows `text` (after what was awaited before).
    fn expect(&mut self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(more) => self.seen.push_str(&more),
                Err(_) => panic!("the console never showed {text:?}; it showed:\n{}", self.seen),
            }
        }
        let at = self.seen.find(text).unwrap() + text.len();
        self.seen.drain(..at);
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.input, "{line}").unwrap();
        self.input.flush().unwrap();
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
    let mut console = Screen::start(&data, &status);
    console.expect(&code);
    console.type_line("");
    console.expect("no rescue password was set");
    drop(console);

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

    // The rescue login: a wrong password is refused; the right one opens a
    // root shell on this console, and what is typed next is the shell's.
    let mut console = Screen::start(&data, &status);
    console.expect("press Enter");
    console.type_line("");
    console.expect("Rescue password: ");
    console.type_line("not the rescue password");
    console.expect("That is not the rescue password.");
    console.expect("press Enter");
    console.type_line("");
    console.expect("Rescue password: ");
    console.type_line(rescue);
    console.expect("Rescue shell");
    console.type_line("echo rescued-$((6 * 7)) as $(id -u)");
    console.expect(&format!("rescued-42 as {}", rustix::process::geteuid().as_raw()));
    console.type_line("exit");
    assert!(console.child.wait().unwrap().success());
    drop(console);

    let everything = format!("{}{}", read(&printed), read(&data.join("rescue-login.json")));
    assert!(!everything.contains(rescue), "the rescue password is kept as a hash only");
    let pid = rustix::process::Pid::from_raw(serve.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(serve.wait().unwrap().success());
}
