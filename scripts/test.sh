#!/usr/bin/env bash
# The whole test suite: unit, route and end-to-end tests (the e2e suite
# starts the real `tether` binary). Extra arguments go to the test runner,
# e.g. `scripts/test.sh --test e2e`. Set TETHER_BIN to run the e2e suite
# against another build of the binary (CI uses the release build).
set -euo pipefail
cd "$(dirname "$0")/.."

# The e2e suite scans the listeners with testssl.sh and handshakes with
# `openssl s_client`: real peers, from Debian's packages.
if ! command -v testssl >/dev/null || ! command -v openssl >/dev/null; then
    echo "installing the TLS test peers (Debian packages testssl.sh, openssl)" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq testssl.sh openssl >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq testssl.sh openssl >/dev/null; }
fi
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    exec cargo test --workspace --no-fail-fast "$@"
fi
