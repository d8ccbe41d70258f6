#!/usr/bin/env bash
# Shows that the release build is reproducible: builds this commit in two
# checkouts at different paths, each with its own target directory, and
# compares the binaries' SHA-256. Exits non-zero if they differ.
#
#   scripts/check-reproducible.sh [--fips] [--against BINARY]
#
# --against BINARY: a build of this commit made already (the test suite's),
# which must then come from a clean checkout; only one more build is made.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=(); against=""
while [ $# -gt 0 ]; do
    case "$1" in
        --fips) variant=(--fips); shift ;;
        --against) against=$2; shift 2 ;;
        *) echo "usage: $0 [--fips] [--against BINARY]" >&2; exit 2 ;;
    esac
done
if [ -n "$against" ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "this checkout has changes: --against needs a build of a clean one; building two" >&2
    against=""
fi
scratch=$(mktemp -d)
trees=()
cleanup() {
    for tree in "${trees[@]}"; do git worktree remove --force "$tree" >/dev/null 2>&1 || true; done
    rm -rf "$scratch"
}
trap cleanup EXIT
# Builds HEAD in a new checkout at $1; prints the binary's path.
build_at() {
    git worktree add --quiet --detach "$1" HEAD >&2
    trees+=("$1")
    (cd "$1" && CARGO_TARGET_DIR="$1/target" scripts/build-release.sh "${variant[@]}")
}
first=${against:-$(build_at "$scratch/one")}
second=$(build_at "$scratch/somewhere/else/two")
sum() { sha256sum "$1" | cut -d' ' -f1; }
echo "$(sum "$first")  $first ($(stat -c %s "$first") bytes)"
echo "$(sum "$second")  $second ($(stat -c %s "$second") bytes)"
if [ "$(sum "$first")" != "$(sum "$second")" ]; then
    # Kept for finding out why: which sections differ, and where.
    kept=target/reproducibility
    mkdir -p "$kept"
    cp "$first" "$kept/first"
    cp "$second" "$kept/second"
    # Each section's name and size (readelf pads "[ 1]", hence the sed).
    sections() { readelf -SW "$1" | sed -n 's/^ *\[ *[0-9]*\] *//p' | awk '{ print $1, $5 }'; }
    diff <(sections "$kept/first") <(sections "$kept/second") >&2 || true
    echo "error: two builds of $(git rev-parse --short HEAD) differ (both kept in $kept)" >&2
    exit 1
fi
echo "reproducible: both builds of $(git rev-parse --short HEAD)${variant[*]:+ (${variant[*]})} are the same bytes"
