#!/usr/bin/env bash
# Builds the same Debian minbase tree with cocos-imgbuild and with the
# pipeline it replaces (mke2fs -d, veritysetup format, genimage with the
# layout of scripts/bench/genimage.cfg), in one run, and prints the times,
# the ratios and the disk usage of the outputs against the data they hold.
# Both use the same prebuilt GRUB, kernel and initramfs files. Page cache
# warm; each variant runs RUNS times (default 3) and the fastest counts.
#
#   scripts/bench-imgbuild.sh [TREE]     (default: the Debian minbase tree of scripts/minbase-tree.sh)
set -euo pipefail

cd "$(dirname "$0")/.."
dir="${BENCH_DIR:-/var/tmp/cocos-bench}"
runs="${RUNS:-3}"
scripts/setup-host.sh
tree="${1:-$(scripts/minbase-tree.sh)}"
cargo build --release --locked -p cocos-imgbuild >/dev/null 2>&1
imgbuild="$PWD/target/release/cocos-imgbuild"
mkdir -p "$dir/in"

find "$tree" -type f -exec cat {} + >/dev/null 2>&1 || true

# Shared boot files: a GRUB image, a kernel-sized and an initramfs-sized file.
printf 'set timeout=0\n' >"$dir/in/grub.cfg"
grub-mkimage -O x86_64-efi -p /EFI/BOOT -o "$dir/in/BOOTX64.EFI" -d /usr/lib/grub/x86_64-efi \
  boot linux echo normal part_gpt fat ls search tpm
head -c 8M /dev/urandom >"$dir/in/bzImage"
head -c 3M /dev/urandom >"$dir/in/initrd.cpio.gz"

now() { date +%s%N; }
best_of() { # prints the fastest of $runs runs of "$@", in ns; "$1-prep" runs untimed first
  local best="" t0 t1
  for _ in $(seq "$runs"); do
    "$1-prep"
    sync
    t0=$(now); "$@"; t1=$(now)
    if [ -z "$best" ] || [ $((t1 - t0)) -lt "$best" ]; then best=$((t1 - t0)); fi
  done
  echo "$best"
}

# The replaced pipeline, step by step. Only the tools are timed: removing the
# previous run's outputs and staging the inputs happen before the clock starts,
# for both pipelines.
ref="$dir/ref"
ref_mkfs-prep() { rm -rf "$ref"; mkdir -p "$ref/in" "$ref/tmp"; cp "$dir/in/"* "$ref/in/"; }
ref_mkfs() { mke2fs -q -t ext4 -d "$tree" -E root_owner=0:0 "$ref/in/rootfs.ext4" "$size_k"k >/dev/null 2>&1; }
ref_verity-prep() { rm -f "$ref/in/rootfs.verity"; }
ref_verity() { veritysetup format "$ref/in/rootfs.ext4" "$ref/in/rootfs.verity" >/dev/null; }
ref_genimage-prep() { rm -rf "$ref/out" "$ref/tmp"; mkdir -p "$ref/out"; }
ref_genimage() { genimage --config scripts/bench/genimage.cfg --inputpath "$ref/in" --outputpath "$ref/out" \
    --tmppath "$ref/tmp" --rootpath "$ref/in" >/dev/null 2>&1; }

ours="$dir/ours"
our_build-prep() { rm -rf "$ours"; }
our_build() { SOURCE_DATE_EPOCH=1700000000 "$imgbuild" build --out "$ours" --rootfs "$tree" \
  --kernel "$dir/in/bzImage" --initramfs "$dir/in/initrd.cpio.gz" --bootloader "$dir/in/BOOTX64.EFI" \
  --root-owned --seed 0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0 >/dev/null; }
our_mkfs-prep() { rm -f "$dir/ours.ext4"; }
our_mkfs() { "$imgbuild" mkfs --rootfs "$tree" --out "$dir/ours.ext4" --root-owned; }

our_build-prep; our_build
size_k=$(( $(stat -c %s "$ours/rootfs.ext4") / 1024 ))

t_mkfs=$(best_of ref_mkfs)
t_verity=$(best_of ref_verity)
t_genimage=$(best_of ref_genimage)
t_ours=$(best_of our_build)
t_our_mkfs=$(best_of our_mkfs)

# Disk usage of our outputs against the data they hold (non-zero 4 KiB blocks).
held=$(python3 - "$ours" <<'PY'
import os, sys
total = 0
for name in os.listdir(sys.argv[1]):
    with open(os.path.join(sys.argv[1], name), "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            os.lseek(fd, start, os.SEEK_SET)
            left = end - start
            while left > 0:
                block = os.read(fd, min(left, 4096))
                if block.strip(b"\0"):
                    total += len(block)
                left -= len(block)
            pos = end
print(total)
PY
)
du_bytes=$(( $(du -sk "$ours" | cut -f1) * 1024 ))

ms() { awk -v ns="$1" 'BEGIN { printf "%.0f ms", ns / 1e6 }'; }
ref_total=$((t_mkfs + t_verity + t_genimage))
echo "tree: $tree ($(du -sh "$tree" | cut -f1), $(find "$tree" | wc -l) entries)"
echo "replaced pipeline: mke2fs -d $(ms $t_mkfs), veritysetup format $(ms $t_verity), genimage $(ms $t_genimage): total $(ms $ref_total)"
echo "cocos-imgbuild build: $(ms $t_ours)"
awk -v a="$ref_total" -v b="$t_ours" 'BEGIN { printf "end to end: %.2fx faster (target 3x)\n", a / b }'
awk -v a="$t_mkfs" -v b="$t_our_mkfs" -v o="$t_our_mkfs" 'BEGIN { printf "ext4 step: mke2fs -d %.0f ms, cocos-imgbuild mkfs %.0f ms: %.2fx (target 5x)\n", a/1e6, o/1e6, a / b }'
awk -v d="$du_bytes" -v h="$held" 'BEGIN { printf "du of outputs %.1f MiB for %.1f MiB of data held: %.2fx (target <= 1.1x)\n", d/1048576, h/1048576, d / h }'
