#!/usr/bin/env bash
# The whole test suite: formatting and lints, every test (including the
# side-by-side comparisons with veritysetup), and a short fuzzing run.
# Installs what it needs; a missing reference tool fails the run.
#
#   scripts/test.sh                 everything
#   FUZZ_SECONDS=0 scripts/test.sh  skip the fuzzing run (default: 30 s per target)
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/setup-host.sh
# sev-snp-measure (PyPI), the reference of the SNP launch-digest tests.
scripts/setup-python-refs.sh
# Debian's kernel package, unpacked (not installed): the initramfs and boot tests.
scripts/fetch-boot-deps.sh >/dev/null
# A Debian minbase tree for the e2fsck test on a real distribution tree.
COCOS_MINBASE="$(scripts/minbase-tree.sh)"
export COCOS_MINBASE

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# End to end: build the development image (cocos-init, its initramfs, a
# busybox root) and boot it under QEMU, plain and attacked.
e2e_dir="$PWD/target/e2e-image"
PROFILE=dev scripts/dev-image.sh "$e2e_dir" >/dev/null
COCOS_E2E_DIR="$e2e_dir" cargo test --locked -p cocos-e2e -- --ignored --test-threads=1

fuzz_seconds="${FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
  # cargo fuzz needs nightly flags (-Zsanitizer); the stable toolchain
  # accepts them with RUSTC_BOOTSTRAP.
  # Seed the GPT reader with a real table written by sgdisk (mode byte 0,
  # then a 64 KiB disk), so mutations get past the signatures and CRCs.
  seed_dir=imgbuild/fuzz/corpus/gpt_reader
  mkdir -p "$seed_dir"
  seed_disk="$(mktemp)"
  truncate -s 64K "$seed_disk"
  sgdisk -a 1 -n 1:40:50 -t 1:8300 -n 2:51:60 "$seed_disk" >/dev/null
  { printf '\0'; cat "$seed_disk"; } >"$seed_dir/sgdisk-seed"
  rm -f "$seed_disk"
  # Seed the tar reader with what GNU tar writes: long names, links, sparse
  # members in the old GNU format and in PAX format 1.0.
  seed_dir=imgbuild/fuzz/corpus/tar_reader
  mkdir -p "$seed_dir"
  seed_tree="$(mktemp -d)"
  mkdir -p "$seed_tree/d/$(printf 'n%.0s' {1..120})"
  echo data >"$seed_tree/d/file"
  ln "$seed_tree/d/file" "$seed_tree/hard"
  ln -s d/file "$seed_tree/link"
  truncate -s 64K "$seed_tree/sparse"
  echo x | dd of="$seed_tree/sparse" bs=1 seek=40000 conv=notrunc status=none
  tar --sparse --format=gnu -cf "$seed_dir/gnu-seed" -C "$seed_tree" .
  tar --sparse --format=posix -cf "$seed_dir/pax-seed" -C "$seed_tree" .
  rm -rf "$seed_tree"
  # Seed the ESP reader with a small FAT12 filesystem made by mkfs.fat and
  # mtools: directories, a long name, a file over several clusters.
  seed_dir=imgbuild/fuzz/corpus/esp_reader
  mkdir -p "$seed_dir"
  seed_img="$(mktemp -u)"
  mkfs.fat -C "$seed_img" 64 >/dev/null
  printf 'set timeout=0\n' | MTOOLS_SKIP_CHECK=1 mcopy -i "$seed_img" - ::/grub.cfg
  MTOOLS_SKIP_CHECK=1 mmd -i "$seed_img" ::/EFI ::/EFI/BOOT
  head -c 3000 /dev/zero | tr '\0' x | MTOOLS_SKIP_CHECK=1 mcopy -i "$seed_img" - "::/EFI/BOOT/a long name.bin"
  mv "$seed_img" "$seed_dir/mkfs-seed"
  for crate in measure imgbuild initrd; do
    for target in $(cd "$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
      echo "fuzzing $crate/$target for ${fuzz_seconds}s"
      (cd "$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
        -max_total_time="$fuzz_seconds" -max_len=131072 -print_final_stats=0 2>&1 | tail -n 2)
    done
  done
fi
echo "test.sh: all tests passed"
