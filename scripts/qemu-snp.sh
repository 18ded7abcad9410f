#!/usr/bin/env bash
# Launches disk.img as an AMD SEV-SNP guest from an IGVM firmware file, as
# the seed's launch line does. Needs an SNP host (KVM, a QEMU with IGVM
# support) and root; it does not run under TCG. The launch digest a verifier
# should expect comes from `cocos-measure igvm IGVM`.
#
#   scripts/qemu-snp.sh DISK IGVM [-- EXTRA QEMU OPTIONS]
#
# Environment: ENV_PATH, CERT_PATH (9P shares; required), SMP (default 16),
# MEMORY (default 8G), HOST_PORT (default 7020, forwarded to the guest's 7002).
set -euo pipefail

if [ $# -lt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
disk="$1"; igvm="$2"; shift 2
[ "${1:-}" = "--" ] && shift
for f in "$disk" "$igvm"; do [ -f "$f" ] || { echo "qemu-snp: $f: no such file" >&2; exit 2; }; done
: "${ENV_PATH:?set ENV_PATH to the directory shared as env_share}"
: "${CERT_PATH:?set CERT_PATH to the directory shared as certs_share}"
mem="${MEMORY:-8G}"

exec qemu-system-x86_64 \
  -enable-kvm \
  -cpu EPYC-v4 \
  -machine q35 \
  -smp "${SMP:-16}",sockets=1,threads=1 \
  -m "$mem",slots=5,maxmem=40G \
  -netdev user,id=vmnic,hostfwd=tcp::"${HOST_PORT:-7020}"-:7002 \
  -device virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=vmnic,romfile= \
  -machine confidential-guest-support=sev0,memory-backend=ram1,igvm-cfg=igvm0 \
  -object memory-backend-memfd,id=ram1,size="$mem",share=true,prealloc=false,reserve=false \
  -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1 \
  -drive file="$disk",if=none,id=disk0,format=raw \
  -device virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true \
  -device scsi-hd,drive=disk0,bus=scsi0.0 \
  -object igvm-cfg,id=igvm0,file="$igvm" \
  -nographic \
  -monitor pty \
  -monitor unix:monitor,server,nowait \
  -fsdev local,id=env_fs,path="$ENV_PATH",security_model=mapped \
  -device virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=env_fs,mount_tag=env_share,romfile= \
  -fsdev local,id=cert_fs,path="$CERT_PATH",security_model=mapped \
  -device virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=cert_fs,mount_tag=certs_share,romfile= \
  "$@"
