#!/usr/bin/env bash
# The incremental test build after touching one file: appends a private
# function to FILE, times `cargo nextest run --workspace --no-run` (every
# test binary rebuilt as needed), and restores the file; ROUNDS times
# (default 3), after one warm-up build. Prints each time and the median.
#
# Usage: bench/incremental_build.sh FILE [ROUNDS]
#   e.g. bench/incremental_build.sh appliance/api/src/tasks.rs
#        bench/incremental_build.sh appliance/store/src/writer.rs
set -euo pipefail
cd "$(dirname "$0")/.."
file=$1; rounds=${2:-3}
[ -f "$file" ] || { echo "no such file: $file" >&2; exit 2; }
cp "$file" "$file.orig"
trap 'mv "$file.orig" "$file"' EXIT
cargo nextest run --workspace --no-run >/dev/null 2>&1
times=()
for i in $(seq "$rounds"); do
    printf '\n#[allow(dead_code)]\nfn incremental_build_probe_%s() {}\n' "$i" >> "$file"
    start=$(date +%s.%N)
    cargo nextest run --workspace --no-run >/dev/null 2>&1
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc)")
done
printf '%s: ' "$file"; printf '%.1f s  ' "${times[@]}"
printf '\nmedian: %.1f s\n' "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p")"
