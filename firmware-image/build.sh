#!/usr/bin/env bash
# Builds the appliance's bootable disk image from Debian 12 packages only,
# and prints its path last. First steps of issue 24: a raw GPT/UEFI disk
# with an EFI system partition (systemd-boot, one entry pinning root-A by
# PARTUUID), root-A (a read-only squashfs of the system, the release
# installed into it by `tether install --root`, the status screen on the
# consoles) and the data partition; tests/e2e/image.rs boots it under qemu
# and sets it up. Not yet: root-B, dm-verity, boot counting, nftables
# rules, pinned package versions (see firmware-image/README.md).
#
# Downloaded packages are kept in target/firmware-image/debs between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/firmware-image
mkdir -p "$work/debs"
for tool in mmdebstrap mksquashfs mkfs.vfat mcopy sfdisk; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is missing (Debian: apt-get install mmdebstrap squashfs-tools dosfstools mtools fdisk)" >&2
        exit 1
    }
done
# Fixed, so a boot entry can name its root before the disk exists.
root_a_uuid=6f2a0b61-0000-4000-8000-00000000000a
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
    --customize-hook='chroot "$1" update-initramfs -u -k all' \
    bookworm "$tree" http://deb.debian.org/debian >&2
kernel=$(ls "$tree/boot" | sed -n 's/^vmlinuz-//p' | head -1)

echo "== the appliance: the release bundle installed into the tree" >&2
bin=${TETHER_BIN:-$(scripts/build-release.sh)}
bundle=$(scripts/make-bundle.sh --binary "$bin" --out "$work" | tail -1)
"$bin" install "$bundle" --root "$tree" --trust target/dev-release-key.pub >&2
# The root is read-only: /var is a tmpfs, the appliance's data its own
# partition; the network comes up by DHCP.
# /tmp is a tmpfs too: the units' sandboxes (PrivateTmp=, PrivateDevices=)
# make their directories there.
cat > "$tree/etc/fstab" <<'FSTAB'
tmpfs /var tmpfs mode=0755,nosuid,nodev 0 0
tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0
PARTLABEL=data /var/lib/tether ext4 nosuid,nodev,noexec,x-systemd.growfs 0 2
FSTAB
mkdir -p "$tree/etc/systemd/network"
printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' > "$tree/etc/systemd/network/80-dhcp.network"
systemctl --root="$tree" enable systemd-networkd.service >&2
# The consoles show the status screen; there is no login prompt anywhere
# (the rescue login is the screen's, and needs the password set at setup).
install -m 0644 firmware-image/units/tether-screen@.service "$tree/usr/lib/systemd/system/"
systemctl --root="$tree" mask getty@.service serial-getty@.service autovt@.service >&2
systemctl --root="$tree" enable tether-screen@tty1.service tether-screen@ttyS0.service >&2

echo "== root-A (squashfs) and the EFI system partition" >&2
rm -f "$work/root.squashfs" "$work/esp.img"
# What /boot holds is the ESP's (systemd mounts the ESP there when it is
# needed); the root mounts read-only.
mksquashfs "$tree" "$work/root.squashfs" -comp zstd -quiet -noappend -wildcards -e "boot/*" -no-xattrs >/dev/null
truncate -s "${esp_mib}M" "$work/esp.img"
mkfs.vfat -F 32 -n ESP "$work/esp.img" >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/tether
mcopy -i "$work/esp.img" "$tree/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$tree/boot/vmlinuz-$kernel" ::/tether/vmlinuz-a
mcopy -i "$work/esp.img" "$tree/boot/initrd.img-$kernel" ::/tether/initrd-a
printf 'timeout 0\ndefault a.conf\n' | mcopy -i "$work/esp.img" - ::/loader/loader.conf
printf '%s\n' "title Tether (slot A)" "linux /tether/vmlinuz-a" "initrd /tether/initrd-a" \
    "options root=PARTUUID=$root_a_uuid rootfstype=squashfs ro console=tty0 console=ttyS0 quiet" |
    mcopy -i "$work/esp.img" - ::/loader/entries/a.conf

echo "== the disk (GPT)" >&2
image="$work/tether.img"
root_mib=$(( ($(stat -c %s "$work/root.squashfs") + (1 << 20) - 1) / (1 << 20) ))
rm -f "$image" "$work/data.img"
mkfs.ext4 -q -L tether-data "$work/data.img" "${data_mib}M"
truncate -s $(( (1 + esp_mib + root_mib + data_mib + 1) << 20 )) "$image"
sfdisk -q "$image" <<SFDISK
label: gpt
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_a_uuid, name=root-a
size=$((data_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data
SFDISK
dd if="$work/esp.img" of="$image" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.squashfs" of="$image" bs=1M seek=$((1 + esp_mib)) conv=notrunc status=none
dd if="$work/data.img" of="$image" bs=1M seek=$((1 + esp_mib + root_mib)) conv=notrunc status=none
echo "$image"
