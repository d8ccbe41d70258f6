#!/usr/bin/env bash
# Builds the shipped (static release) binary and the bench, makes sure redis-server is there
# (the peer measured in the same run), raises the open-file limit for the
# idle-poll measurement, and runs everything. Extra flags go to tether-bench:
#   --tasks N (5000)  --samples N (1000)  --idle N (5000)  --create-secs S (5)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
bin=$(scripts/build-release.sh)
cargo build --release -p tether-bench
ulimit -n "$(ulimit -Hn)"
exec target/release/tether-bench --tether "$bin" "$@"
