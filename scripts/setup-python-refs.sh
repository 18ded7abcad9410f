#!/usr/bin/env bash
# Installs the Python reference tools the measure tests and benchmarks run
# side by side with cocos-measure, into a virtual environment outside the
# repository. Idempotent: does nothing when the pinned versions are there.
#
#   sev-snp-measure 0.0.13 (PyPI)   SEV/SEV-ES/SEV-SNP launch digests, ID blocks
#
#   PYTHON_REFS_VENV=/var/tmp/cocos-python-refs   where the venv goes (default)
#
# Needs python3 with the venv module (Debian: python3-venv) and access to PyPI.
set -euo pipefail

venv="${PYTHON_REFS_VENV:-/var/tmp/cocos-python-refs}"
want="sev-snp-measure==0.0.13"

if [ -x "$venv/bin/sev-snp-measure" ] && "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$want"; then
  exit 0
fi

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup-python-refs: installing python3-venv" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

echo "setup-python-refs: installing $want into $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$want"
"$venv/bin/sev-snp-measure" --version >/dev/null
