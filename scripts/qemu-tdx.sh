#!/usr/bin/env bash
# Launches disk.img as an Intel TDX guest with a TDX-enabled OVMF, as the
# seed's launch line does. Needs a TDX host (KVM, a TDX-capable QEMU, a
# quote generation service on vsock port 4050) and root; it does not run
# under TCG.
#
#   scripts/qemu-tdx.sh DISK OVMF [-- EXTRA QEMU OPTIONS]
#
# Environment: ENV_PATH, CERT_PATH (9P shares; required), SMP (default 16),
# MEMORY (default 8G), HOST_PORT (default 7020, forwarded to the guest's 7002).
set -euo pipefail

if [ $# -lt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
disk="$1"; ovmf="$2"; shift 2
[ "${1:-}" = "--" ] && shift
for f in "$disk" "$ovmf"; do [ -f "$f" ] || { echo "qemu-tdx: $f: no such file" >&2; exit 2; }; done
: "${ENV_PATH:?set ENV_PATH to the directory shared as env_share}"
: "${CERT_PATH:?set CERT_PATH to the directory shared as certs_share}"
mem="${MEMORY:-8G}"

exec qemu-system-x86_64 \
  -enable-kvm \
  -m "$mem" \
  -smp cores="${SMP:-16}",sockets=1,threads=1 \
  -cpu host \
  -object '{"qom-type":"tdx-guest","id":"tdx","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}' \
  -machine q35,kernel_irqchip=split,confidential-guest-support=tdx,memory-backend=mem0,hpet=off \
  -bios "$ovmf" \
  -nographic \
  -nodefaults \
  -no-reboot \
  -serial mon:stdio \
  -device virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=nic0_td,romfile= \
  -netdev user,id=nic0_td,hostfwd=tcp::"${HOST_PORT:-7020}"-:7002 \
  -object memory-backend-memfd,id=mem0,size="$mem" \
  -drive file="$disk",if=none,id=disk0,format=raw \
  -device virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true \
  -device scsi-hd,drive=disk0,bus=scsi0.0 \
  -device vhost-vsock-pci,guest-cid=6 \
  -monitor pty \
  -monitor unix:monitor,server,nowait \
  -fsdev local,id=env_fs,path="$ENV_PATH",security_model=mapped \
  -device virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=env_fs,mount_tag=env_share,romfile= \
  -fsdev local,id=cert_fs,path="$CERT_PATH",security_model=mapped \
  -device virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=cert_fs,mount_tag=certs_share,romfile= \
  "$@"
