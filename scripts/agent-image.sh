#!/usr/bin/env bash
# Builds the agent image: a Debian root (debootstrap minbase, systemd,
# python3; scripts/agent-root.sh) with the agent services (the multi-call
# binary cocos-agent, one systemd unit per service, the runner's user),
# Debian's kernel, and an initramfs with cocos-init, assembled into a
# bootable disk.img by cocos-imgbuild. Prints the root hash.
#
#   scripts/agent-image.sh [OUT_DIR]       (default: out-agent)
#
# Boot it with: HOSTFWD=7002 scripts/qemu-dev.sh OUT_DIR/disk.img
# The services read /etc/cocos/environment from the 9P environment share
# (ENV_PATH for qemu-dev.sh); see agent/README.md for its keys.
#
# Environment: PROFILE (cargo profile, default release), SOURCE_DATE_EPOCH
# (default 1700000000), SEED, COCOS_SIZE, CMDLINE (extra kernel options),
# COCOS_BIN_DIR (take the binaries from this directory instead of building).
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-out-agent}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
profile="${PROFILE:-release}"
kernel_root="$(scripts/fetch-boot-deps.sh)"
vmlinuz="$(ls "$kernel_root"/boot/vmlinuz-* | head -n 1)"
version="${vmlinuz##*/vmlinuz-}"
base="$(scripts/agent-root.sh)"

if [ -n "${COCOS_BIN_DIR:-}" ]; then
  # Binaries already built (the test suite builds the workspace once).
  bin_dir="$COCOS_BIN_DIR"
else
  echo "agent-image: building cocos-init, cocos-imgbuild and cocos-agent ($profile)" >&2
  cargo build --locked --profile "$profile" -p cocos-init -p cocos-imgbuild -p cocos-agent >&2
  target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
cp -a "$base" "$root"

# The services.
# Stripped: a dev build carries half a gigabyte of debug information.
install -s -m 0755 "$bin_dir/cocos-agent" "$root/usr/bin/cocos-agent"
for unit in agent/systemd/*.service; do
  install -m 0644 "$unit" "$root/etc/systemd/system/"
  ln -sf "/etc/systemd/system/${unit##*/}" "$root/etc/systemd/system/multi-user.target.wants/${unit##*/}"
done
install -D -m 0644 agent/systemd/cocos-tmpfiles.conf "$root/usr/lib/tmpfiles.d/cocos.conf"
install -D -m 0644 agent/systemd/cocos-sysusers.conf "$root/usr/lib/sysusers.d/cocos.conf"
# The runner's user exists in the image: the root is read-only at run time.
grep -q '^cocos-runner:' "$root/etc/passwd" ||
  useradd --root "$root" --system --user-group --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin cocos-runner

# Mount points on the read-only root (cocos-init mounts /cocos; the 9P
# shares go on /etc/cocos and /etc/certs).
mkdir -p "$root"/{cocos,cocos_init,etc/cocos,etc/certs}

# Identity and network: our own names, a static resolver (QEMU user
# networking's), DHCP on the NIC through systemd-networkd.
echo cocos >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcocos\n::1\tlocalhost\n' >"$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/50-dhcp.network"
ln -sf /lib/systemd/system/systemd-networkd.service \
  "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# Without a NIC, wait-online would fail after 120 s.
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Unit]\nConditionPathExistsGlob=/sys/class/net/e*\n\n[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60\n' \
  >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"
# Timers that write to the read-only root.
for t in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer; do
  rm -f "$root/etc/systemd/system/timers.target.wants/$t"
done
cat >"$root/etc/fstab" <<'FSTAB'
# <file system>          <mount point>  <type>  <options>  <dump> <pass>
/dev/mapper/root_verity  /              ext4    ro         0      0
FSTAB

overrides=()
[ -n "${CMDLINE:-}" ] && overrides+=(--cmdline "$CMDLINE")
[ -n "${COCOS_SIZE:-}" ] && overrides+=(--cocos-size "$COCOS_SIZE")
[ -n "${SEED:-}" ] && overrides+=(--seed "$SEED")

SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}" "$bin_dir/cocos-imgbuild" build \
  --config "$PWD/scripts/agent-image.toml" \
  --out "$out" \
  --rootfs "$root" \
  --kernel "$vmlinuz" \
  --init "$bin_dir/cocos-init" \
  --modules-dir "$kernel_root/lib/modules/$version" \
  "${overrides[@]}"
