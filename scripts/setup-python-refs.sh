#!/usr/bin/env bash
# Installs the reference tools the measure tests and benchmarks run side by
# side with cocos-measure, outside the repository. Idempotent: does nothing
# when the pinned versions are there.
#
#   sev-snp-measure 0.0.13 (PyPI)   SEV/SEV-ES/SEV-SNP launch digests, ID blocks
#   mosaik 0.3.13 (Rust crate)      TDX MRTD of a TDVF image: the crate's
#                                   src/tee/tdx/builder/mrtd.rs (compute_mrtd),
#                                   built alone behind a small command,
#                                   mosaik-mrtd TDVF -> MRTD hex
#
#   PYTHON_REFS_VENV=/var/tmp/cocos-python-refs   where the venv goes (default)
#   MRTD_REF_DIR=/var/tmp/cocos-mrtd-ref          where mosaik-mrtd is built (default)
#
# Needs python3 with the venv module (Debian: python3-venv), cargo, and
# access to PyPI and the Rust crate registry.
set -euo pipefail

install_sev_snp_measure() {
  local venv="${PYTHON_REFS_VENV:-/var/tmp/cocos-python-refs}"
  local want="sev-snp-measure==0.0.13"

  if [ -x "$venv/bin/sev-snp-measure" ] && "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$want"; then
    return 0
  fi

  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "setup-python-refs: installing python3-venv" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi

  echo "setup-python-refs: installing $want into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want"
  "$venv/bin/sev-snp-measure" --version >/dev/null
}

# The MRTD reference: mosaik's TDVF measurement, written by another team
# than ours. Only its mrtd.rs is compiled (it needs sha2 and hex), so the
# rest of mosaik (networking, ...) is downloaded but never built.
install_mrtd_reference() {
  local dir="${MRTD_REF_DIR:-/var/tmp/cocos-mrtd-ref}"
  local version="0.3.13"
  # sha256 of mosaik-0.3.13.crate as the crate registry serves it.
  local crate_sha256="e4873b7447c07b219b8ec0bb778af966a01930491ef6c8c0a63d10146756a890"
  local stamp="$dir/bin/.mosaik-$version"

  if [ -x "$dir/bin/mosaik-mrtd" ] && [ -f "$stamp" ]; then
    return 0
  fi
  echo "setup-python-refs: building the MRTD reference from mosaik $version into $dir" >&2
  rm -rf "$dir/fetch" "$dir/wrapper" "$dir/bin" "$dir/mosaik-$version"
  mkdir -p "$dir/fetch/src" "$dir/wrapper/src" "$dir/bin"

  # Download the crate with cargo (checked against the registry index).
  cat >"$dir/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-mosaik"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
mosaik = { version = "=$version", default-features = false }
EOF
  echo 'fn main() {}' >"$dir/fetch/src/main.rs"
  cargo fetch --quiet --manifest-path "$dir/fetch/Cargo.toml" --target x86_64-unknown-linux-gnu
  local crate
  crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"mosaik-$version.crate" | head -n 1)"
  echo "$crate_sha256  $crate" | sha256sum --check --quiet
  tar -xzf "$crate" -C "$dir" \
    "mosaik-$version/src/tee/tdx/builder/mrtd.rs" "mosaik-$version/LICENSE"

  cat >"$dir/wrapper/Cargo.toml" <<'EOF'
[package]
name = "mosaik-mrtd"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
sha2 = "0.10"
hex = "0.4"
EOF
  cat >"$dir/wrapper/src/main.rs" <<EOF
//! mosaik-mrtd TDVF: prints the MRTD that mosaik $version computes for a
//! TDVF image (its progress goes to stderr).
#![allow(dead_code)]

#[path = "../../mosaik-$version/src/tee/tdx/builder/mrtd.rs"]
mod mrtd;

fn main() {
    let path = std::env::args().nth(1).expect("usage: mosaik-mrtd TDVF");
    let image = std::fs::read(&path).expect("cannot read the TDVF image");
    match mrtd::compute_mrtd(&image) {
        Ok(mrtd) => println!("{}", hex::encode(mrtd)),
        Err(e) => {
            eprintln!("mosaik-mrtd: {e}");
            std::process::exit(1);
        }
    }
}
EOF
  cargo build --quiet --release --manifest-path "$dir/wrapper/Cargo.toml" --target-dir "$dir/target"
  cp "$dir/target/release/mosaik-mrtd" "$dir/bin/mosaik-mrtd"
  touch "$stamp"
}

install_sev_snp_measure
install_mrtd_reference
