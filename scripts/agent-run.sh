#!/usr/bin/env bash
# The whole job, end to end: boots the agent image under QEMU, serves it a
# computation manifest from the host (`cocos-cli cvms serve`, reached by
# the guest at QEMU's user-network gateway), uploads the algorithm and the
# dataset with `cocos-cli` through the ingress (TLS, a CA made here), and
# fetches the result into OUT/result.zip.
#
#   scripts/agent-run.sh IMAGE_DIR OUT [ALGO TYPE DATASET [ARG...]]
#
# IMAGE_DIR is a scripts/agent-image.sh output. Without ALGO, a small demo
# runs: a shell algorithm that counts the lines of a dataset. TYPE is bin,
# python, wasm or docker. OUT gets the keys, the manifest, the events
# (events.jsonl), the serial log (serial.log) and result.zip.
#
# Environment: TIMEOUT (seconds for the whole run, default 600), CLI (the
# cocos-cli binary; default: built here with PROFILE, default release).
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
cd "$(dirname "$0")/.."
image="$1"; out="$2"; shift 2
[ -f "$image/disk.img" ] || { echo "agent-run: $image/disk.img missing: run scripts/agent-image.sh $image" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
if [ -z "${CLI:-}" ]; then
  profile="${PROFILE:-release}"
  cargo build --locked --profile "$profile" -q -p cocos-cli >&2
  CLI="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$([ "$profile" = dev ] && echo debug || echo "$profile")/cocos-cli"
fi

if [ $# -ge 3 ]; then
  algo="$1"; type="$2"; dataset="$3"; shift 3
else
  algo="$out/count.sh"; type=bin; dataset="$out/lines.txt"
  printf '#!/bin/sh\nset -e\nfor f in datasets/*; do wc -l <"$f" >"results/$(basename "$f").count"; done\n' >"$algo"
  chmod +x "$algo"
  printf 'one\ntwo\nthree\n' >"$dataset"
fi
args=()
for a in "$@"; do args+=(--arg "$a"); done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cvms_port="$(free_port)"
ingress_port="$(free_port)"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Keys: one each for the algorithm provider, the dataset provider and the
# result consumer.
for who in algo data consumer; do
  mkdir -p "$out/keys/$who"
  "$CLI" keys generate --type ed25519 --out-dir "$out/keys/$who" >/dev/null
done
id="demo-$(date +%s)"
"$CLI" manifest new --id "$id" --name demo \
  --algorithm "$algo" "$out/keys/algo/public.pem" --type "$type" "${args[@]}" \
  --dataset "$dataset" "$out/keys/data/public.pem" \
  --consumer "$out/keys/consumer/public.pem" -o "$out/manifest.json"

# The ingress's TLS identity, from a CA made here; the VM gets it on the
# certificate share, its settings on the environment share.
mkdir -p "$work/env" "$work/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=cocos-demo-ca -keyout "$work/ca.key" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$work/certs/key.pem" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" -CA "$out/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') -out "$work/certs/cert.pem" 2>/dev/null
chmod 0644 "$work/certs/key.pem"
cat >"$work/env/environment" <<ENV
AGENT_CVM_GRPC_URL=http://10.0.2.2:$cvms_port
AGENT_CVM_ID=$id
AGENT_LOG_LEVEL=info
COCOS_INGRESS_CERT=/etc/certs/cert.pem
COCOS_INGRESS_KEY=/etc/certs/key.pem
ENV

"$CLI" cvms serve "$out/manifest.json" --listen "127.0.0.1:$cvms_port" --exit-on ConsumingResults,Failed \
  >"$out/events.jsonl" 2>"$out/cvms.log" </dev/null &
cvms_pid=$!
pids+=("$cvms_pid")
ENV_PATH="$work/env" CERT_PATH="$work/certs" HOSTFWD="$ingress_port" TIMEOUT="${TIMEOUT:-600}" \
  scripts/qemu-dev.sh "$image/disk.img" >"$out/serial.log" 2>&1 &
pids+=("$!")

export COCOS_AGENT_URL="https://127.0.0.1:$ingress_port" COCOS_AGENT_CA="$out/ca.pem" \
  COCOS_AGENT_DOMAIN=localhost COCOS_MANIFEST="$out/manifest.json"
echo "agent-run: booting; waiting for the agent to take the manifest" >&2
deadline=$((SECONDS + ${TIMEOUT:-600}))
until grep -q '"event_type":"ReceivingAlgorithm"' "$out/events.jsonl" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "agent-run: timed out waiting for the agent; see $out/serial.log" >&2; exit 1; }
  kill -0 "$cvms_pid" 2>/dev/null || { echo "agent-run: cvms serve exited; see $out/cvms.log" >&2; exit 1; }
  sleep 1
done
echo "agent-run: uploading the algorithm and the dataset" >&2
# The ingress may still be starting: retry while the agent is unreachable (exit 3).
upload() {
  local status
  while :; do
    status=0
    "$CLI" "$@" || status=$?
    [ "$status" -eq 3 ] && [ $SECONDS -lt $deadline ] && { sleep 2; continue; }
    return "$status"
  done
}
upload algo "$algo" --type "$type" "${args[@]}" --key "$out/keys/algo/private.pem"
upload data "$dataset" --key "$out/keys/data/private.pem"
echo "agent-run: waiting for the run to finish" >&2
status=0
wait "$cvms_pid" || status=$?
[ "$status" -eq 0 ] || { echo "agent-run: the computation failed (see $out/events.jsonl)" >&2; }
upload result --key "$out/keys/consumer/private.pem" -o "$out/result.zip"
echo "agent-run: result in $out/result.zip" >&2
exit "$status"
