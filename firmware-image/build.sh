#!/usr/bin/env bash
# Builds the appliance's bootable disk image from Debian 12 packages only,
# and prints its path last. First steps of issue 24: a raw GPT/UEFI disk
# with an EFI system partition (systemd-boot, one entry pinning root-A by
# PARTUUID), root-A (a read-only squashfs of the system, the release
# installed into it by `tether install --root`, the status screen on the
# consoles), an empty root-B, and the data partition (the state and the
# journal); nftables drops all input but the two ports; tests/e2e/image.rs
# boots it under qemu
# and sets it up. Not yet: dm-verity, boot counting, updates,
# pinned package versions (see firmware-image/README.md).
#
# Downloaded packages are kept in target/firmware-image/debs between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/firmware-image
mkdir -p "$work/debs"
for tool in mmdebstrap mksquashfs veritysetup mkfs.vfat mcopy sfdisk; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is missing (Debian: apt-get install mmdebstrap squashfs-tools cryptsetup-bin dosfstools mtools fdisk)" >&2
        exit 1
    }
done
# Fixed, so a boot entry can name its root before the disk exists.
root_a_uuid=6f2a0b61-0000-4000-8000-00000000000a
root_b_uuid=6f2a0b61-0000-4000-8000-00000000000b
esp_mib=128
data_mib=256

echo "== the system tree (mmdebstrap, Debian 12)" >&2
tree="$work/tree"
rm -rf "$tree"
packages=$(grep -v '^#' firmware-image/packages.txt | paste -sd, -)
mmdebstrap --variant=minbase --include="$packages" \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in $work/debs /var/cache/apt/archives" \
    --customize-hook="sync-out /var/cache/apt/archives $work/debs" \
    --customize-hook='echo tether > "$1/etc/hostname"' \
    --customize-hook='echo squashfs >> "$1/etc/initramfs-tools/modules"' \
    --customize-hook="copy-in firmware-image/initramfs/hook /etc/initramfs-tools/hooks" \
    --customize-hook='mv "$1/etc/initramfs-tools/hooks/hook" "$1/etc/initramfs-tools/hooks/tether-verity"' \
    --customize-hook='mkdir -p "$1/etc/initramfs-tools/scripts/local-top"' \
    --customize-hook="copy-in firmware-image/initramfs/local-top /etc/initramfs-tools/scripts/local-top" \
    --customize-hook='mv "$1/etc/initramfs-tools/scripts/local-top/local-top" "$1/etc/initramfs-tools/scripts/local-top/tether-verity"' \
    --customize-hook='chroot "$1" update-initramfs -u -k all' \
    bookworm "$tree" http://deb.debian.org/debian >&2
kernel=$(ls "$tree/boot" | sed -n 's/^vmlinuz-//p' | head -1)

echo "== the appliance: the release bundle installed into the tree" >&2
bin=${TETHER_BIN:-$(scripts/build-release.sh)}
bundle=$(scripts/make-bundle.sh --binary "$bin" --out "$work" | tail -1)
"$bin" install "$bundle" --root "$tree" --trust target/dev-release-key.pub >&2
# The root is read-only: /var and /tmp are tmpfs (the units' sandboxes,
# PrivateTmp= and PrivateDevices=, make their directories in /tmp). What
# lasts is on the data partition, mounted at /data: the appliance's state
# (/var/lib/tether) and the journal (/var/log/journal), each bound from a
# directory of its own there.
mkdir -p "$tree/data"
cat > "$tree/etc/fstab" <<'FSTAB'
tmpfs /var tmpfs mode=0755,nosuid,nodev 0 0
tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0
PARTLABEL=data /data ext4 nosuid,nodev,noexec,x-systemd.growfs 0 2
/data/tether /var/lib/tether none bind,x-systemd.requires-mounts-for=/data 0 0
/data/journal /var/log/journal none bind,x-systemd.requires-mounts-for=/data 0 0
FSTAB
# The journal is kept, within a cap, on the data partition.
mkdir -p "$tree/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=persistent\nSystemMaxUse=64M\nSystemKeepFree=256M\n' \
    > "$tree/etc/systemd/journald.conf.d/50-tether.conf"
