#!/usr/bin/env bash
# Builds the same disk from the same inputs with cocos-imgbuild and with the
# whole pipeline it replaces, in one run, and prints the medians, the ratios
# and the disk usage of our outputs against the data they hold.
#
# Inputs (the same for both): a root tree (default: the Debian minbase tree
# of scripts/minbase-tree.sh), Debian's kernel and module tree
# (scripts/fetch-boot-deps.sh), cocos-init and the development image's
# kernel modules.
#
# The replaced pipeline, all of it timed as one run:
#   1. the initramfs: `cpio -o -H newc | gzip -9` of a staged tree holding
#      what our generated initramfs holds (the staging itself, which the
#      Buildroot pipeline also does before its post-image script, is not
#      timed);
#   2. `mke2fs -d` of the root tree;
#   3. `veritysetup format`;
#   4. `grub-mkimage` with the configuration (root hash on the linux line)
#      embedded;
#   5. `genimage` with the layout of scripts/bench/genimage.cfg.
# Ours: `cocos-imgbuild build --init ... --modules-dir ...`, which generates
# the initramfs and runs grub-mkimage itself.
#
# Each side runs RUNS times (default 5), alternating, and the median counts.
# Before every run: the outputs of the last run are removed, `sync`, the page
# cache is dropped (needs root; without it the run says so and goes on with
# a warm cache), and the input tree is read back in, so that neither side
# pays for the other's writes or for reading a cold tree.
#
#   scripts/bench-imgbuild.sh [TREE]
set -euo pipefail

cd "$(dirname "$0")/.."
dir="${BENCH_DIR:-/var/tmp/cocos-bench}"
runs="${RUNS:-5}"
scripts/setup-host.sh
tree="${1:-$(scripts/minbase-tree.sh)}"
kernel_root="$(scripts/fetch-boot-deps.sh)"
vmlinuz="$(ls "$kernel_root"/boot/vmlinuz-* | head -n 1)"
modules_dir="$kernel_root/lib/modules/${vmlinuz##*/vmlinuz-}"
cargo build --release --locked -p cocos-imgbuild -p cocos-init >/dev/null 2>&1
imgbuild="$PWD/target/release/cocos-imgbuild"
init="$PWD/target/release/cocos-init"
modules="virtio_pci virtio_scsi sd_mod crc32c_generic ext4 dm-mod dm-verity dm-integrity dm-crypt gcm ghash-generic ctr ecb xts af_alg algif_aead configfs 9p 9pnet_virtio"
rm -rf "$dir"
mkdir -p "$dir"

drop_caches=1
if ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  echo "bench-imgbuild: cannot drop the page cache (not root?): runs start with a warm cache" >&2
  drop_caches=0
fi

# Before every timed run: no outputs left, everything on disk, a cold cache,
# then the input tree (and the other inputs) read back in.
settle() {
  rm -rf "$dir/ours" "$dir/ref/out" "$dir/ref/tmp" "$dir/ref/in"
  sync
  [ "$drop_caches" = 0 ] || echo 3 >/proc/sys/vm/drop_caches
  find "$tree" -type f -exec cat {} + >/dev/null 2>&1 || true
  cat "$vmlinuz" "$init" >/dev/null
  # The initramfs's inputs: the staged copy, and of the module tree what
  # our build reads (its directories, the index files and the modules the
  # initramfs holds), not all 390 MB of it, which would fill the cache
  # just before the timed run.
  find "$dir/stage" -type f -exec cat {} + >/dev/null 2>&1 || true
  find "$modules_dir" >/dev/null
  cat "$modules_dir"/modules.* >/dev/null 2>&1 || true
  (cd "$dir/stage" && find lib/modules -type f -name '*.ko*' -printf "$kernel_root/%p\0") |
    xargs -0 cat >/dev/null 2>&1 || true
}

ours() {
  SOURCE_DATE_EPOCH=1700000000 "$imgbuild" build --out "$dir/ours" --rootfs "$tree" \
    --kernel "$vmlinuz" --init "$init" --modules-dir "$modules_dir" --modules "$modules" \
    --initramfs-file /bin/busybox:/bin/sh --cmdline console=ttyS0 \
    --root-owned --seed 0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0 >/dev/null
}

# One untimed build of ours: the root size for mke2fs, and the initramfs
# content the replaced pipeline stages.
ours
size_k=$(($(stat -c %s "$dir/ours/rootfs.ext4") / 1024))
mkdir -p "$dir/stage"
gzip -dc "$dir/ours/rootfs.cpio.gz" | (cd "$dir/stage" && cpio -id --quiet --no-absolute-filenames)

