#!/usr/bin/env bash
# Builds a development disk image: Debian's kernel (unpacked, not
# installed), an initramfs with cocos-init and the kernel modules the boot
# flow needs, and a minimal busybox root whose /sbin/init prints
# COCOS_ROOT_READY, the mount table and /etc/fstab, then powers off.
# Prints the root hash; boot the result with scripts/qemu-dev.sh OUT/disk.img.
#
#   scripts/dev-image.sh [OUT_DIR]       (default: out)
#
# Environment: COCOS_SIZE (cocos partition, default 256M), CMDLINE (extra
# kernel options, default console=ttyS0), PROFILE (cargo profile of the
# tools, default release), SOURCE_DATE_EPOCH (default 1700000000), SEED,
# INIT (another /init, e.g. the shell init of the boot benchmark) and
# INITRAMFS_FILES (more SRC:DEST entries for the initramfs, space separated),
# COCOS_BIN_DIR (take the binaries from this directory instead of building).
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-out}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
profile="${PROFILE:-release}"
kernel_root="$(scripts/fetch-boot-deps.sh)"
vmlinuz="$(ls "$kernel_root"/boot/vmlinuz-* | head -n 1)"
version="${vmlinuz##*/vmlinuz-}"

if [ -n "${COCOS_BIN_DIR:-}" ]; then
  # Binaries already built (the test suite builds the workspace once).
  bin_dir="$COCOS_BIN_DIR"
else
  echo "dev-image: building cocos-init and cocos-imgbuild ($profile)" >&2
  cargo build --locked --profile "$profile" -p cocos-init -p cocos-imgbuild >&2
  target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"
fi

# The root tree: busybox, an init that reports and powers off, the runtime
# fstab (written here so the root hash covers it) and the mount points the
# boot flow uses on the read-only root.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,etc/certs,etc/cocos,proc,sys,dev,run,tmp,var,cocos,cocos_init}
cp /bin/busybox "$root/bin/busybox"
for applet in sh cat echo mount umount poweroff sleep ls cut; do ln -s busybox "$root/bin/$applet"; done
cat >"$root/sbin/init" <<'INIT'
#!/bin/sh
echo "COCOS_ROOT_READY uptime=$(cut -d' ' -f1 /proc/uptime) $(cat /proc/cmdline)"
echo "--- /proc/mounts"
cat /proc/mounts
echo "--- /etc/fstab"
cat /etc/fstab
echo "--- end"
poweroff -f
INIT
chmod 0755 "$root/sbin/init"
# Only the root line: cocos-init adds the 9P shares and binds its corrected
# copy over /etc/fstab, so the boot tests exercise that path.
cat >"$root/etc/fstab" <<'FSTAB'
# <file system>          <mount point>  <type>  <options>  <dump> <pass>
/dev/mapper/root_verity  /              ext4    ro         0      0
FSTAB

# The image itself (partitions, verity, modules, command line, seed) is
# described in scripts/dev-image.toml; the inputs made here are flags.
overrides=()
[ -n "${CMDLINE:-}" ] && overrides+=(--cmdline "$CMDLINE")
[ -n "${COCOS_SIZE:-}" ] && overrides+=(--cocos-size "$COCOS_SIZE")
[ -n "${SEED:-}" ] && overrides+=(--seed "$SEED")
if [ -n "${INITRAMFS_FILES:-}" ]; then
  overrides+=(--initramfs-file /bin/busybox:/bin/sh)
  for f in $INITRAMFS_FILES; do overrides+=(--initramfs-file "$f"); done
fi

SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}" "$bin_dir/cocos-imgbuild" build \
  --config "$PWD/scripts/dev-image.toml" \
  --out "$out" \
  --rootfs "$root" \
  --kernel "$vmlinuz" \
  --init "${INIT:-$bin_dir/cocos-init}" \
  --modules-dir "$kernel_root/lib/modules/$version" \
  "${overrides[@]}"
