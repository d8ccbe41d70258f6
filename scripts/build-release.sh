#!/usr/bin/env bash
# Builds the binary that ships: release profile, statically linked against
# glibc (crt-static; glibc >= 2.34 has the files and dns resolvers built in,
# so name lookups need no NSS modules at run time). Prints its path.
#
# With --fips, builds the `fips` variant instead (aws-lc-rs over the AWS-LC
# FIPS module; needs cmake, golang-go, clang, libclang-dev) into target/fips.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
variant=(); dir=target
if [[ "${1:-}" == "--fips" ]]; then
    variant=(--features fips --target-dir target/fips); dir=target/fips
fi
# An explicit --target keeps crt-static away from build scripts and proc-macros.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked -p tether --target "$target" "${variant[@]}" >&2
bin="$dir/$target/release/tether"
if readelf -d "$bin" | grep -q '(NEEDED)'; then
    echo "error: $bin needs shared libraries; it must be static" >&2
    exit 1
fi
echo "$bin"
