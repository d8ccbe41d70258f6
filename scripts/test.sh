#!/usr/bin/env bash
# The whole test suite, each part once:
#   1. unit and in-process tests (the API router without sockets), debug build;
#   2. the end-to-end suite (tests/e2e: the real binary, real TLS, real
#      clients) against the static release binary that ships
#      (scripts/build-release.sh), or against TETHER_BIN if it is set;
#      then the firmware image built around it and booted under qemu
#      (tests/e2e/image.rs);
#   3. the unit suite of the `fips` build (aws-lc-rs over the AWS-LC FIPS module);
#   4. the FIPS release binary: built, and the crypto end-to-end tests run
#      against it.
# Each release binary built here is built once more at another path and
# must come out the same bytes (scripts/check-reproducible.sh).
# Arguments, if any, go to the test runner instead (debug build only), e.g.
# `scripts/test.sh -E 'binary(e2e)'` or `scripts/test.sh -p tether-store`.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
# Installs Debian packages the tests need, if `probe` is not on PATH (or,
# an absolute path, does not exist).
need() {
    local probe=$1; shift
    case $probe in
        /*) [ -e "$probe" ] && return ;;
        *) command -v "$probe" >/dev/null && return ;;
    esac
    echo "installing $* (Debian packages) for the tests" >&2
    $sudo apt-get install -y -qq "$@" >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null; }
}
# The suites are selected with nextest's filter expressions.
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (crates.io) to run the tests" >&2
    cargo install --locked --quiet cargo-nextest
fi
run() { cargo nextest run --no-fail-fast "$@"; }

# The e2e suite scans the listeners with testssl.sh and handshakes with
# `openssl s_client`: real peers.
need testssl testssl.sh openssl
need openssl openssl
# The oversized-request test sends its head with curl, which reads nothing
# of the answer before it has sent the whole request.
need curl curl
# The single sign-on test signs in through a real OpenID provider,
# oidc-provider from the npm registry, run by Node.js.
need node nodejs npm
need npm npm
if [ ! -d tests/idp/node_modules ]; then
    echo "installing oidc-provider (npm) for the SSO test" >&2
    npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error >/dev/null
fi
# The manual pages `tether man` writes are rendered by groff, warnings on,
# and the bash completions run in bash (tests/e2e/scripting.rs).
need groff groff-base
# The shipped units are checked by systemd's own analyzer (verify, and
# security --offline=yes for their exposure).
need systemd-analyze systemd
# The console is tested in a real browser: Debian's chromium, driven by
# playwright-core from npm and checked by axe-core (tests/browser).
need chromium chromium
# The USB writer is tested on loop devices (tests/e2e/usb_writer.rs), one
# of them partitioned and mounted; the installer's unit tests partition a
# file with sfdisk.
need losetup mount
need partx util-linux
need sfdisk fdisk
need mkfs.ext4 e2fsprogs
if [ ! -d tests/browser/node_modules ]; then
    echo "installing playwright-core and @axe-core/playwright (npm) for the console test" >&2
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi
# ... and with the official openai client for Node.js, a 4.x release and
# the current one, from npm (tests/openai-node).
if [ ! -d tests/openai-node/node_modules ]; then
    echo "installing the openai clients for Node.js (npm) for the gateway tests" >&2
    npm ci --prefix tests/openai-node --no-audit --no-fund --loglevel=error >/dev/null
fi
# The LLM gateway tests drive it with the official Python clients from PyPI,
# pinned, in a virtual environment of their own; the metrics scrape is read
# by the official Prometheus client's OpenMetrics parser, and the A2A
# endpoint driven by the official A2A client (a2a-sdk), from the same.
if [ ! -x target/py/bin/python ] || ! target/py/bin/python -c 'import openai, ollama, prometheus_client, a2a' 2>/dev/null; then
    echo "installing the openai, ollama, prometheus-client and a2a-sdk Python packages (PyPI) for the tests" >&2
    python3 -m venv target/py
    target/py/bin/pip install --quiet --disable-pip-version-check openai==3.51.0 ollama==0.6.3 prometheus-client==0.26.0 \
        a2a-sdk==1.3.0
fi
if [ $# -gt 0 ]; then
    run --workspace "$@"
    exit
fi
echo "== unit and in-process tests (debug build)" >&2
run --workspace -E 'not binary(e2e)'
if [ -z "${TETHER_BIN:-}" ]; then
    TETHER_BIN="$PWD/$(scripts/build-release.sh)"
    # The release is reproducible: one more build of this commit, at
    # another path, must give the same bytes (two more if this checkout
    # has changes).
    echo "== the release build is reproducible" >&2
    scripts/check-reproducible.sh --against "$TETHER_BIN"
fi
echo "== the end-to-end suite against $TETHER_BIN" >&2
TETHER_BIN="$TETHER_BIN" run --workspace -E 'binary(e2e) and not test(/^image::/)'
# The firmware image, built from Debian packages (kept between runs in
# target/firmware-image/debs) around this release, booted under qemu: its
# first boot, then the update matrix (one VM at a time: two on two cores
# would blur the boot times the first test reports).
need mmdebstrap mmdebstrap
need mksquashfs squashfs-tools
need veritysetup cryptsetup-bin
need mkfs.vfat dosfstools
need mcopy mtools
need qemu-system-x86_64 qemu-system-x86
need /usr/share/OVMF/OVMF_CODE_4M.fd ovmf
echo "== the firmware image: built (firmware-image/build.sh), booted and updated under qemu" >&2
TETHER_IMAGE="$PWD/$(TETHER_BIN="$TETHER_BIN" firmware-image/build.sh | tail -1)"
TETHER_BIN="$TETHER_BIN" TETHER_IMAGE="$TETHER_IMAGE" run --workspace -E 'binary(e2e) and test(/^image::/)' --test-threads 1 \
    --success-output immediate
# Building the FIPS module takes cmake, Go and clang.
need cmake cmake golang-go clang libclang-dev
need go golang-go
need clang clang libclang-dev
echo "== the fips build's unit suite (FIPS mode on the validated module)" >&2
run --features fips --lib -p tether-base -p tether-store -p tether-domain -p tether-api -p tether
# The FIPS release binary ships too: reproducible like the other, and the
# crypto suite (the policy as TLS peers meet it) run against it.
echo "== the fips release build is reproducible" >&2
FIPS_BIN="$PWD/$(scripts/build-release.sh --fips)"
scripts/check-reproducible.sh --fips --against "$FIPS_BIN"
# (Not testssl's scan of FIPS mode: on the FIPS module its TLS 1.2 probe
# finds the console listener refusing TLS 1.2, while OpenSSL's client gets
# TLS 1.2 there and on the gateway; see BENCHMARKS.md.)
echo "== the crypto end-to-end tests against $FIPS_BIN" >&2
TETHER_BIN="$FIPS_BIN" run --workspace -E 'binary(e2e) and test(/^crypto::/) and not test(in_fips_mode_testssl_finds_no_x25519)'
