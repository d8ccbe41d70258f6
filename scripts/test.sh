#!/usr/bin/env bash
# The whole test suite: unit, route and end-to-end tests (the e2e suite
# starts the real `tether` binary), then the unit suite again on the `fips`
# build (aws-lc-rs over the AWS-LC FIPS module). Arguments, if any, go to the
# test runner instead, for the default build only, e.g.
# `scripts/test.sh --test e2e`. Set TETHER_BIN to run the e2e suite against
# another build of the binary (CI uses the release build).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
# Installs Debian packages the tests need, if `probe` is not on PATH.
need() {
    local probe=$1; shift
    command -v "$probe" >/dev/null && return
    echo "installing $* (Debian packages) for the tests" >&2
    $sudo apt-get install -y -qq "$@" >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null; }
}
run() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --no-fail-fast "$@"
    else
        cargo test --no-fail-fast "$@"
    fi
}

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
# The LLM gateway tests drive it with the official Python clients from PyPI,
# pinned, in a virtual environment of their own.
if [ ! -x target/py/bin/python ] || ! target/py/bin/python -c 'import openai, ollama' 2>/dev/null; then
    echo "installing the openai and ollama Python clients (PyPI) for the gateway tests" >&2
    python3 -m venv target/py
    target/py/bin/pip install --quiet --disable-pip-version-check openai==3.51.0 ollama==0.6.3
fi
if [ $# -gt 0 ]; then
    run --workspace "$@"
    exit
fi
run --workspace
# Building the FIPS module takes cmake, Go and clang.
need cmake cmake golang-go clang libclang-dev
need go golang-go
need clang clang libclang-dev
echo "== the fips build's unit suite (FIPS mode on the validated module)" >&2
run --features fips --lib -p tether-base -p tether-store -p tether-domain -p tether-api -p tether
