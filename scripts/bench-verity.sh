#!/usr/bin/env bash
# Formats the same files with `veritysetup format` and with
# `cocos-measure verity format` in one run, and prints both throughputs,
# their ratio, and cocos-measure's peak memory against the hash tree size.
# Files are read from the page cache (each is read once before timing);
# each tool runs RUNS times and the fastest run counts.
#
#   scripts/bench-verity.sh [SIZE_GIB ...]     (default: 1 4)
#   BENCH_DIR=/var/tmp/cocos-bench RUNS=3 scripts/bench-verity.sh
set -euo pipefail

cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(1 4); fi
dir="${BENCH_DIR:-/var/tmp/cocos-bench}"
runs="${RUNS:-3}"

scripts/setup-host.sh
cargo build --release --locked -p cocos-measure >/dev/null 2>&1
measure="$PWD/target/release/cocos-measure"
veritysetup=/usr/sbin/veritysetup
mkdir -p "$dir"

salt=$(printf 'bench' | sha256sum | cut -c1-64)
uuid=0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0

# Runs "$@" and prints "seconds peak_kib" of the run.
timed() {
  local start end
  start=$(date +%s%N)
  /usr/bin/time -f '%M' -o "$dir/rss" "$@" >"$dir/stdout"
  end=$(date +%s%N)
  echo "$(( end - start )) $(cat "$dir/rss")"
}

# Best of $runs: prints "nanoseconds peak_kib".
best() {
  local best_ns="" best_rss="" ns rss
  for _ in $(seq "$runs"); do
    rm -f "$dir/hash"
    read -r ns rss < <(timed "$@")
    if [ -z "$best_ns" ] || [ "$ns" -lt "$best_ns" ]; then best_ns=$ns; best_rss=$rss; fi
  done
  echo "$best_ns $best_rss"
}

printf '%-6s %-22s %-22s %-7s %-16s %s\n' size "veritysetup" "cocos-measure" ratio "peak memory" "hash tree"
for gib in "${sizes[@]}"; do
  data="$dir/data-${gib}g"
  bytes=$(( gib * 1024 * 1024 * 1024 ))
  if [ ! -f "$data" ] || [ "$(stat -c %s "$data")" -ne "$bytes" ]; then
    echo "creating $data ($gib GiB of random data)" >&2
    head -c "$bytes" /dev/urandom >"$data"
  fi
  cat "$data" >/dev/null

  read -r vs_ns _ < <(best "$veritysetup" format "$data" "$dir/hash" --salt="$salt" --uuid="$uuid")
  vs_root=$(awk '/Root hash/ {print $3}' "$dir/stdout")
  read -r cm_ns cm_rss < <(best "$measure" verity format "$data" "$dir/hash" --salt="$salt" --uuid="$uuid")
  cm_root=$(awk '/Root hash/ {print $3}' "$dir/stdout")
  tree_bytes=$(( $(stat -c %s "$dir/hash") - 4096 ))
  if [ "$vs_root" != "$cm_root" ]; then
    echo "bench-verity: root hashes differ ($vs_root vs $cm_root)" >&2
    exit 1
  fi

  awk -v gib="$gib" -v bytes="$bytes" -v vs="$vs_ns" -v cm="$cm_ns" -v rss="$cm_rss" -v tree="$tree_bytes" 'BEGIN {
    vs_gbs = bytes / vs; cm_gbs = bytes / cm
    printf "%-6s %-22s %-22s %-7s %-16s %s\n", gib " GiB",
      sprintf("%.2f GB/s (%.2f s)", vs_gbs, vs / 1e9),
      sprintf("%.2f GB/s (%.2f s)", cm_gbs, cm / 1e9),
      sprintf("%.2fx", vs / cm),
      sprintf("%.1f MiB", rss / 1024),
      sprintf("%.1f MiB (limit %.1f MiB)", tree / 1048576, 64 + tree / 1048576)
  }'
done
rm -f "$dir/hash" "$dir/stdout" "$dir/rss"