ref() {
  local in="$dir/ref/in" roothash
  mkdir -p "$in" "$dir/ref/out"
  cp "$vmlinuz" "$in/bzImage"
  (cd "$dir/stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --reproducible --quiet) |
    gzip -9 -n >"$in/initrd.cpio.gz"
  mke2fs -q -t ext4 -d "$tree" -E root_owner=0:0 "$in/rootfs.ext4" "${size_k}k" >/dev/null 2>&1
  roothash="$(veritysetup format "$in/rootfs.ext4" "$in/rootfs.verity" | sed -n 's/^Root hash:[[:space:]]*//p')"
  printf 'set timeout=0\nsearch --no-floppy --set=root --file /bzImage\nlinux /bzImage roothash=%s console=ttyS0\ninitrd /initrd.cpio.gz\nboot\n' \
    "$roothash" >"$in/grub.cfg"
  grub-mkimage -O x86_64-efi -p /EFI/BOOT -c "$in/grub.cfg" -d /usr/lib/grub/x86_64-efi \
    -o "$in/BOOTX64.EFI" boot linux echo normal part_gpt fat ls search tpm
  genimage --config scripts/bench/genimage.cfg --inputpath "$in" --outputpath "$dir/ref/out" \
    --tmppath "$dir/ref/tmp" --rootpath "$in" >/dev/null 2>&1
}

now() { date +%s%N; }
declare -a t_ours t_ref
for i in $(seq "$runs"); do
  # Alternate which side goes first.
  for side in $( ((i % 2)) && echo "ref ours" || echo "ours ref"); do
    settle
    t0=$(now)
    "$side"
    t1=$(now)
    [ -s "$dir/$side/disk.img" ] || [ -s "$dir/$side/out/disk.img" ] ||
      { echo "bench-imgbuild: $side wrote no disk.img" >&2; exit 1; }
    if [ "$side" = ours ]; then t_ours+=($((t1 - t0))); else t_ref+=($((t1 - t0))); fi
  done
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.0f", ns / 1e6 }'; }
list() { local s="" x; for x in "$@"; do s="$s $(ms "$x")"; done; echo "${s# }"; }
m_ours=$(median "${t_ours[@]}")
m_ref=$(median "${t_ref[@]}")

# The ext4 step alone: mke2fs -d against cocos-imgbuild mkfs, same settling.
declare -a t_mke2fs t_mkfs
for i in $(seq "$runs"); do
  settle; rm -f "$dir/ref.ext4" "$dir/ours.ext4"; sync
  t0=$(now); mke2fs -q -t ext4 -d "$tree" -E root_owner=0:0 "$dir/ref.ext4" "${size_k}k" >/dev/null 2>&1; t1=$(now)
  t_mke2fs+=($((t1 - t0)))
  settle; rm -f "$dir/ref.ext4"; sync
  t0=$(now); "$imgbuild" mkfs --rootfs "$tree" --out "$dir/ours.ext4" --root-owned; t1=$(now)
  t_mkfs+=($((t1 - t0)))
  rm -f "$dir/ours.ext4"
done
m_mke2fs=$(median "${t_mke2fs[@]}")
m_mkfs=$(median "${t_mkfs[@]}")

# Disk usage of our outputs against the data they hold (non-zero 4 KiB blocks).
ours
held=$(python3 - "$dir/ours" <<'PY'
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
du_bytes=$(($(du -sk "$dir/ours" | cut -f1) * 1024))

echo "tree: $tree ($(du -sh "$tree" | cut -f1), $(find "$tree" | wc -l) entries); $runs runs each, alternating; page cache dropped: $([ "$drop_caches" = 1 ] && echo yes || echo no)"
echo "replaced pipeline (initramfs, mke2fs -d, veritysetup format, grub-mkimage, genimage): median $(ms "$m_ref") ms (runs: $(list "${t_ref[@]}"))"
echo "cocos-imgbuild build (initramfs and GRUB included): median $(ms "$m_ours") ms (runs: $(list "${t_ours[@]}"))"
awk -v a="$m_ref" -v b="$m_ours" 'BEGIN { printf "end to end: %.2fx faster (target 3x)\n", a / b }'
echo "ext4 step: mke2fs -d median $(ms "$m_mke2fs") ms (runs: $(list "${t_mke2fs[@]}")), cocos-imgbuild mkfs median $(ms "$m_mkfs") ms (runs: $(list "${t_mkfs[@]}"))"
awk -v a="$m_mke2fs" -v b="$m_mkfs" 'BEGIN { printf "ext4 step: %.2fx faster (target 5x)\n", a / b }'
awk -v d="$du_bytes" -v h="$held" 'BEGIN { printf "du of outputs %.1f MiB for %.1f MiB of data held: %.2fx (target <= 1.1x)\n", d/1048576, h/1048576, d / h }'
