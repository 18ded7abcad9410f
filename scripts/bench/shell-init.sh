#!/bin/sh
# The seed's shell init (the pipeline cocos-init replaces), for the boot
# benchmark only: the same steps with Debian's veritysetup, cryptsetup
# (its defaults: Argon2 keyslot, full integrity wipe) and mke2fs. Full
# paths: busybox sh runs its own applets first, and it has an mke2fs.
export PATH=/sbin:/bin
bb=/bin/busybox
fail() { echo "shell-init: FATAL: $*"; $bb sync; $bb poweroff -f; }

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/pts /run/cryptsetup /tmp
$bb mount -t devpts devpts /dev/pts
echo "shell-init: start uptime=$($bb cut -d' ' -f1 /proc/uptime)"
for m in $($bb sed -n 's/^ *"\(\/lib\/modules\/[^"]*\)",*$/\1/p' /etc/cocos-init.toml); do
  $bb insmod "$m" 2>/dev/null
done

roothash=$($bb sed -n 's/.*roothash=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
[ -n "$roothash" ] || fail "no roothash= on the command line"
i=0
while [ ! -b /dev/sda4 ]; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no /dev/sda4"
  $bb sleep 0.1
done

/sbin/veritysetup open /dev/sda2 root_verity /dev/sda3 "$roothash" || fail "veritysetup"
$bb mount -o ro /dev/mapper/root_verity /root || fail "mount root"

$bb head -c 64 /dev/urandom >/tmp/cocos.key
/sbin/cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-gcm-random --integrity aead \
  --key-file /tmp/cocos.key /dev/sda4 || fail "luksFormat"
/sbin/cryptsetup open --key-file /tmp/cocos.key /dev/sda4 cocos_crypt || fail "luksOpen"
/sbin/mke2fs -q -t ext4 /dev/mapper/cocos_crypt || fail "mke2fs"
$bb mount /dev/mapper/cocos_crypt /root/cocos || fail "mount cocos"
$bb mkdir -p /root/cocos/.cache/oci /root/cocos/datasets /root/cocos/docker /root/cocos/cocos_init

$bb mount -t tmpfs tmpfs /root/tmp
$bb mount -t tmpfs tmpfs /root/var
$bb mkdir -p /root/var/lib/docker
$bb mount --bind /root/cocos/docker /root/var/lib/docker
$bb mount --bind /root/cocos/cocos_init /root/cocos_init
$bb rm -f /tmp/cocos.key

$bb mount --move /proc /root/proc
$bb mount --move /sys /root/sys
$bb mount --move /dev /root/dev
exec $bb switch_root /root /sbin/init
