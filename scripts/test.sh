#!/usr/bin/env bash
# The whole test suite: formatting and lints, every test (including the
# side-by-side comparisons with veritysetup), and a short fuzzing run.
# Installs what it needs; a missing reference tool fails the run.
#
#   scripts/test.sh                 everything
#   FUZZ_SECONDS=0 scripts/test.sh  skip the fuzzing run (default: 15 s per target)
#
# Each stage prints how long it took ("test.sh: <stage>: N s"), so a slow CI
# run shows where the time went. All fuzz crates share one target directory
# (target/fuzz): their sanitizer builds of common crates are made once.
#
# The fuzzing run fails when a crate's `cargo fuzz list` fails or lists
# nothing, and when any target fails; it ends by saying how many ran.
set -euo pipefail

# The fuzz targets of crate directory $1, one per line. Fails (and says
# why) when `cargo fuzz list` fails or lists nothing: a fuzzing run that
# fuzzes nothing must not pass.
fuzz_targets() {
  local crate=$1 list
  if ! list="$(cd "$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz list)"; then
    echo "test.sh: \`cargo fuzz list\` failed in $crate" >&2
    return 1
  fi
  if [ -z "${list//[[:space:]]/}" ]; then
    echo "test.sh: \`cargo fuzz list\` lists no fuzz target in $crate" >&2
    return 1
  fi
  printf '%s\n' "$list"
}

# Fuzzes target $2 of crate directory $1 for $3 seconds. The whole output
# goes to $4; on success its last two lines (the final stats) are shown.
# On failure (a crash, a leak, a timeout, a build error) the end of the
# log, with the crash artifact's path, is shown and the function fails.
fuzz_run() {
  local crate=$1 target=$2 seconds=$3 log=$4 status=0
  (cd "$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$FUZZ_TARGET_DIR" "$target" -- \
    -max_total_time="$seconds" -max_len=131072 -print_final_stats=0) >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "test.sh: fuzz target $crate/$target failed (exit status $status); log: $log" >&2
    return 1
  fi
  tail -n 2 "$log"
}

# Fuzzes every target of each crate directory given after $1 (seconds per
# target) and $2 (the log directory), then says how many ran. The target
# list is taken first, so that a failing `cargo fuzz list` stops the run
# (a `for` over `$(cargo fuzz list)` would go on with nothing to fuzz).
fuzz_all() {
  local seconds=$1 log_dir=$2 crate target targets fuzzed=0
  shift 2
  for crate in "$@"; do
    targets="$(fuzz_targets "$crate")" || return 1
    while IFS= read -r target; do
      [ -n "$target" ] || continue
      echo "fuzzing $crate/$target for ${seconds}s"
      fuzz_run "$crate" "$target" "$seconds" "$log_dir/$crate-$target.log" || return 1
      fuzzed=$((fuzzed + 1))
    done <<<"$targets"
  done
  if [ "$fuzzed" -eq 0 ]; then
    echo "test.sh: no fuzz target ran" >&2
    return 1
  fi
  echo "test.sh: fuzzed $fuzzed targets (${seconds}s each) in $*"
}

# Prints how long the stage named $1 took since the previous call.
stage_done() {
  local now
  now=$(date +%s)
  echo "test.sh: $1: $((now - stage_start)) s (total $((now - test_start)) s)"
  stage_start=$now
}

# `source scripts/test.sh` defines the functions above and runs nothing.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

test_start=$(date +%s)
stage_start=$test_start

cd "$(dirname "$0")/.."
FUZZ_TARGET_DIR="$PWD/target/fuzz"
scripts/setup-host.sh
# sev-snp-measure (PyPI), the reference of the SNP launch-digest tests.
scripts/setup-python-refs.sh
# Debian's kernel package, unpacked (not installed): the initramfs and boot tests.
scripts/fetch-boot-deps.sh >/dev/null
# A Debian minbase tree for the e2fsck test on a real distribution tree.
COCOS_MINBASE="$(scripts/minbase-tree.sh)"
export COCOS_MINBASE
stage_done setup

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
stage_done "fmt and clippy"
# One build of every target: the tests, and the binaries that the image
# scripts and the end-to-end tests use (COCOS_BIN_DIR), with one feature set,
# so no crate is compiled twice.
cargo build --workspace --all-targets --locked
stage_done build
cargo test --workspace --locked
stage_done "workspace tests"
# The runner's docker algorithms, against a real Docker Engine (started here
# when none answers).
agent/runner/tests/docker-setup.sh
cargo test --locked -p cocos-runner --test docker -- --ignored
stage_done "docker tests"

# End to end: build the development image (cocos-init, its initramfs, a
# busybox root) and boot it under QEMU, plain and attacked.
e2e_dir="$PWD/target/e2e-image"
COCOS_BIN_DIR="$PWD/target/debug" scripts/dev-image.sh "$e2e_dir" >/dev/null
COCOS_E2E_DIR="$e2e_dir" cargo test --locked -p cocos-e2e --test boot -- --ignored --test-threads=1
stage_done "boot tests"
# The whole job: the agent image (Debian, systemd, the services) runs a
# binary, a Python and a Wasm computation sent by cocos-cli.
agent_dir="$PWD/target/e2e-agent"
COCOS_BIN_DIR="$PWD/target/debug" scripts/agent-image.sh "$agent_dir" >/dev/null
CLI="$PWD/target/debug/cocos-cli" COCOS_AGENT_E2E_DIR="$agent_dir" \
  cargo test --locked -p cocos-e2e --test agent -- --ignored --test-threads=1
stage_done "agent tests"

fuzz_seconds="${FUZZ_SECONDS:-15}"
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
  # Seed the GRUB image reader with what grub-mkimage writes: a whole EFI
  # image without modules (mode byte 0; under the 128 KiB input limit) and
  # its bare mods section (mode byte 1), configuration and prefix embedded.
  seed_dir=imgbuild/fuzz/corpus/grub_image
  mkdir -p "$seed_dir"
  seed_tmp="$(mktemp -d)"
  printf 'set timeout=0\nlinux /bzImage roothash=00ff console=ttyS0\nboot\n' >"$seed_tmp/grub.cfg"
  grub-mkimage -O x86_64-efi -p /EFI/BOOT -c "$seed_tmp/grub.cfg" \
    -d /usr/lib/grub/x86_64-efi -o "$seed_tmp/grub.efi"
  objcopy -O binary --only-section=mods "$seed_tmp/grub.efi" "$seed_tmp/mods"
  { printf '\0'; cat "$seed_tmp/grub.efi"; } >"$seed_dir/mkimage-seed"
  { printf '\1'; cat "$seed_tmp/mods"; } >"$seed_dir/mods-seed"
  rm -rf "$seed_tmp"
  log_dir="$PWD/target/fuzz-logs"
  mkdir -p "$log_dir"
  mkdir -p "$log_dir/agent" && fuzz_all "$fuzz_seconds" "$log_dir" measure imgbuild initrd agent/manifest agent/logfwd agent/cvms
  stage_done fuzzing
fi
echo "test.sh: all tests passed"
