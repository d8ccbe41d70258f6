//! (k) Shipping: how long the release bundle takes to check and to install,
//! beside what bounds it. `tether bundle verify` reads the bundle once and
//! hashes every byte: its floor is hashing the same file with OpenSSL
//! (`openssl dgst -sha256`, SHA extensions where the CPU has them). An install
//! copies it and starts the release until `READY=1`; an upgrade also stops
//! nothing here (a scratch root), records, backs up the data, switches and
//! starts the new release on that data: their floor is the release's own
//! start until it serves (`tether serve` on that data, to its ready line).
//! Needs root (the installer makes users and owners), as the bench has.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, ensure};
use serde_json::{Value, json};

const UNITS: [&str; 4] = ["tether.service", "tether-worker.service", "tether.sysusers", "tether.tmpfiles"];

/// The measured rows for the table, and the JSON.
pub fn measure(tether: &Path, work: &Path, rounds: usize) -> anyhow::Result<(Vec<String>, Value)> {
    let scratch = tempfile::tempdir_in(work)?;
    let dir = scratch.path();
    let key = dir.join("release.key");
    run(Command::new(tether).args(["release", "keygen", "--out"]).arg(&key))?;
    let trust = dir.join("release.key.pub");
    let bundle = |version: &str| -> anyhow::Result<PathBuf> {
        let stage = dir.join(format!("stage-{version}"));
        std::fs::create_dir_all(stage.join("systemd"))?;
        std::fs::copy(tether, stage.join("tether"))?;
        let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
        for unit in UNITS {
            std::fs::copy(units.join(unit), stage.join("systemd").join(unit))?;
        }
        let out = dir.join(format!("tether-{version}.bundle"));
        let commit = format!("{:0>40}", version.replace('.', ""));
        run(Command::new(tether)
            .args(["release", "pack", "--dir"])
            .arg(&stage)
            .arg("--key")
            .arg(&key)
            .arg("--out")
            .arg(&out)
            .args(["--release-version", version, "--min-version", "0.0.1", "--commit", &commit])
            .args(["--built", "2026-12-04T00:00:00Z"]))?;
        Ok(out)
    };
    let first = bundle("0.0.1")?;
    let bytes = std::fs::metadata(&first)?.len();

    let (mut verify, mut openssl) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(5) {
        verify.push(timed(Command::new(tether).args(["bundle", "verify"]).arg(&first).arg("--trust").arg(&trust))?);
        openssl.push(timed(Command::new("openssl").args(["dgst", "-sha256"]).arg(&first))?);
    }

    // Installs and upgrades into scratch roots, each against the release's
    // own start on the same data.
    let (mut installs, mut upgrades, mut starts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(3) {
        let root = dir.join(format!("root-{round}"));
        std::fs::create_dir_all(&root)?;
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let install = |bundle: &Path, upgrade: bool| {
            let mut cmd = Command::new(tether);
            cmd.arg("install").arg(bundle).arg("--root").arg(&root).arg("--trust").arg(&trust);
            if upgrade {
                cmd.arg("--upgrade");
            }
            timed(&mut cmd)
        };
        installs.push(install(&first, false)?);
        let data = root.join("var/lib/tether");
        std::fs::remove_dir(&data)?;
        run(Command::new(tether).args(["init", "--non-interactive", "--json", "--data-dir"]).arg(&data))?;
        starts.push(time_to_ready(tether, &data)?);
        upgrades.push(install(&bundle(&format!("0.0.{}", round + 2))?, true)?);
    }
    let (v, s) = (crate::median(&verify), crate::median(&openssl));
    let (i, u, st) = (crate::median(&installs), crate::median(&upgrades), crate::median(&starts));
    let mib = bytes as f64 / f64::from(1 << 20);
    let rows = vec![
        format!(
            "| (k) `tether bundle verify` of a {mib:.1} MiB release bundle, median ms | {v:.0} ({:.0} MiB/s) | `openssl dgst -sha256` of it {s:.0} ({:.0} MiB/s) | {:.2}× | — |",
            mib / (v / 1000.0),
            mib / (s / 1000.0),
            v / s
        ),
        format!(
            "| (k) `tether install` into an empty root (verify, copy, users, units, start until READY, stop), median ms | {i:.0} | the release's own start to its ready line {st:.0} | {:.1}× | — |",
            i / st
        ),
        format!(
            "| (k) `tether install --upgrade` over an initialised data directory (verify, copy, record, back up, switch, start on the data until READY, stop, record), median ms | {u:.0} | the same start {st:.0} | {:.1}× | — |",
            u / st
        ),
    ];
    let report = json!({"bundle_bytes": bytes, "verify_ms": verify, "openssl_sha256_ms": openssl,
        "install_ms": installs, "upgrade_ms": upgrades, "serve_start_ms": starts});
    Ok((rows, report))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Milliseconds `cmd` takes, run to its end (it must succeed).
fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("{cmd:?}"))?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    ensure!(status.success(), "{cmd:?} failed");
    Ok(ms)
}

/// Milliseconds from starting `tether serve` on `data` to its ready line.
fn time_to_ready(tether: &Path, data: &Path) -> anyhow::Result<f64> {
    use std::io::BufRead;
    let start = Instant::now();
    let mut child = Command::new(tether)
        .args(["serve", "--json", "--listen", "127.0.0.1:0", "--worker-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let ready = std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.contains("\"ready\""));
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let _ = child.kill();
    let _ = child.wait();
    ensure!(ready, "serve did not get ready");
    Ok(ms)
}
