#!/usr/bin/env bash
# A dm-verity walk-through: build cocos-measure, make a sample ext4 image,
# compute its dm-verity hash tree, check it is byte-identical to what
# veritysetup writes, verify it, and show that a flipped byte is caught.
#
#   scripts/verity-demo.sh [OUT_DIR]     (default: out/verity-demo)
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-out/verity-demo}"

scripts/setup-host.sh
cargo build --release --locked -p cocos-measure
measure="$PWD/target/release/cocos-measure"

mkdir -p "$out"
cd "$out"
rm -f rootfs.ext4 rootfs.verity reference.verity rootfs.roothash tampered.ext4

# A sample root filesystem: ext4 holding this machine's /usr/share/doc, with
# room to spare. Fixed UUID, hash seed and time so reruns give the same image.
size_mib=$(( $(du -sm /usr/share/doc | cut -f1) * 2 + 64 ))
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 4096 -U 6f0e4b8e-5d0f-4a52-9a4e-2f1f0c9d8e7a \
  -E hash_seed=0b8f0d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5 -d /usr/share/doc rootfs.ext4 "${size_mib}M"

salt=$(printf 'cocos-demo-salt' | sha256sum | cut -c1-64)
uuid=2d9e9f3a-1c55-4b7e-9a0c-7d6a5e4f3b21

echo "== cocos-measure verity format"
"$measure" verity format rootfs.ext4 rootfs.verity --salt="$salt" --uuid="$uuid" \
  --root-hash-file=rootfs.roothash
root=$(cat rootfs.roothash)

echo "== veritysetup format (reference), same salt and uuid"
/usr/sbin/veritysetup format rootfs.ext4 reference.verity --salt="$salt" --uuid="$uuid" | grep 'Root hash'
cmp rootfs.verity reference.verity
echo "hash trees are byte-identical"

echo "== cocos-measure verity verify"
"$measure" verity verify rootfs.ext4 rootfs.verity "$root"

echo "== a flipped byte in the middle of the image"
cp rootfs.ext4 tampered.ext4
printf '\xff' | dd of=tampered.ext4 bs=1 seek=$((size_mib * 1024 * 1024 / 2 + 5)) conv=notrunc status=none
if "$measure" verity verify tampered.ext4 rootfs.verity "$root"; then
  echo "demo: tampering was not detected" >&2
  exit 1
fi
echo "tampering detected; artifacts in $out"
