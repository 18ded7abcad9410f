#!/usr/bin/env bash
# Creates (once) the Debian bookworm tree the agent image is built from:
# debootstrap minbase plus systemd, udev, dbus, python3 (with venv and pip
# for python algorithms) and CA certificates, then strips what a
# read-only root must not carry (machine identity, the build host's name
# and resolver, /var). Prints its path. Needs root and the Debian mirror.
#
#   scripts/agent-root.sh [DIR]    (default: $COCOS_AGENT_ROOT or /var/tmp/cocos-agent-root)
set -euo pipefail

tree="${1:-${COCOS_AGENT_ROOT:-/var/tmp/cocos-agent-root}}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=systemd-sysv,udev,dbus,python3,python3-venv,python3-pip,ca-certificates
stamp="$tree.complete"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$packages" ]; then
  command -v debootstrap >/dev/null || { echo "agent-root: debootstrap missing: run scripts/setup-host.sh" >&2; exit 1; }
  rm -rf "$tree.partial"
  echo "agent-root: creating a Debian bookworm tree with systemd and python3 in $tree (debootstrap, 1-2 minutes)" >&2
  if ! debootstrap --variant=minbase --include="$packages" bookworm "$tree.partial" "$mirror" >"$tree.log" 2>&1; then
    echo "agent-root: debootstrap failed; see $tree.log" >&2
    tail -n 5 "$tree.log" >&2
    exit 1
  fi
  t="$tree.partial"
  # Identity: an empty machine-id makes systemd generate a transient one
  # on the read-only root without a first-boot run.
  : >"$t/etc/machine-id"
  rm -f "$t/var/lib/dbus/machine-id"
  # cocos-init mounts a tmpfs over /var and systemd-tmpfiles rebuilds it:
  # the tree's /var is dead weight (and carries POSIX ACLs images refuse).
  find "$t/var" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  rm -rf "$t/usr/share/doc" "$t/usr/share/man" "$t/usr/share/locale"
  rm -rf "$tree"
  mv "$t" "$tree"
  echo "$packages" >"$stamp"
fi
echo "$tree"
