//! Starts the real `tether` binary as users do and talks to it over TLS.
//!
//! Readiness comes from the processes themselves (`serve --json` prints a
//! ready line; `worker --json` prints events), never from sleeping.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod clients;
pub mod pinned;
pub mod terminal;
pub use clients::{Api, Console, Person, manual_worker, totp_now};

/// The repository's root (the suite is built as a test of `appliance/tether`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary under test: `TETHER_BIN` (e.g. the release build) or the one cargo built.
pub fn bin() -> PathBuf {
    std::env::var_os("TETHER_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tether")))
}

/// Whether the binary under test is the FIPS build (as `tether --version` says).
pub fn fips_build() -> bool {
    let out = Command::new(bin()).arg("--version").output().expect("run tether --version");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.split_whitespace().eq(["fips", "yes"]))
}

/// `dir` and everything under it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            out.extend(walk(&entry.unwrap().path()));
        }
    }
    out
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    pub fn spawn(cmd: Command) -> Proc {
        Proc::spawn_logging(cmd, None)
    }

    /// Like [`Proc::spawn`], with stderr (the logs) appended to `log` if given.
    pub fn spawn_logging(mut cmd: Command, log: Option<&std::path::Path>) -> Proc {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the log file"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn tether");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, seen: Vec::new() }
    }

    /// Waits for a JSON line matching `want`. Lines seen earlier count too,
    /// even one an earlier call returned: to wait for a second event of a
    /// kind, match on what tells it apart (a task id, an attempt).
    pub fn expect(&mut self, what: &str, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let parse = |l: &str| serde_json::from_str::<Value>(l).ok();
        if let Some(v) = self.seen.iter().filter_map(|l| parse(l)).find(|v| want(v)) {
            return v;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(v) = parse(&line).filter(|v| want(v)) {
                        return v;
                    }
                }
                Err(_) => panic!("timed out after {timeout:?} waiting for {what}; saw {:?}", self.seen),
            }
        }
    }

    pub fn expect_event(&mut self, event: &str, timeout: Duration) -> Value {
        self.expect(event, timeout, |v| v["event"] == event)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (a name `kill` knows, e.g. `HUP`) without waiting.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal}");
    }

    pub fn signal_term(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Settings that keep tests fast: short leases and backoffs, and failure
/// tallies that end after a second (so their counts are written soon, and a
/// test's many refused requests stay under the per-window budget).
pub fn fast_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TETHER_LEASE", "3s"),
        ("TETHER_RETRY_BACKOFF", "100ms"),
        ("TETHER_RETRY_BACKOFF_MAX", "1s"),
        ("TETHER_AUDIT_FAILURE_WINDOW", "1s"),
    ]
}

/// A running appliance in its own temporary data directory.
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub proc: Option<Proc>,
    pub console: String,
    pub worker_gateway: String,
    pub admin_token: String,
    pub ca_pem: String,
    /// What `tether init --json` printed (unseal shares included).
    pub init: Value,
    env: Vec<(&'static str, &'static str)>,
    /// Set: `serve` unseals itself from this key file at start.
    unseal_key_file: Option<PathBuf>,
    /// Set: the appliance's and workers' logs go to files in `dir` (see [`Appliance::logs`]).
    pub capture_logs: bool,
    /// Set: `serve` runs as systemd would run it (see [`Appliance::start_confined`]).
    confined: bool,
    /// Set: `serve --dev` (see [`Appliance::start_dev`]).
    dev: bool,
}

/// The unprivileged user a confined appliance runs as (`nobody`).
const CONFINED_UID: u32 = 65534;

impl Appliance {
    pub fn start() -> Appliance {
        Appliance::start_with(fast_env())
    }

    /// Unseals itself at start from a key file outside the data directory.
    pub fn start_with(env: Vec<(&'static str, &'static str)>) -> Appliance {
        Appliance::start_with_key_file(&[], env, false)
    }

    /// Like [`Appliance::start_with`], with every process's logs captured to files.
    pub fn start_logging(env: Vec<(&'static str, &'static str)>) -> Appliance {
        Appliance::start_with_key_file(&[], env, true)
    }

