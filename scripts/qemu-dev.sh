#!/usr/bin/env bash
# Boots a disk image under QEMU for development: TCG (no KVM needed), q35,
# OVMF, the disk on virtio-scsi and the 9P shares env_share and certs_share
# as in the seed's launch lines. The serial console is on stdout; QEMU exits
# when the VM powers off (or reboots).
#
#   scripts/qemu-dev.sh DISK [-- EXTRA QEMU OPTIONS]
#
# Environment: ENV_PATH, CERT_PATH (shared directories; default: empty
# temporary ones), MEMORY (default 1G), SMP (default 2), TIMEOUT (seconds,
# default none: kill QEMU after that long), OVMF_CODE, OVMF_VARS,
# HOSTFWD (a host port: adds a NIC on QEMU's user network and forwards
# 127.0.0.1:HOSTFWD to the guest's ingress on 7002; the guest reaches the
# host's 127.0.0.1 at 10.0.2.2, e.g. a `cocos-cli cvms serve`).
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
disk="$1"; shift
[ "${1:-}" = "--" ] && shift
[ -f "$disk" ] || { echo "qemu-dev: $disk: no such disk image" >&2; exit 2; }

code="${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}"
vars_template="${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}"
for f in "$code" "$vars_template"; do
  [ -f "$f" ] || { echo "qemu-dev: $f missing (install ovmf: scripts/setup-host.sh)" >&2; exit 2; }
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$vars_template" "$tmp/OVMF_VARS.fd"
env_path="${ENV_PATH:-$tmp/env}"
cert_path="${CERT_PATH:-$tmp/certs}"
mkdir -p "$env_path" "$cert_path"

net=()
if [ -n "${HOSTFWD:-}" ]; then
  net=(-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:${HOSTFWD}-:7002"
       -device virtio-net-pci,netdev=net0,romfile=)
fi

timeout_cmd=()
[ -n "${TIMEOUT:-}" ] && timeout_cmd=(timeout --foreground -k 5 "$TIMEOUT")

exec "${timeout_cmd[@]}" qemu-system-x86_64 \
  -accel tcg \
  -cpu max \
  -machine q35 \
  -smp "${SMP:-2}" \
  -m "${MEMORY:-1G}" \
  -drive if=pflash,format=raw,unit=0,readonly=on,file="$code" \
  -drive if=pflash,format=raw,unit=1,file="$tmp/OVMF_VARS.fd" \
  -drive file="$disk",if=none,id=disk0,format=raw \
  -device virtio-scsi-pci,id=scsi0,disable-legacy=on \
  -device scsi-hd,drive=disk0,bus=scsi0.0 \
  -fsdev local,id=env_fs,path="$env_path",security_model=mapped \
  -device virtio-9p-pci,disable-legacy=on,fsdev=env_fs,mount_tag=env_share,romfile= \
  -fsdev local,id=cert_fs,path="$cert_path",security_model=mapped \
  -device virtio-9p-pci,disable-legacy=on,fsdev=cert_fs,mount_tag=certs_share,romfile= \
  -nographic \
  -nodefaults \
  -serial stdio \
  -no-reboot \
  "${net[@]}" \
  "$@"
