#!/usr/bin/env bash
# Builds the appliance's bootable disk image from Debian 12 packages only,
# and prints its path last: a raw GPT/UEFI disk with an EFI system
# partition (systemd-boot; one boot entry per slot, each pinning its own
# root by PARTUUID and dm-verity root hash), root-A (a read-only squashfs
# of the system with its verity hash tree, the release installed into it by
# `tether install --root`), an empty root-B for the first update, and the
# data partition (the state and the journal). Beside it, the update bundle:
# the release bundle with this root image, kernel and initramfs in
# firmware/, which `tether update apply` writes to the other slot; and the
# image bundle (tether.img.bundle: the image signed), which `tether image
# write` verifies and writes to a USB stick.
# tests/e2e/image.rs boots the image under qemu, sets it up and updates it.
# Package versions: packages.lock.
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
# apt takes each package at the version packages.lock names.
awk '!/^#/ { printf "Package: %s\nPin: version %s\nPin-Priority: 1001\n\n", $1, $2 }' \
    firmware-image/packages.lock > "$work/tether-lock.pref"
mmdebstrap --variant=minbase --include="$packages" \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1/etc/apt/preferences.d"' \
    --setup-hook="copy-in $work/tether-lock.pref /etc/apt/preferences.d" \
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
rm "$tree/etc/apt/preferences.d/tether-lock.pref"
# The system is exactly the locked one (a version the mirror no longer
# has, or a new dependency, shows here).
built=$(chroot "$tree" dpkg-query -W -f '${Package} ${Version}\n' | LC_ALL=C sort)
if [ "${TETHER_UPDATE_LOCK:-}" = 1 ]; then
    { grep '^#' firmware-image/packages.lock; echo "$built"; } > "$work/packages.lock"
    mv "$work/packages.lock" firmware-image/packages.lock
elif ! diff <(grep -v '^#' firmware-image/packages.lock) <(echo "$built") >&2; then
    echo "error: the built system's packages differ from firmware-image/packages.lock (above: < locked, > built);" \
        "review the change and build with TETHER_UPDATE_LOCK=1 to take it" >&2
    exit 1
fi

echo "== the appliance: the release bundle installed into the tree" >&2
bin=${TETHER_BIN:-$(scripts/build-release.sh)}
bundle=$(scripts/make-bundle.sh --binary "$bin" --out "$work" | tail -1)
version=$("$bin" --version | awk 'NR == 1 { print $2 }')
"$bin" install "$bundle" --root "$tree" --trust target/dev-release-key.pub >&2
# The root is read-only: /var and /tmp are tmpfs (the units' sandboxes,
# PrivateTmp= and PrivateDevices=, make their directories in /tmp). What
# lasts is on the data partition, mounted at /data: the appliance's state
# (/var/lib/tether) and the journal (/var/log/journal), each bound from a
# directory of its own there. The initramfs names it /dev/disk/tether/data:
# the data partition of the disk the machine started from.
mkdir -p "$tree/data"
cat > "$tree/etc/fstab" <<'FSTAB'
tmpfs /var tmpfs mode=0755,nosuid,nodev 0 0
tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0
/dev/disk/tether/data /data ext4 nosuid,nodev,noexec,x-systemd.growfs 0 2
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
# Updates: the boot records what became of one; a slot on trial is kept
# only once the appliance is healthy (boot-complete.target), and boots
# again when it is not.
install -m 0644 firmware-image/units/tether-firmware.service firmware-image/units/tether-health.service \
    firmware-image/units/tether-trial-failed.service firmware-image/units/tether-usb@.service \
    firmware-image/units/tether-firmware-upload.path firmware-image/units/tether-firmware-upload.service \
    "$tree/usr/lib/systemd/system/"
systemctl --root="$tree" enable tether-firmware.service tether-health.service tether-firmware-upload.path >&2
# Started from a USB stick, the machine runs the installer instead
# (tether-installer.target: its generator sees the initramfs's marker),
# unattended when the stick holds an answer file. Installed, the site's
# settings (host name, a static address) come from the data partition.
install -m 0644 firmware-image/units/tether-installer.target firmware-image/units/tether-install.service \
    firmware-image/units/tether-site.service firmware-image/units/tether-site.path \
    firmware-image/units/tether-site-reload.service "$tree/usr/lib/systemd/system/"
