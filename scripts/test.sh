#!/usr/bin/env bash
# The whole test suite: unit, route and end-to-end tests (the e2e suite
# starts the real `tether` binary). Extra arguments go to the test runner,
# e.g. `scripts/test.sh --test e2e`. Set TETHER_BIN to run the e2e suite
# against another build of the binary (CI uses the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    exec cargo test --workspace --no-fail-fast "$@"
fi
