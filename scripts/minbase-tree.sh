#!/usr/bin/env bash
# Creates (once) a Debian bookworm minbase tree with debootstrap and prints
# its path. The e2fsck test on a real distribution tree and the imgbuild
# benchmark use it. Needs root (debootstrap creates device nodes and
# chowns) and network access to the Debian mirror.
#
#   scripts/minbase-tree.sh [DIR]    (default: $COCOS_MINBASE or /var/tmp/cocos-minbase)
set -euo pipefail

tree="${1:-${COCOS_MINBASE:-/var/tmp/cocos-minbase}}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ ! -f "$tree.complete" ]; then
  command -v debootstrap >/dev/null || { echo "minbase-tree: debootstrap missing: run scripts/setup-host.sh" >&2; exit 1; }
  rm -rf "$tree.partial"
  echo "minbase-tree: creating a Debian bookworm minbase tree in $tree (debootstrap, about a minute)" >&2
  if ! debootstrap --variant=minbase bookworm "$tree.partial" "$mirror" >"$tree.log" 2>&1; then
    echo "minbase-tree: debootstrap failed; see $tree.log" >&2
    tail -n 5 "$tree.log" >&2
    exit 1
  fi
  # Caches differ between runs; the image of a tree must not depend on them.
  rm -rf "$tree.partial/var/cache/apt/archives/"*.deb
  rm -rf "$tree"
  mv "$tree.partial" "$tree"
  touch "$tree.complete"
fi
echo "$tree"