# The network comes up by DHCP.
mkdir -p "$tree/etc/systemd/network"
printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' > "$tree/etc/systemd/network/80-dhcp.network"
systemctl --root="$tree" enable systemd-networkd.service >&2
# Nothing comes in but the appliance's two ports, DHCP's answers and ICMP.
install -m 0755 firmware-image/nftables.conf "$tree/etc/nftables.conf"
chroot "$tree" nft --check --file /etc/nftables.conf
systemctl --root="$tree" enable nftables.service >&2
# The consoles show the status screen; there is no login prompt anywhere
# (the rescue login is the screen's, and needs the password set at setup).
install -m 0644 firmware-image/units/tether-screen@.service "$tree/usr/lib/systemd/system/"
systemctl --root="$tree" mask getty@.service serial-getty@.service autovt@.service >&2
systemctl --root="$tree" enable tether-screen@tty1.service tether-screen@ttyS0.service >&2

echo "== root-A (squashfs, dm-verity) and the EFI system partition" >&2
rm -f "$work/root.squashfs" "$work/root.hashtree" "$work/root.img" "$work/esp.img"
# What /boot holds is the ESP's (systemd mounts the ESP there when it is
# needed); the root mounts read-only.
mksquashfs "$tree" "$work/root.squashfs" -comp zstd -quiet -noappend -wildcards -e "boot/*" -no-xattrs >/dev/null
# The slot holds the squashfs, then its verity hash tree; the boot entry
# names the root hash, so the initramfs opens the slot only as it was built.
truncate -s %4096 "$work/root.squashfs"
hash_offset=$(stat -c %s "$work/root.squashfs")
salt=$(sha256sum "$work/root.squashfs" | cut -c1-64)
roothash=$(veritysetup format "$work/root.squashfs" "$work/root.hashtree" --salt "$salt" \
    --uuid "$(sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/' <<<"$salt")" |
    awk '$1 == "Root" && $2 == "hash:" { print $3 }')
cat "$work/root.squashfs" "$work/root.hashtree" > "$work/root.img"
truncate -s "${esp_mib}M" "$work/esp.img"
mkfs.vfat -F 32 -n ESP "$work/esp.img" >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/tether
mcopy -i "$work/esp.img" "$tree/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mmd -i "$work/esp.img" ::/tether/a
mcopy -i "$work/esp.img" "$tree/boot/vmlinuz-$kernel" ::/tether/a/vmlinuz
mcopy -i "$work/esp.img" "$tree/boot/initrd.img-$kernel" ::/tether/a/initrd.img
printf 'timeout 0\ndefault tether-*\n' | mcopy -i "$work/esp.img" - ::/loader/loader.conf
printf '%s\n' "title Tether (slot A)" "linux /tether/a/vmlinuz" "initrd /tether/a/initrd.img" \
    "options root=/dev/mapper/root rootfstype=squashfs ro roothash=$roothash systemd.verity_root_data=PARTUUID=$root_a_uuid systemd.verity_root_hash=PARTUUID=$root_a_uuid systemd.verity_root_options=hash-offset=$hash_offset tether.slot=a panic=10 console=tty0 console=ttyS0 quiet" |
    mcopy -i "$work/esp.img" - ::/loader/entries/tether-1-a.conf

echo "== the disk (GPT)" >&2
image="$work/tether.img"
root_mib=$(( ($(stat -c %s "$work/root.img") + (1 << 20) - 1) / (1 << 20) ))
rm -rf "$image" "$work/data.img" "$work/data"
# The data partition starts with its two directories, owned as they must be.
tether_ids=$(awk -F: '$1 == "tether" { print $3 ":" $4 }' "$tree/etc/passwd")
journal_gid=$(awk -F: '$1 == "systemd-journal" { print $3 }' "$tree/etc/group")
install -d -m 0700 -o "${tether_ids%:*}" -g "${tether_ids#*:}" "$work/data/tether"
install -d -m 2755 -o 0 -g "$journal_gid" "$work/data/journal"
mkfs.ext4 -q -L tether-data -E root_owner=0:0 -d "$work/data" "$work/data.img" "${data_mib}M"
# Root-B, as large as root-A with room to grow, stays empty until the first
# update writes it.
slot_mib=$(( root_mib + root_mib / 4 ))
truncate -s $(( (1 + esp_mib + 2 * slot_mib + data_mib + 1) << 20 )) "$image"
sfdisk -q "$image" <<SFDISK
label: gpt
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
size=$((slot_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_a_uuid, name=root-a
size=$((slot_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_b_uuid, name=root-b
size=$((data_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data
SFDISK
dd if="$work/esp.img" of="$image" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.img" of="$image" bs=1M seek=$((1 + esp_mib)) conv=notrunc status=none
dd if="$work/data.img" of="$image" bs=1M seek=$((1 + esp_mib + 2 * slot_mib)) conv=notrunc status=none
echo "$image"
