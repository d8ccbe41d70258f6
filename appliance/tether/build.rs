//! Stamps the binary with what it was built from, for `tether --version`:
//! the commit and the commit's own date — never the time of the build, so
//! two builds of one commit are the same bytes. `TETHER_COMMIT` and
//! `SOURCE_DATE_EPOCH` stand in where there is no git (a source tarball).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=TETHER_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit moves HEAD's ref (or HEAD itself, when detached).
    for path in ["HEAD", "refs/heads"].iter().filter_map(|p| git(&["rev-parse", "--git-path", p])) {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])) {
        println!("cargo:rerun-if-changed={branch}");
    }
    let commit = std::env::var("TETHER_COMMIT").ok().or_else(|| git(&["rev-parse", "HEAD"]));
    let date = std::env::var("SOURCE_DATE_EPOCH").ok().or_else(|| git(&["log", "-1", "--format=%ct"]));
    println!("cargo:rustc-env=TETHER_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
    println!("cargo:rustc-env=TETHER_COMMIT_EPOCH={}", date.unwrap_or_else(|| "0".into()));
}
