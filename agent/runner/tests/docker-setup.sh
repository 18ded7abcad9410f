#!/usr/bin/env bash
# Installs and starts what agent/runner/tests/docker.rs needs: Debian's
# docker.io and busybox-static, and a Docker Engine on
# /var/run/docker.sock. dockerd runs with --iptables=false
# --ip-forward=false so that the host's firewall and forwarding stay as they
# are. Idempotent: an engine that already answers is left alone.
#
#   agent/runner/tests/docker-setup.sh
#   cargo test -p cocos-runner --test docker -- --ignored
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
if ! ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable'; then
  need+=(busybox-static)
fi
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

engine_up() { curl -sf --unix-socket /var/run/docker.sock http://engine/_ping >/dev/null 2>&1; }
if ! engine_up; then
  log=/var/log/cocos-test-dockerd.log
  nohup dockerd --iptables=false --ip-forward=false >"$log" 2>&1 &
  for _ in $(seq 1 60); do
    engine_up && break
    sleep 0.5
  done
  if ! engine_up; then
    tail -n 30 "$log" >&2
    echo "docker-setup.sh: dockerd did not come up; log: $log" >&2
    exit 1
  fi
fi
echo "docker-setup.sh: Docker Engine up on /var/run/docker.sock"
