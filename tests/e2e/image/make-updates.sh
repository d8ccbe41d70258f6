#!/usr/bin/env bash
# The update test's bundles, made from the image's system tree (beside the
# image, as firmware-image/build.sh leaves it) the way a release is: the
# tree with the release reinstalled as the new version, its root image made
# by firmware-image/root-image.sh, packed with the kernel and initramfs and
# signed by the development key the image's bundles are signed with (and
# the image trusts).
#
#   tests/e2e/image/make-updates.sh IMAGE_DIR BIN OUT
#
# OUT/good.bundle      0.1.1, a root that serves
# OUT/bad.bundle       0.1.2, a root whose appliance does not come up
#                      (its tether.service runs /bin/false): fails health
# OUT/downgrade.bundle good's files as 0.0.9
# OUT/wrong-key.bundle good's files signed by a key nobody trusts
# OUT/tampered.bundle  good.bundle with one byte of its root image changed
set -euo pipefail
cd "$(dirname "$0")/../../.."
image_dir=$1 bin=$2 out=$3
key=target/dev-release-key
[ -f "$key" ] || { echo "error: $key is missing (firmware-image/build.sh makes it)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/tether-updates.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The installer checks the release runs as its service user, who must reach it.
chmod 0755 "$work"
kernel=$(ls "$image_dir/tree/boot" | sed -n 's/^vmlinuz-//p' | head -1)

# The release's files, as scripts/make-bundle.sh stages them.
release="$work/release"
mkdir -p "$release/systemd"
install -m 0755 "$bin" "$release/tether"
install -m 0644 systemd/tether.service systemd/tether-worker.service systemd/tether.sysusers \
    systemd/tether.tmpfiles "$release/systemd/"

# pack DIR VERSION KEY OUT
pack() {
    "$bin" release pack --dir "$1" --key "$3" --out "$4" --release-version "$2" --min-version 0.0.1 \
        --commit "$(printf %s "$2" | sha1sum | cut -c1-40)" --built 2026-12-07T00:00:00Z >/dev/null
}

# firmware VERSION [broken]: the staged update of VERSION in $work/VERSION.
firmware() {
    local version=$1 tree="$work/tree-$1" stage="$work/$1"
    pack "$release" "$version" "$key" "$work/release-$version.bundle"
    cp -a --reflink=auto "$image_dir/tree" "$tree"
    "$bin" uninstall --root "$tree" >/dev/null
    "$bin" install "$work/release-$version.bundle" --root "$tree" --trust "$key.pub" >/dev/null
    if [ "${2:-}" = broken ]; then
        mkdir -p "$tree/etc/systemd/system/tether.service.d"
        printf '[Service]\nExecStart=\nExecStart=/bin/false\n' > "$tree/etc/systemd/system/tether.service.d/broken.conf"
    fi
    cp -a "$release" "$stage"
    mkdir "$stage/firmware"
    firmware-image/root-image.sh "$tree" "$stage/firmware"
    rm -rf "$tree"
    cp "$image_dir/tree/boot/vmlinuz-$kernel" "$stage/firmware/vmlinuz"
    cp "$image_dir/tree/boot/initrd.img-$kernel" "$stage/firmware/initrd.img"
}

firmware 0.1.1
pack "$work/0.1.1" 0.1.1 "$key" "$out/good.bundle"
pack "$work/0.1.1" 0.0.9 "$key" "$out/downgrade.bundle"
"$bin" release keygen --out "$work/other-key" >/dev/null
pack "$work/0.1.1" 0.1.1 "$work/other-key" "$out/wrong-key.bundle"
cp "$out/good.bundle" "$out/tampered.bundle"
middle=$(( $(stat -c %s "$out/tampered.bundle") / 2 ))
byte=$(od -An -tu1 -j "$middle" -N1 "$out/tampered.bundle")
printf "\\x$(printf %02x $(( byte ^ 1 )))" | dd of="$out/tampered.bundle" bs=1 seek="$middle" conv=notrunc status=none
firmware 0.1.2 broken
pack "$work/0.1.2" 0.1.2 "$key" "$out/bad.bundle"
ls -l "$out" >&2
