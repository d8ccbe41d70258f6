//! `tether serve` under systemd's supervision, with this test playing
//! systemd's side of `NOTIFY_SOCKET` (sd_notify(3)): READY=1 only once both
//! listeners answer, STATUS= following seal and unseal, WATCHDOG=1 pings
//! from the health loop that stop while it is stuck (the data disk frozen
//! with fsfreeze, so the store cannot commit) and come back after, and
//! STOPPING=1 on SIGTERM. (Real systemd runs the units in the firmware
//! image's boot test.)

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, Appliance, Proc, bin, eventually, free_port};

/// What the notify socket heard: when, and what.
type Heard = Arc<Mutex<Vec<(Instant, String)>>>;

/// An ext4 file system of its own, loop-mounted at `path` (needs root,
/// which CI has), so that it can be frozen; unmounted when dropped.
struct Disk {
    path: PathBuf,
}

impl Disk {
    fn mount(at: &Path) -> Disk {
        let image = at.with_extension("img");
        let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?} (needs root: CI has it)");
        run(Command::new("truncate").arg("-s").arg("256M").arg(&image));
        run(Command::new("mkfs.ext4").arg("-q").arg(&image));
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(at));
        Disk { path: at.to_owned() }
    }

    /// Freezes it: every write to it blocks until thawed (also when dropped).
    fn freeze(&self) -> Frozen<'_> {
        assert!(Command::new("fsfreeze").arg("-f").arg(&self.path).status().unwrap().success());
        Frozen(self)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

struct Frozen<'a>(&'a Disk);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0.path).status();
    }
}

/// When a message equal to `message` (or starting with it, for `STATUS=`)
/// was heard after `since`, if it was.
fn heard_after(heard: &Heard, since: Instant, message: &str) -> Option<Instant> {
    heard
        .lock()
        .unwrap()
        .iter()
        .find(|(at, m)| *at >= since && m.lines().any(|l| l.starts_with(message)))
        .map(|(at, _)| *at)
}

/// Plays systemd's side of a notify socket: keeps what arrives, and runs
/// `at_ready` (once) the moment the first `READY=1` does, before keeping it.
fn listen(socket: UnixDatagram, mut at_ready: impl FnMut() + Send + 'static) -> Heard {
    let heard: Heard = Arc::default();
    let kept = heard.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let mut ready = false;
        while let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !ready && message.lines().any(|l| l == "READY=1") {
                ready = true;
                at_ready();
            }
            kept.lock().unwrap().push((Instant::now(), message));
        }
    });
    heard
}