install -D -m 0755 firmware-image/units/tether-installer-generator \
    "$tree/usr/lib/systemd/system-generators/tether-installer"
systemctl --root="$tree" enable tether-site.service tether-site.path >&2
# Time comes from the RTC; systemd-timesyncd runs only once the site names
# its own servers (tether-site.service hands them over), and never reaches
# for the distribution's pool.
mkdir -p "$tree/etc/systemd/timesyncd.conf.d" "$tree/etc/systemd/system/systemd-timesyncd.service.d"
printf '[Time]\nFallbackNTP=\n' > "$tree/etc/systemd/timesyncd.conf.d/50-tether.conf"
printf '[Unit]\nConditionPathExists=/run/systemd/timesyncd.conf.d/tether-site.conf\n' \
    > "$tree/etc/systemd/system/systemd-timesyncd.service.d/50-tether.conf"
# A USB stick's update is offered on the status screen.
install -m 0644 firmware-image/units/80-tether-usb.rules "$tree/usr/lib/udev/rules.d/"
# Updates signed with the key this image's release was signed with are
# trusted (beside the release key every tether pins).
install -d -m 0755 "$tree/usr/share/tether/release-keys"
install -m 0644 target/dev-release-key.pub "$tree/usr/share/tether/release-keys/"

echo "== root-A (squashfs, dm-verity) and the EFI system partition" >&2
firmware-image/root-image.sh "$tree" "$work/root"
# The ESP: systemd-boot, the slot's kernel and initramfs, and its entry
# (`tether update boot-entry`, the code that writes an update's entries).
esp="$work/esp"
rm -rf "$esp" "$work/esp.img"
mkdir -p "$esp/EFI/BOOT" "$esp/loader" "$esp/tether/a"
cp "$tree/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$tree/boot/vmlinuz-$kernel" "$esp/tether/a/vmlinuz"
cp "$tree/boot/initrd.img-$kernel" "$esp/tether/a/initrd.img"
# The highest generation boots first; one with no tries left, last.
printf 'timeout 0\ndefault tether-*\n' > "$esp/loader/loader.conf"
"$bin" update boot-entry --esp "$esp" --slot a --partuuid "$root_a_uuid" --root "$work/root/root.json" \
    --release-version "$version" >&2
truncate -s "${esp_mib}M" "$work/esp.img"
mkfs.vfat -F 32 -n ESP "$work/esp.img" >/dev/null
mcopy -s -i "$work/esp.img" "$esp"/* ::/

echo "== the update bundle: the release with this root image, kernel and initramfs" >&2
rm -rf "$work/update"
mkdir -p "$work/update/firmware"
ln -f "$work/root/root.img" "$work/root/root.json" "$work/update/firmware/"
cp "$tree/boot/vmlinuz-$kernel" "$work/update/firmware/vmlinuz"
cp "$tree/boot/initrd.img-$kernel" "$work/update/firmware/initrd.img"
update=$(scripts/make-bundle.sh --binary "$bin" --out "$work/update" \
    $(printf -- '--firmware %s ' "$work"/update/firmware/*) | tail -1)
echo "update bundle: $update" >&2

echo "== the disk (GPT)" >&2
image="$work/tether.img"
root_mib=$(( ($(stat -c %s "$work/root/root.img") + (1 << 20) - 1) / (1 << 20) ))
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
dd if="$work/root/root.img" of="$image" bs=1M seek=$((1 + esp_mib)) conv=notrunc status=none
dd if="$work/data.img" of="$image" bs=1M seek=$((1 + esp_mib + 2 * slot_mib)) conv=notrunc status=none

# The image signed, as `tether image write` takes it onto a USB stick.
echo "== the image bundle" >&2
about=$("$bin" --version)
"$bin" image pack "$image" --key target/dev-release-key --out "$work/tether.img.bundle" \
    --release-version "$(awk 'NR == 1 { print $2 }' <<<"$about")" \
    --commit "$(awk '$1 == "commit" { print $2 }' <<<"$about")" \
    --built "$(awk '$1 == "built" { print $2 }' <<<"$about")" >&2
echo "$image"
