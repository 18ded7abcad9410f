#!/usr/bin/env bash
# Times sev-snp-measure 0.0.13 (PyPI) and `cocos-measure snp` end to end
# (process start to exit) on the same inputs, in one run, and prints both
# times and their ratio. Each tool runs RUNS times per case; the median
# counts. The digests must agree, or the script fails.
#
#   scripts/bench-snp.sh
#   RUNS=20 VECTORS=../shared/vectors scripts/bench-snp.sh
set -euo pipefail

cd "$(dirname "$0")/.."
runs="${RUNS:-10}"
vectors="${VECTORS:-../shared/vectors}"
in="$vectors/inputs"
[ -d "$in" ] || { echo "bench-snp: no vectors at $vectors (set VECTORS)" >&2; exit 1; }

scripts/setup-python-refs.sh
reference="${SEV_SNP_MEASURE:-${PYTHON_REFS_VENV:-/var/tmp/cocos-python-refs}/bin/sev-snp-measure}"
cargo build --release --locked -p cocos-measure >/dev/null 2>&1
ours="${CARGO_TARGET_DIR:-$PWD/target}/release/cocos-measure"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Prints the median wall time of RUNS runs of "$@", in nanoseconds; the
# last run's stdout is left in $out. EPOCHREALTIME (bash 5) reads the clock
# without forking, so the timer adds no process start to either tool.
median_ns() {
  local times=() start end
  for _ in $(seq "$runs"); do
    start=$EPOCHREALTIME
    "$@" >"$out"
    end=$EPOCHREALTIME
    times+=($(( (${end/./} - ${start/./}) * 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

bench() {
  local name=$1; shift
  local ref_ns our_ns ref_digest our_digest
  ref_ns=$(median_ns "$reference" "$@"); ref_digest=$(cat "$out")
  our_ns=$(median_ns "$ours" snp "$@"); our_digest=$(cat "$out")
  if [ "$ref_digest" != "$our_digest" ]; then
    echo "bench-snp: $name: digests differ ($ref_digest vs $our_digest)" >&2
    exit 1
  fi
  awk -v n="$name" -v r="$ref_ns" -v o="$our_ns" 'BEGIN {
    printf "%-44s %10.1f ms %10.1f ms %8.1fx\n", n, r / 1e6, o / 1e6, r / o }'
}

printf '%-44s %13s %13s %9s\n' "case (median of $runs runs)" "sev-snp-measure" "cocos-measure" "ratio"
bench "snp, Debian kernel + initrd + cmdline, 4 vCPUs" \
  --mode=snp --vcpus=4 --vcpu-type=EPYC-v4 --ovmf="$in/fixtures/ovmf_AmdSev_suffix.bin" \
  --kernel="$in/debian/vmlinuz-6.1.0-56-amd64" --initrd="$in/ird.cpio.gz" \
  --append="console=ttyS0 loglevel=7"
bench "snp, 16 vCPUs, Debian kernel + initrd" \
  --mode=snp --vcpus=16 --vcpu-type=EPYC-Genoa --ovmf="$in/fixtures/ovmf_AmdSev_suffix.bin" \
  --kernel="$in/debian/vmlinuz-6.1.0-56-amd64" --initrd="$in/ird.cpio.gz" \
  --append="console=ttyS0 loglevel=7" --guest-features=0x21
bench "snp, 16 vCPUs, Debian OVMF_CODE.fd (2 MiB)" \
  --mode=snp --vcpus=16 --vcpu-type=EPYC-Milan --ovmf="$in/debian/OVMF_CODE.fd"