fn pings_between(heard: &Heard, from: Instant, to: Instant) -> usize {
    heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, m)| *at >= from && *at <= to && m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_once_both_listeners_answer_status_on_seal_and_unseal_and_no_pings_from_a_stuck_appliance()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = Disk::mount(&data);
    let key_file = dir.path().join("unseal.key");
    let init = Command::new(bin())
        .args(["init", "--non-interactive", "--json", "--unseal", "key-file", "--key-file"])
        .arg(&key_file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let init: Value = serde_json::from_slice(&init.stdout).unwrap();

    // systemd's side: a datagram socket, and what arrives on it.
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let (console, workers) = (free_port(), free_port());
    // At READY, both listeners must answer: looked at the moment it arrives.
    let answered_at_ready: Arc<Mutex<Option<(bool, bool)>>> = Arc::default();
    let answered = answered_at_ready.clone();
    let heard = listen(socket, move || {
        // An HTTP status (503 while sealed), not curl's 000 for no answer.
        let healthz = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
            .arg(format!("https://127.0.0.1:{console}/healthz"))
            .output()
            .is_ok_and(|o| !o.stdout.is_empty() && o.stdout != b"000");
        let gateway = TcpStream::connect(("127.0.0.1", workers)).is_ok();
        *answered.lock().unwrap() = Some((healthz, gateway));
    });
    let started = Instant::now();
    let mut serve = Child(
        Command::new(bin())
            .args(["serve", "--json", "--listen", &format!("127.0.0.1:{console}")])
            .args(["--worker-listen", &format!("127.0.0.1:{workers}"), "--data-dir"])
            .arg(&data)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000")
            .env("TETHER_DISK_RESERVE", "1m")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let within = Duration::from_secs(30);
    eventually("READY=1", within, || async { heard_after(&heard, started, "READY=1").is_some() }).await;
    assert_eq!(*answered_at_ready.lock().unwrap(), Some((true, true)), "both listeners answer at READY");
    let readies = heard.lock().unwrap().iter().filter(|(_, m)| m.lines().any(|l| l == "READY=1")).count();
    assert_eq!(readies, 1, "READY once");
    eventually("STATUS sealed", within, || async {
        heard_after(&heard, started, "STATUS=sealed — waiting for unseal").is_some()
    })
    .await;

    // Unsealed: serving; sealed again: says so.
    let ca = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let api = Api::new(&format!("https://127.0.0.1:{console}"), &ca, init["admin_token"].as_str().unwrap());
    let anyone = api.with_token(None);
    let unsealed = Instant::now();
    let key = std::fs::read_to_string(&key_file).unwrap();
    let (s, v) = anyone.post("/api/v1/sys/unseal", &json!({"key_file": key})).await;
    assert_eq!(s, 200, "{v}");
    eventually("STATUS serving", within, || async {
        heard_after(&heard, unsealed, "STATUS=serving, 0 workers online").is_some()
    })
    .await;
    let sealed = Instant::now();
    let (s, v) = api.post("/api/v1/sys/seal", &json!({})).await;
    assert_eq!(s, 200, "{v}");
    eventually("STATUS sealed again", within, || async {
        heard_after(&heard, sealed, "STATUS=sealed — waiting for unseal").is_some()
    })
    .await;

    // The watchdog: a ping each second (half of WATCHDOG_USEC) …
    eventually("three pings", within, || async { pings_between(&heard, sealed, Instant::now()) >= 3 }).await;
    // … none while the store cannot commit (the disk frozen) …
    {
        let _frozen = disk.freeze();
        let frozen_at = Instant::now();
        // The absence of pings over several ping intervals: a rule about
        // time passing, so real time passes here on purpose (as in the
        // silent-worker test). A ping already on its way may still land in
        // the first second.
        std::thread::sleep(Duration::from_secs(5));
        let quiet = pings_between(&heard, frozen_at + Duration::from_millis(1500), Instant::now());
        assert_eq!(quiet, 0, "no WATCHDOG=1 while the health loop is stuck on the frozen disk");
    }
    // … and again once it thaws.
    let thawed = Instant::now();
    eventually("pings after the thaw", within, || async { pings_between(&heard, thawed, Instant::now()) >= 2 }).await;

    let stopping = Instant::now();
    let pid = rustix::process::Pid::from_raw(serve.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(serve.0.wait().unwrap().success(), "a clean stop");
    assert!(heard_after(&heard, stopping, "STOPPING=1").is_some(), "STOPPING=1 on SIGTERM");
}

/// The appliance under test, killed if the test ends before it stops.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_tells_systemd_it_is_ready_whether_the_appliance_answers_and_that_it_stops() {
    let mut a = Appliance::start();
    let token = a.enrollment_token(None).await;
    let socket_path = a.dir.path().join("worker-notify.sock");
    let heard = listen(UnixDatagram::bind(&socket_path).unwrap(), || {});
    let mut cmd = a.worker_command("notified", Some(&token), &[], None);
    cmd.env("NOTIFY_SOCKET", &socket_path);
    let mut worker = Proc::spawn(cmd);
    let started = Instant::now();
    let within = Duration::from_secs(30);
    eventually("READY=1", within, || async { heard_after(&heard, started, "READY=1").is_some() }).await;
    assert!(heard_after(&heard, started, "STATUS=polling https://").is_some(), "{:?}", heard.lock().unwrap());

    // The appliance goes away and comes back: the status line follows.
    let stopped = Instant::now();
    assert!(a.stop().success());
    eventually("STATUS unreachable", within, || async {
        heard_after(&heard, stopped, "STATUS=cannot reach the appliance at https://").is_some()
    })
    .await;
    let back = Instant::now();
    a.restart();
    // A poll that finds work returns at once (an empty one holds for 30 s):
    // the status changes when a poll comes back.
    let task = a.api().submit("echo", json!({"after": "the restart"}), &[]).await;
    assert_eq!(a.api().wait(&task, 60).await["state"], "succeeded");
    eventually("STATUS polling again", within, || async {
        heard_after(&heard, back, "STATUS=polling https://").is_some()
    })
    .await;

    let stopping = Instant::now();
    assert!(worker.signal_term().success(), "a clean stop");
    // Sent before it exited; the listening thread may still be taking it in.
    eventually("STOPPING=1 on SIGTERM", within, || async { heard_after(&heard, stopping, "STOPPING=1").is_some() })
        .await;
    let readies = heard.lock().unwrap().iter().filter(|(_, m)| m.lines().any(|l| l == "READY=1")).count();
    assert_eq!(readies, 1, "READY once");
}

/// Setup mode (a first boot) may wait hours for its operator: systemd's
/// watchdog must hear from it all that time (booting the image found it
/// killed after `WatchdogSec=`).
#[tokio::test(flavor = "multi_thread")]
async fn setup_mode_is_ready_and_keeps_the_watchdog_fed() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let heard = listen(UnixDatagram::bind(&socket_path).unwrap(), || {});
    let started = Instant::now();
    let mut serve = Child(
        Command::new(bin())
            .args(["serve", "--json", "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let within = Duration::from_secs(30);
    eventually("READY=1", within, || async { heard_after(&heard, started, "READY=1").is_some() }).await;
    assert!(heard_after(&heard, started, "STATUS=setup mode").is_some(), "{:?}", heard.lock().unwrap());
    eventually("three pings in setup mode", within, || async { pings_between(&heard, started, Instant::now()) >= 3 })
        .await;
    let pid = rustix::process::Pid::from_raw(serve.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(serve.0.wait().unwrap().success(), "a clean stop");
}