    /// Like [`Appliance::start`], initialised with `tether init --fips`.
    pub fn start_fips() -> Appliance {
        Appliance::start_with_key_file(&["--fips"], fast_env(), false)
    }

    /// Like [`Appliance::start_with`], with the data directory on a tmpfs
    /// of `mib` MiB mounted for the test (so that it can fill its disk).
    /// Mounting needs root, which CI has. Keep the returned mount until the
    /// appliance is stopped.
    pub fn start_on_tmpfs(mib: u32, env: Vec<(&'static str, &'static str)>) -> (Appliance, Tmpfs) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
            .arg(&data)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs the suite as root)");
        let mount = Tmpfs(data);
        (Appliance::start_in(dir, &[], env, false), mount)
    }

    fn start_with_key_file(
        init_args: &[&str],
        env: Vec<(&'static str, &'static str)>,
        capture_logs: bool,
    ) -> Appliance {
        Appliance::start_in(tempfile::tempdir().unwrap(), init_args, env, capture_logs)
    }

    fn start_in(
        dir: tempfile::TempDir,
        init_args: &[&str],
        env: Vec<(&'static str, &'static str)>,
        capture_logs: bool,
    ) -> Appliance {
        let key_file = dir.path().join("unseal.key");
        let key_arg = key_file.to_str().unwrap().to_owned();
        let mut args = vec!["--unseal", "key-file", "--key-file", &key_arg];
        args.extend_from_slice(init_args);
        let mut a = Appliance::init(dir, &args, env);
        a.unseal_key_file = Some(key_file);
        a.capture_logs = capture_logs;
        a.serve("127.0.0.1:0", "127.0.0.1:0");
        a
    }

    /// Starts sealed like [`Appliance::start_sealed`], run the way the
    /// shipped unit runs it: with no new privileges and, when the suite runs
    /// as root (CI), as an unprivileged user owning the data directory, from
    /// a copy of the binary that user can reach.
    pub fn start_confined(init_args: &[&str], env: Vec<(&'static str, &'static str)>) -> Appliance {
        let mut a = Appliance::init(tempfile::tempdir().unwrap(), init_args, env);
        let copy = a.dir.path().join("tether");
        std::fs::copy(bin(), &copy).expect("copy the binary");
        if rustix::process::geteuid().is_root() {
            let owner = Some(rustix::process::Uid::from_raw(CONFINED_UID));
            let group = Some(rustix::process::Gid::from_raw(CONFINED_UID));
            for entry in walk(a.dir.path()) {
                rustix::fs::chown(&entry, owner, group).expect("chown the data directory");
            }
        }
        a.confined = true;
        a.serve("127.0.0.1:0", "127.0.0.1:0");
        a
    }

    /// An appliance in `dir` with nothing running and nothing known yet.
    fn blank(dir: tempfile::TempDir, env: Vec<(&'static str, &'static str)>) -> Appliance {
        Appliance {
            dir,
            proc: None,
            console: String::new(),
            worker_gateway: String::new(),
            admin_token: String::new(),
            ca_pem: String::new(),
            init: Value::Null,
            env,
            unseal_key_file: None,
            capture_logs: false,
            confined: false,
            dev: false,
        }
    }

    /// `tether serve --dev` on a new data directory: it initialises itself,
    /// keeps its unseal key and admin token in the data directory, and
    /// unseals itself.
    pub fn start_dev(env: Vec<(&'static str, &'static str)>) -> Appliance {
        let mut a = Appliance { dev: true, ..Appliance::blank(tempfile::tempdir().unwrap(), env) };
        let ready = a.serve("127.0.0.1:0", "127.0.0.1:0");
        a.admin_token = ready["admin_token"].as_str().expect("--dev prints the admin token").to_owned();
        a.ca_pem = std::fs::read_to_string(a.ca_file()).unwrap();
        a
    }

    /// Starts sealed, initialised with `init_args` (e.g. `--unseal shares`).
    pub fn start_sealed(init_args: &[&str], env: Vec<(&'static str, &'static str)>) -> Appliance {
        let mut a = Appliance::init(tempfile::tempdir().unwrap(), init_args, env);
        a.serve("127.0.0.1:0", "127.0.0.1:0");
        a
    }

    fn init(dir: tempfile::TempDir, init_args: &[&str], env: Vec<(&'static str, &'static str)>) -> Appliance {
        let data = dir.path().join("data");
        let out = Command::new(bin())
            .args(["init", "--non-interactive", "--json"])
            .args(init_args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run tether init");
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        let init: Value = serde_json::from_slice(&out.stdout).expect("init --json prints JSON");
        let ca_pem = std::fs::read_to_string(init["ca_file"].as_str().unwrap()).unwrap();
        Appliance {
            admin_token: init["admin_token"].as_str().unwrap().to_owned(),
            ca_pem,
            init,
            ..Appliance::blank(dir, env)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("ca.pem")
    }

    /// `tether serve` on a data directory never set up: setup mode.
    /// Returns its `setup` line (the code, the certificate's fingerprint);
    /// once the wizard is done, [`Appliance::wait_ready`] takes the appliance on.
    pub fn start_setup(env: Vec<(&'static str, &'static str)>) -> (Appliance, Value) {
        let mut a = Appliance::blank(tempfile::tempdir().unwrap(), env);
        let setup = a.serve_until("127.0.0.1:0", "127.0.0.1:0", "setup");
        a.console = format!("https://{}", setup["listen"].as_str().unwrap());
        (a, setup)
    }

    /// After setup mode: waits for the ready line of the appliance proper.
    pub fn wait_ready(&mut self) -> Value {
        let ready = self.proc.as_mut().expect("running").expect_event("ready", Duration::from_secs(30));
        self.worker_gateway = format!("https://{}", ready["worker_listen"].as_str().unwrap());
        self.ca_pem = std::fs::read_to_string(self.ca_file()).unwrap();
        ready
    }

    /// Starts `serve` and waits for its ready line, which it returns.
    fn serve(&mut self, listen: &str, worker_listen: &str) -> Value {
        let ready = self.serve_until(listen, worker_listen, "ready");
        self.console = format!("https://{}", ready["listen"].as_str().unwrap());
        self.worker_gateway = format!("https://{}", ready["worker_listen"].as_str().unwrap());
        ready
    }

    /// Starts `serve` and waits for its first line of event `event`.
    fn serve_until(&mut self, listen: &str, worker_listen: &str, event: &str) -> Value {
        let mut cmd = if self.confined {
            let mut cmd = Command::new("setpriv");
            cmd.arg("--no-new-privs");
            if rustix::process::geteuid().is_root() {
                let id = CONFINED_UID.to_string();
                cmd.args(["--reuid", &id, "--regid", &id, "--clear-groups"]);
            }
            cmd.arg(self.dir.path().join("tether"));
            cmd
        } else {
            Command::new(bin())
        };
        cmd.args(["serve", "--json", "--listen", listen, "--worker-listen", worker_listen, "--data-dir"])
            .arg(self.data_dir())
            // Tests keep a small disk reserve (dozens of appliances share /tmp);
            // a test's own setting comes after and wins.
            .env("TETHER_DISK_RESERVE", "1m")
            .envs(self.env.iter().copied());
        if let Some(key_file) = &self.unseal_key_file {
            cmd.env("TETHER_UNSEAL_KEY_FILE", key_file);
        }
        if self.dev {
            cmd.arg("--dev");
        }
        let log = self.capture_logs.then(|| self.dir.path().join("serve.log"));
        let mut proc = Proc::spawn_logging(cmd, log.as_deref());
        let line = proc.expect_event(event, Duration::from_secs(30));
        self.proc = Some(proc);
        line
    }

    /// `tether restore BACKUP` into a new directory with this appliance's
    /// key file; starts it there (unsealed by the same key file).
    pub fn restore_into_new(&self, backup: &std::path::Path) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let out = self.restore(backup, &dir.path().join("data"), &[], &[]);
        assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
        Appliance::adopt(dir, &self.admin_token, self.unseal_key_file.clone(), self.env.clone())
    }

    /// Serves the data directory `dir/data` made some other way (a restore,
    /// an upgrade), unsealed by `unseal_key_file`.
    pub fn adopt(
        dir: tempfile::TempDir,
        admin_token: &str,
        unseal_key_file: Option<PathBuf>,
        env: Vec<(&'static str, &'static str)>,
    ) -> Appliance {
        let ca_pem = std::fs::read_to_string(dir.path().join("data/ca.pem")).unwrap();
        let mut a =
            Appliance { admin_token: admin_token.to_owned(), ca_pem, unseal_key_file, ..Appliance::blank(dir, env) };
        a.serve("127.0.0.1:0", "127.0.0.1:0");
        a
    }

    /// Runs `tether restore BACKUP --data-dir DATA --key-file …` with `args` and `env`.
    pub fn restore(
        &self,
        backup: &std::path::Path,
        data: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let key_file = self.unseal_key_file.as_ref().expect("made with a key file");
        Command::new(bin())
            .args(["restore", "--json"])
            .arg(backup)
            .arg("--data-dir")
            .arg(data)
            .arg("--key-file")
            .arg(key_file)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Restarts on the same ports (workers reconnect to where they were).
    pub fn restart(&mut self) {
        let listen = self.console.trim_start_matches("https://").to_owned();
        let worker = self.worker_gateway.trim_start_matches("https://").to_owned();
        self.serve(&listen, &worker);
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.proc.take().expect("running").signal_term()
    }

    /// Runs `tether serve` on this (stopped) data directory, expecting it to
    /// refuse to start; returns what it said on stderr.
    pub fn serve_refused(&self) -> String {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir())
            .envs(self.env.iter().copied());
        if let Some(key_file) = &self.unseal_key_file {
            cmd.env("TETHER_UNSEAL_KEY_FILE", key_file);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "serve started: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Unseals over the API with the key file the appliance was made with.
    pub async fn unseal_from_key_file(&self) {
        let text = std::fs::read_to_string(self.unseal_key_file.as_ref().expect("made with a key file")).unwrap();
        let (s, v) = self.api().with_token(None).post("/api/v1/sys/unseal", &json!({"key_file": text})).await;
        assert_eq!((s, &v["sealed"]), (200, &json!(false)), "{v}");
    }

    /// `tether ARGS` as a client of this appliance (TETHER_URL, TETHER_TOKEN
    /// as the admin, TETHER_CA_FILE).
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("TETHER_URL", &self.console)
            .env("TETHER_TOKEN", &self.admin_token)
            .env("TETHER_CA_FILE", self.ca_file());
        cmd
    }

    pub fn api(&self) -> Api {
        Api::new(&self.console, &self.ca_pem, &self.admin_token)
    }

    /// A security officer's bearer token: the first officer's account is
    /// made and set up, and makes a token of its own role.
    pub async fn officer_token(&self) -> String {
        let officer = self.person("officer", "security_officer").await;
        let (s, v) = officer.console.post("/api/v1/tokens", &json!({"role": "security_officer"})).await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Makes an account with `role` (through the admin token) and takes it
    /// through its first login: own password and, for admin and
    /// security_officer, TOTP. Returns the person, logged in.
    pub async fn person(&self, name: &str, role: &str) -> Person {
        let initial = format!("first-{name}-password");
        let (s, v) = self.api().post("/api/v1/users", &json!({"name": name, "role": role, "password": initial})).await;
        assert_eq!(s, 201, "{v}");
        self.first_login(name, &initial, role).await
    }

    /// Takes the account `name` (with the password someone else set)
    /// through its first login: its own password and, for admin and
    /// security_officer, TOTP. Returns the person, logged in.
    pub async fn first_login(&self, name: &str, initial: &str, role: &str) -> Person {
        let admin = self.api();
        let first = Console::login(&admin, name, initial, None).await;
        let password = format!("{name}-own-password-2026");
        let (s, v) = first.post("/api/v1/auth/password", &json!({"current": initial, "new": password})).await;
        assert_eq!(s, 204, "{v}");
        let mut person = Person {
            password,
            totp: None,
            last_step: std::cell::Cell::new(0),
            console: first.clone(),
            recovery_codes: Vec::new(),
        };
        if matches!(role, "admin" | "security_officer") {
            let (s, v) = first.post("/api/v1/auth/totp", &json!({})).await;
            assert_eq!(s, 200, "{v}");
            person.totp = Some(v["secret"].as_str().unwrap().to_owned());
            let code = person.next_code().unwrap();
            let (s, v) = first.post("/api/v1/auth/totp/confirm", &json!({"code": code})).await;
            assert_eq!(s, 200, "{v}");
            person.recovery_codes =
                v["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        }
        let (s, v) = first.get("/api/v1/auth/session").await;
        assert_eq!((s, v["set_up"].as_bool()), (200, Some(true)), "{v}");
        person
    }

    /// A fresh enrollment token from the API.
    pub async fn enrollment_token(&self, labels: Option<&[&str]>) -> String {
        let body = match labels {
            Some(l) => json!({"labels": l}),
            None => json!({}),
        };
        let (status, v) = self.api().post("/api/v1/workers/enrollment-tokens", &body).await;
        assert_eq!(status, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Enrolls and starts `tether worker`; returns once it is polling.
    /// Labels come from the enrollment token (a worker's own are not granted).
    pub async fn worker(&self, name: &str, labels: &[&str], config: Option<&str>) -> Proc {
        let token = self.enrollment_token((!labels.is_empty()).then_some(labels)).await;
        self.spawn_worker(name, Some(&token), labels, config)
    }

    /// Starts a worker that enrolled before, from its state directory alone.
    pub fn resume_worker(&self, name: &str, config: Option<&str>) -> Proc {
        self.spawn_worker(name, None, &[], config)
    }

    fn spawn_worker(&self, name: &str, token: Option<&str>, labels: &[&str], config: Option<&str>) -> Proc {
        let cmd = self.worker_command(name, token, labels, config);
        let log = self.capture_logs.then(|| self.dir.path().join(format!("worker-{name}.log")));
        let mut proc = Proc::spawn_logging(cmd, log.as_deref());
        proc.expect_event("ready", Duration::from_secs(30));
        proc
    }

    /// Where worker `name` keeps its key and certificate.
    pub fn worker_state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("worker-{name}"))
    }

    /// The `tether worker` command for worker `name`: enrolling with `token`
    /// if given (the broker and CA named), else resuming from its state
    /// directory alone.
    pub fn worker_command(&self, name: &str, token: Option<&str>, labels: &[&str], config: Option<&str>) -> Command {
        let state = self.worker_state_dir(name);
        let mut cmd = Command::new(bin());
        cmd.args(["worker", "--json", "--state-dir"]).arg(&state);
        if let Some(t) = token {
            cmd.args(["--broker", &self.worker_gateway, "--enroll-token", t, "--ca-file"]).arg(self.ca_file());
        }
        if !labels.is_empty() {
            cmd.arg("--labels").arg(labels.join(","));
        }
        if let Some(text) = config {
            let path = self.dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd
    }

    /// Every log file captured so far (with `capture_logs`), concatenated.
    pub fn logs(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                all.extend(std::fs::read(&path).unwrap());
            }
        }
        all
    }

    /// Runs `tether audit verify` (the appliance must be stopped).
    pub fn audit_verify(&self) -> (bool, Value) {
        let out = Command::new(bin())
            .args(["audit", "verify", "--json", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .unwrap();
        (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// Every audit record (the appliance must be stopped).
    pub fn audit_records(&self) -> Vec<Value> {
        let out = Command::new(bin()).args(["audit", "export", "--data-dir"]).arg(self.data_dir()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// A tmpfs mounted for a test; unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// How many of `records` are of `event_type`.
pub fn count_events(records: &[Value], event_type: &str) -> usize {
    records.iter().filter(|r| r["event_type"] == event_type).count()
}

/// How many failures of `event_type` the records stand for: failures anyone
/// can cause are tallied, one record for the first of a window and one
/// with the count (`repeated`) of the rest.
pub fn count_failures(records: &[Value], event_type: &str) -> u64 {
    records
        .iter()
        .filter(|r| r["event_type"] == event_type)
        .map(|r| match r["metadata"]["details"]["repeated"].as_str() {
            Some(n) => n.parse::<u64>().unwrap(),
            None => 1,
        })
        .sum()
}

/// A loopback port nobody listens on now (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `condition` holds, checking every 20 ms, for at most `timeout`.
/// For states the system reports only when asked (a parked poll, a count);
/// events the processes print are awaited with [`Proc::expect`] instead.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `cmd` with `input` on its stdin; returns what it printed.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
