#!/usr/bin/env bash
# Boot speed: boots the same development image with cocos-init and with the
# seed's shell init (scripts/bench/shell-init.sh: the same steps with
# Debian's veritysetup, cryptsetup with its defaults and mke2fs in the
# initramfs), for cocos partitions of 256 MiB and 4 GiB, and prints the time
# from the start of PID 1 (the kernel's "Run /init") to the root's init
# (switch_root done), the ratios, and the kernel errors in each log. Exits 1
# when a boot does not reach the root's init or its log has a kernel error:
# an I/O or integrity error, INTEGRITY AEAD ERROR, or any device-mapper:
# line that is not one of the informational lines of a clean boot (the same
# rule as the boot tests, cocos_e2e::kernel_errors).
# Under QEMU TCG, like the tests; expect several minutes for the shell init
# at 4 GiB (it wipes the integrity tags).
#
#   scripts/bench-boot.sh [SIZE ...]     (default: 256M 4G)
set -euo pipefail

cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(256M 4G)
work="${BENCH_DIR:-/var/tmp/cocos-bench-boot}"
mkdir -p "$work"

# Seconds from "Run /init" to COCOS_ROOT_READY in a serial log.
pid1_to_root() {
  local start end
  start="$(sed -n 's/^\[ *\([0-9.]*\)\] Run \/init as init process.*/\1/p' "$1" | head -n 1)"
  end="$(sed -n 's/.*COCOS_ROOT_READY uptime=\([0-9.]*\).*/\1/p' "$1" | head -n 1)"
  if [ -n "$start" ] && [ -n "$end" ]; then
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
  else
    echo failed
  fi
}
# The lines of a serial log with a kernel error.
kernel_errors() {
  awk '
    { sub(/\r$/, "") }
    /I\/O error|critical medium error|integrity: error|EXT4-fs error|INTEGRITY AEAD ERROR/ { print; next }
    /device-mapper:/ {
      dm = substr($0, index($0, "device-mapper:"))
      if (dm !~ /^device-mapper: (core: CONFIG_IMA_DISABLE_HTABLE is disabled\. Duplicate IMA measurements will not be recorded in the IMA log\.|uevent: version [0-9.]+|ioctl: [0-9.]+-ioctl \([^)]*\) initialised: dm-devel@redhat\.com|verity: [^ "]+ using implementation "[^ "]+")$/) print
    }' "$1"
}

declare -A result errors
for size in "${sizes[@]}"; do
  for init in cocos shell; do
    out="$work/$init-$size"
    if [ "$init" = cocos ]; then
      COCOS_SIZE="$size" scripts/dev-image.sh "$out" >/dev/null
    else
      COCOS_SIZE="$size" INIT="$PWD/scripts/bench/shell-init.sh" \
        INITRAMFS_FILES="/bin/busybox:/bin/busybox /lib/x86_64-linux-gnu/libgcc_s.so.1:/lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/sbin/cryptsetup:/sbin/cryptsetup /usr/sbin/veritysetup:/sbin/veritysetup /usr/sbin/mke2fs:/sbin/mke2fs" \
        scripts/dev-image.sh "$out" >/dev/null
    fi
    echo "booting $init init, cocos partition $size" >&2
    TIMEOUT=1200 scripts/qemu-dev.sh "$out/disk.img" >"$out/serial.log" 2>&1 || true
    result[$init-$size]="$(pid1_to_root "$out/serial.log")"
    kernel_errors "$out/serial.log" >"$out/kernel-errors.txt"
    errors[$init-$size]="$(wc -l <"$out/kernel-errors.txt")"
  done
done

printf '%-10s %-26s %-26s %s\n' "cocos" "cocos-init (s)" "shell init (s)" "ratio"
for size in "${sizes[@]}"; do
  c="${result[cocos-$size]}"; s="${result[shell-$size]}"
  ratio="$(awk -v c="$c" -v s="$s" 'BEGIN { if (c + 0 > 0 && s + 0 > 0) printf "%.2fx", c / s; else print "-" }')"
  printf '%-10s %-26s %-26s %s\n' "$size" "$c (${errors[cocos-$size]} kernel errors)" "$s (${errors[shell-$size]} kernel errors)" "$ratio"
done
first="${sizes[0]}"; last="${sizes[${#sizes[@]}-1]}"
awk -v a="${result[cocos-$first]}" -v b="${result[cocos-$last]}" -v f="$first" -v l="$last" \
  'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "cocos-init at %s / at %s: %.2fx (target <= 1.2x)\n", l, f, b / a }'
echo "logs: $work/*/serial.log"

status=0
for size in "${sizes[@]}"; do
  for init in cocos shell; do
    out="$work/$init-$size"
    if [ "${result[$init-$size]}" = failed ]; then
      echo "bench-boot: $init init, cocos partition $size: the root's init never ran (see $out/serial.log)" >&2
      status=1
    fi
    if [ -s "$out/kernel-errors.txt" ]; then
      echo "bench-boot: $init init, cocos partition $size: kernel errors:" >&2
      sed 's/^/  /' "$out/kernel-errors.txt" >&2
      status=1
    fi
  done
done
exit "$status"
