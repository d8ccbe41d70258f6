#!/usr/bin/env bash
# Makes a root slot's image from a system tree: a read-only squashfs, then
# its dm-verity hash tree, as OUT/root.img, and OUT/root.json describing it
# (the root hash a boot entry names, where the hash tree starts). The salt
# and the superblock's uuid come from the squashfs itself, so the same tree
# gives the same root hash. Used by build.sh, and by the update test for
# the images it updates to.
#
#   firmware-image/root-image.sh TREE OUT
set -euo pipefail
tree=${1:?usage: root-image.sh TREE OUT} out=${2:?usage: root-image.sh TREE OUT}
mkdir -p "$out"
rm -f "$out/root.squashfs" "$out/root.hashtree" "$out/root.img" "$out/root.json"
# What /boot holds is the ESP's (systemd mounts the ESP there when it is
# needed); the root mounts read-only.
mksquashfs "$tree" "$out/root.squashfs" -comp zstd -quiet -noappend -wildcards -e "boot/*" -no-xattrs >/dev/null
truncate -s %4096 "$out/root.squashfs"
hash_offset=$(stat -c %s "$out/root.squashfs")
salt=$(sha256sum "$out/root.squashfs" | cut -c1-64)
roothash=$(veritysetup format "$out/root.squashfs" "$out/root.hashtree" --salt "$salt" \
    --uuid "$(sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/' <<<"$salt")" |
    awk '$1 == "Root" && $2 == "hash:" { print $3 }')
cat "$out/root.squashfs" "$out/root.hashtree" > "$out/root.img"
rm "$out/root.squashfs" "$out/root.hashtree"
printf '{"format": "squashfs+verity", "roothash": "%s", "hash_offset": %s}\n' "$roothash" "$hash_offset" \
    > "$out/root.json"
