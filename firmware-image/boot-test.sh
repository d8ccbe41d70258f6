#!/usr/bin/env bash
# Boots the image under qemu with OVMF (TCG) and waits for the status
# screen's setup code on the serial console; prints the seconds from qemu's
# start to it, and the screen. For a look by hand: the CI test that sets
# the image up and checks it is tests/e2e/image.rs.
#
#   firmware-image/boot-test.sh [IMAGE] (default target/firmware-image/tether.img)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-target/firmware-image/tether.img}
[ -f "$image" ] || { echo "error: $image does not exist; firmware-image/build.sh makes it" >&2; exit 1; }
for need in qemu-system-x86_64 /usr/share/OVMF/OVMF_CODE_4M.fd; do
    command -v "$need" >/dev/null || [ -f "$need" ] || {
        echo "error: $need is missing (Debian: apt-get install qemu-system-x86 ovmf)" >&2
        exit 1
    }
done
work=$(mktemp -d)
trap 'kill "$qemu" 2>/dev/null || true; rm -rf "$work"' EXIT
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
cp --reflink=auto "$image" "$work/disk.img"
start=$(date +%s.%N)
qemu-system-x86_64 -machine q35 -m 1024 -smp 2 -nographic -no-reboot \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file="$work/vars.fd" \
    -drive file="$work/disk.img",format=raw,if=virtio \
    -netdev user,id=n0,hostfwd=tcp:127.0.0.1:${PORT:-18443}-:8443 -device virtio-net-pci,netdev=n0 \
    -serial file:"$work/serial.log" -monitor none 2>"$work/qemu.err" &
qemu=$!
for _ in $(seq 600); do
    if grep -aq "Setup code" "$work/serial.log" 2>/dev/null; then
        awk -v from="$start" -v to="$(date +%s.%N)" 'BEGIN { printf "booted to the status screen in %.1f s\n", to - from }'
        sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$work/serial.log" | sed -n '/^Tether appliance/,$p' | tail -20
        exit 0
    fi
    kill -0 "$qemu" 2>/dev/null || break
    sleep 1
done
echo "error: no status screen within 10 minutes; qemu and the serial console said:" >&2
cat "$work/qemu.err" >&2
tail -30 "$work/serial.log" >&2
exit 1
