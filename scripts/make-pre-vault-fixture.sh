#!/usr/bin/env bash
# Makes tests/fixtures/pre-vault.tar.gz: a data directory written
# by the broker core (default rev 631d0a7, the last before the vault), with
# tasks in every state, and `expected.json`: what that build's API said about
# each task. The upgrade e2e test (`e2e::vault::upgrade_*`) upgrades a copy
# with today's binary and checks every task against it. Run once; the result
# is committed, because CI has no old build (and may have no git history).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-631d0a7}
tree=$(mktemp -d)/baseline
git worktree add --detach "$tree" "$rev" >&2
trap 'git worktree remove --force "$tree"' EXIT
(cd "$tree" && CARGO_TARGET_DIR="$PWD/../target" cargo build -p tether >&2)
python3 scripts/make-pre-vault-fixture.py "$tree/../target/debug/tether" tests/fixtures/pre-vault.tar.gz
