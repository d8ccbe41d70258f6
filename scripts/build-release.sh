#!/usr/bin/env bash
# Builds the binary that ships: release profile, statically linked against
# glibc (crt-static; glibc >= 2.34 has the files and dns resolvers built in,
# so name lookups need no NSS modules at run time). Prints its path.
#
# Reproducible: the same commit gives the same bytes wherever it is built
# (scripts/check-reproducible.sh shows it). Nothing reads the build's clock
# (the date stamped in is the commit's, SOURCE_DATE_EPOCH), and the paths
# of this checkout and of cargo's registry are remapped out of the binary.
#
# With --fips, builds the `fips` variant instead (aws-lc-rs over the AWS-LC
# FIPS module; needs cmake, golang-go, clang, libclang-dev) into target/fips.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
variant=(); dir=${CARGO_TARGET_DIR:-target}
if [[ "${1:-}" == "--fips" ]]; then
    dir=${CARGO_TARGET_DIR:-target}/fips
    variant=(--features fips --target-dir "$dir")
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# Rust's paths, and C's (ring, AWS-LC) through the compilers' prefix maps.
remap="--remap-path-prefix=$PWD=/tether --remap-path-prefix=$cargo_home=/cargo"
prefix_map="-ffile-prefix-map=$PWD=/tether -ffile-prefix-map=$cargo_home=/cargo"
# An explicit --target keeps crt-static away from build scripts and proc-macros.
RUSTFLAGS="${RUSTFLAGS:-} $remap -C target-feature=+crt-static" \
    CFLAGS="${CFLAGS:-} $prefix_map" CXXFLAGS="${CXXFLAGS:-} $prefix_map" \
    cargo build --release --locked -p tether --target "$target" "${variant[@]}" >&2
bin="$dir/$target/release/tether"
if readelf -d "$bin" | grep -q '(NEEDED)'; then
    echo "error: $bin needs shared libraries; it must be static" >&2
    exit 1
fi
size=$(stat -c %s "$bin")
if [ "$size" -gt $((25 * 1024 * 1024)) ]; then
    echo "error: $bin is $size bytes, over the 25 MiB a release may weigh" >&2
    exit 1
fi
echo "$bin"
