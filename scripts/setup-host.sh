#!/usr/bin/env bash
# Installs the Debian packages the project's commands, tests and benchmarks
# need, when they are missing. Needs root or sudo; run on Debian 12 or later.
#
#   cryptsetup-bin      veritysetup: the dm-verity reference
#   e2fsprogs           e2fsck, debugfs, mke2fs: ext4 checks and reference
#   dosfstools mtools   fsck.fat, mdir/mtype/mcopy: ESP checks
#   gdisk fdisk         sgdisk -v, sfdisk --json: partition table checks
#   grub-efi-amd64-bin grub-common   GRUB EFI modules and grub-mkimage
#   genimage debootstrap   the replaced pipeline and the Debian tree of the benchmark
#   time                /usr/bin/time: peak memory in the benchmarks
#   libcryptsetup-dev libclang-dev clang pkg-config   cocos-init's libcryptsetup bindings
#   qemu-system-x86 ovmf   booting disk.img (TCG) in the end-to-end tests
#   busybox-static cpio    the test root's /sbin/init and the debug shell; cpio -t checks
#   kmod zstd           modinfo/depmod (module order reference), compressed-module tests
#   binutils            readelf: the ELF interpreter and DT_NEEDED reference
#   protobuf-compiler libprotobuf-dev   protoc and the well-known .proto files: cocos-proto's
#                       build, and protoc --decode_raw as the wire-format reference
#   golang-go           Go's encoding/json and archive/zip: the manifest JSON and zip reference
#   python3-venv python3-pip   the runner's python algorithms (per-run venv, pip install)
#   docker.io curl      the runner's docker algorithms (a real Docker Engine) and the
#                       egress proxy's tests (curl -x)
#   openssl             certificates and signatures of the agent tests
set -euo pipefail

packages=(cryptsetup-bin e2fsprogs dosfstools mtools gdisk fdisk grub-efi-amd64-bin grub-common
  genimage debootstrap time libcryptsetup-dev libclang-dev clang pkg-config qemu-system-x86 ovmf
  busybox-static cpio kmod zstd binutils protobuf-compiler libprotobuf-dev golang-go
  python3-venv python3-pip docker.io curl openssl)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-host: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup-host: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
