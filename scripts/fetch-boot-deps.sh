#!/usr/bin/env bash
# Fetches what booting disk.img needs, without installing a kernel: Debian's
# current linux-image-amd64 kernel package, downloaded with `apt-get
# download` and unpacked with `dpkg -x` (nothing installed), plus OVMF and
# GRUB's EFI modules (scripts/setup-host.sh). Prints the unpacked kernel's
# directory, which holds boot/vmlinuz-<version> and lib/modules/<version>.
#
#   scripts/fetch-boot-deps.sh [DIR]     (default: $COCOS_KERNEL_DIR or /var/tmp/cocos-kernel)
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/setup-host.sh
dir="${1:-${COCOS_KERNEL_DIR:-/var/tmp/cocos-kernel}}"
mkdir -p "$dir"
pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
fi
[ -n "$pkg" ] || { echo "fetch-boot-deps: cannot resolve linux-image-amd64" >&2; exit 1; }
version="${pkg#linux-image-}"
if [ ! -f "$dir/root/boot/vmlinuz-$version" ]; then
  echo "fetch-boot-deps: downloading $pkg" >&2
  rm -rf "$dir/root" "$dir"/*.deb
  (cd "$dir" && apt-get download "$pkg" >/dev/null)
  dpkg -x "$dir"/"$pkg"_*.deb "$dir/root"
fi
for f in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd; do
  [ -f "$f" ] || { echo "fetch-boot-deps: $f missing (package ovmf)" >&2; exit 1; }
done
echo "$dir/root"
