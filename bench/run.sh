#!/usr/bin/env bash
# Builds the shipped (static release) binary and the bench, makes sure redis-server is there
# (the peer measured in the same run), raises the open-file limit for the
# idle-poll measurement, and runs everything. Extra flags go to tether-bench:
#   --tasks N (5000)  --samples N (1000)  --idle N (5000)  --create-secs S (5)
#   --only a,b,c,d,e,f,g,h,i,j,k  --rounds N (3, for e, f and k)  --handshakes N (3000, for f)
#   --llm-secs S (3)  --ttft-samples N (300)  --litellm-venv DIR (for h)
# With --baseline-rev REV it also builds that revision in a scratch worktree
# and measures (e): this build's lifecycle against that revision's (with
# 631d0a7, the last commit before the vault, the cost of encryption at rest).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
# (h) compares the LLM gateway with LiteLLM's proxy, installed from PyPI
# into its own virtualenv (kept in target/ between runs).
if [[ " $* " != *" --only "* || "$*" == *h* ]] && [ ! -x target/litellm-venv/bin/litellm ]; then
    python3 -m venv target/litellm-venv
    target/litellm-venv/bin/pip install -q 'litellm[proxy]'
fi
baseline=()
if [[ "${1:-}" == "--baseline-rev" ]]; then
    rev=$2
    shift 2
    tree=$(mktemp -d)/baseline
    git worktree add --detach "$tree" "$rev" >&2
    trap 'git worktree remove --force "$tree"' EXIT
    base_bin="$tree/$("$tree/scripts/build-release.sh")"
    baseline=(--baseline "$base_bin")
fi
bin=$(scripts/build-release.sh)
cargo build --release -p tether-bench
ulimit -n "$(ulimit -Hn)"
target/release/tether-bench --tether "$bin" "${baseline[@]}" "$@"
