#!/usr/bin/env bash
# Makes a release bundle: one signed file holding the static `tether`
# (and, with --fips, its FIPS twin), the units, sysusers and tmpfiles files
# from systemd/, the README, and any offline model bundles (--model) and
# firmware update files (--firmware: root.img, root.json, vmlinuz,
# initrd.img, each into firmware/) named. Prints the bundle's path last.
#
#   scripts/make-bundle.sh [--key KEY] [--binary BIN] [--fips | --fips-binary BIN]
#                          [--model BUNDLE]... [--firmware FILE]... [--out DIR]
#
# --key names the release key (PKCS#8 PEM) to sign with. Without it the
# bundle is signed with a development key pair kept at target/dev-release-key
# and target/dev-release-key.pub (made on first use): installers trust that
# only when told to (`--trust target/dev-release-key.pub`).
# --binary names an already built release binary; otherwise
# scripts/build-release.sh builds it (and --fips the FIPS one).
# The version and commit come from the binary itself (`tether --version`);
# the oldest version it may upgrade from is in installer/min-version.
set -euo pipefail
cd "$(dirname "$0")/.."

key="" binary="" fips_binary="" out=target/bundle
models=() firmware=()
while [ $# -gt 0 ]; do
    case "$1" in
        --key) key=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --fips) fips_binary=build; shift ;;
        --fips-binary) fips_binary=$2; shift 2 ;;
        --model) models+=("$2"); shift 2 ;;
        --firmware) firmware+=("$2"); shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$binary" ]; then
    binary=$(scripts/build-release.sh)
fi
if [ "$fips_binary" = build ]; then
    fips_binary=$(scripts/build-release.sh --fips)
fi
for file in "$binary" ${fips_binary:+"$fips_binary"} ${models[@]+"${models[@]}"} ${firmware[@]+"${firmware[@]}"}; do
    [ -f "$file" ] || { echo "error: $file does not exist" >&2; exit 1; }
done

# What the binary says it is.
about=$("$binary" --version)
version=$(awk 'NR == 1 { print $2 }' <<<"$about")
commit=$(awk '$1 == "commit" { print $2 }' <<<"$about")
built=$(awk '$1 == "built" { print $2 }' <<<"$about")
min_version=$(tr -d '[:space:]' < installer/min-version)

if [ -z "$key" ]; then
    key=target/dev-release-key
    if [ ! -f "$key" ]; then
        mkdir -p target
        "$binary" release keygen --out "$key" >&2
    fi
    echo "signing with the development key $key (not the release key)" >&2
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/tether-bundle.XXXXXX")
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/tether"
[ -z "$fips_binary" ] || install -m 0755 "$fips_binary" "$stage/tether-fips"
mkdir "$stage/systemd"
install -m 0644 systemd/tether.service systemd/tether-worker.service systemd/tether.sysusers \
    systemd/tether.tmpfiles "$stage/systemd/"
install -m 0644 README.md "$stage/README.md"
if [ ${#models[@]} -gt 0 ]; then
    mkdir "$stage/models"
    for model in "${models[@]}"; do install -m 0644 "$model" "$stage/models/"; done
fi
if [ ${#firmware[@]} -gt 0 ]; then
    mkdir "$stage/firmware"
    for file in "${firmware[@]}"; do install -m 0644 "$file" "$stage/firmware/"; done
fi

mkdir -p "$out"
bundle="$out/tether-$version-${commit:0:12}.bundle"
"$binary" release pack --dir "$stage" --key "$key" --out "$bundle" \
    --release-version "$version" --min-version "$min_version" --commit "$commit" --built "$built" >&2
echo "$bundle"
