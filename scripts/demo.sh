#!/usr/bin/env bash
# The main job: on a fresh Debian 12 machine with a Rust toolchain, install
# what is needed (Debian packages; Debian's kernel is downloaded and
# unpacked, not installed), build the tools, build a disk image whose root
# is verified with dm-verity and whose /cocos is encrypted at boot, and boot
# it under QEMU (TCG, OVMF). The serial console is shown; the VM powers off
# by itself after its root reports COCOS_ROOT_READY and its mounts.
#
#   scripts/demo.sh [OUT_DIR]     (default: out)
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-out}"
scripts/dev-image.sh "$out"
echo
echo "== booting $out/disk.img (root hash $(cat "$out/rootfs.roothash"))"
exec scripts/qemu-dev.sh "$out/disk.img"
