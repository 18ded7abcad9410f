#!/usr/bin/env bash
# The whole test suite: formatting and lints, every test (including the
# side-by-side comparisons with veritysetup), and a short fuzzing run.
# Installs what it needs; a missing reference tool fails the run.
#
#   scripts/test.sh                 everything
#   FUZZ_SECONDS=0 scripts/test.sh  skip the fuzzing run
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/setup-host.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

fuzz_seconds="${FUZZ_SECONDS:-60}"
if [ "$fuzz_seconds" -gt 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
  # cargo fuzz needs nightly flags (-Zsanitizer); the stable toolchain
  # accepts them with RUSTC_BOOTSTRAP.
  for target in $(cd measure && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
    (cd measure && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
      -max_total_time="$fuzz_seconds" -print_final_stats=0 2>&1 | tail -n 2)
  done
fi
echo "test.sh: all tests passed"
