#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine with a Rust toolchain:
# installs what is needed (Debian packages; Debian's kernel is downloaded
# and unpacked, not installed), builds the tools and the agent image
# (a Debian root with systemd and the agent services, verified with
# dm-verity, /cocos encrypted at boot), boots it under QEMU (TCG, OVMF),
# sends it a computation manifest, uploads an algorithm and a dataset with
# cocos-cli over TLS, and prints the result.
#
#   scripts/demo.sh [OUT_DIR]     (default: out)
#
# PROFILE=dev builds faster (unoptimised tools, optimised dependencies).
# The busybox development image of the boot tests is scripts/dev-image.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-out}"
scripts/setup-host.sh
echo "== 1. building the agent image in $out" >&2
scripts/agent-image.sh "$out"
echo "== 2-4. booting it, sending the manifest, uploading the algorithm and the dataset" >&2
scripts/agent-run.sh "$out" "$out/run"
echo "== 5. the result ($out/run/result.zip):"
python3 - "$out/run/result.zip" <<'PY'
import sys, zipfile
for name in zipfile.ZipFile(sys.argv[1]).namelist():
    data = zipfile.ZipFile(sys.argv[1]).read(name)
    print(f"{name}: {data.decode(errors='replace').strip()}")
PY
