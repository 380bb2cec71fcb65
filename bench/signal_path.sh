#!/usr/bin/env bash
# The trainer's signal path under a real runtime (containerd + runc, no kubelet):
# SIGTERM to a container whose trainer traps it and exits, once under
# trialforge-entrypoint (today's stdout-source command) and once under the
# /bin/sh wrapper it replaced (from commit 51a7ad5). Prints how long each
# container ran after SIGTERM and the trainer's log.
#
#   e2e/cluster images --only operator     # the operator image, built from its Dockerfile
#   sudo bench/signal_path.sh
#
# A private containerd (its own socket, root and state under a temporary folder)
# is started and stopped here; nothing else on the machine is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
tar=$(python3 e2e/tfimages.py --list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["trialforge/operator:dev"])')
dir=$(mktemp -d /tmp/tf-signal-XXXXXX)
cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
TOML
containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
ctrd=$!
cleanup() {
  kill "$ctrd" 2>/dev/null || true
  wait "$ctrd" 2>/dev/null || true
  grep -o "$dir[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
A=(-a "$dir/containerd.sock")
for _ in $(seq 50); do [ -S "$dir/containerd.sock" ] && break; sleep 0.1; done
ctr "${A[@]}" images import "$tar" > /dev/null
cat > "$dir/trainer.py" <<'PY'
import signal, sys, time
def term(*_):
    print("trainer: got SIGTERM, saving and exiting", flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, term)
print('{"step": 1, "loss": 0.5}', flush=True)
time.sleep(120)
PY
wrapper=$(git show 51a7ad5:operator/trialforge/metrics/contract.py \
  | python3 -c 'import sys; ns = {}; exec(sys.stdin.read(), ns); print(ns["WRAPPER"])')
run() {
  local id=$1; shift
  ctr "${A[@]}" run -d --log-uri "file://$dir/$id.log" \
    --env TRIALFORGE_SHARED_DIR=/tmp --env TRIALFORGE_METRICS_SOURCE=stdout \
    --mount "type=bind,src=$dir/trainer.py,dst=/trainer.py,options=rbind:ro" \
    docker.io/trialforge/operator:dev "$id" "$@" > /dev/null
  sleep 4
  local t0 t1
  t0=$(date +%s.%N)
  ctr "${A[@]}" task kill -s SIGTERM "$id"
  for _ in $(seq 100); do ctr "${A[@]}" task ls | grep "^$id " | grep -q RUNNING || break; sleep 0.1; done
  t1=$(date +%s.%N)
  if ctr "${A[@]}" task ls | grep "^$id " | grep -q RUNNING; then
    echo "$id: still running 10 s after SIGTERM (SIGKILL now)"
    ctr "${A[@]}" task kill -s SIGKILL "$id"; sleep 1
  else
    echo "$id: ended $(python3 -c "print(round($t1 - $t0, 2))") s after SIGTERM"
  fi
  ctr "${A[@]}" task rm -f "$id" > /dev/null 2>&1 || true
  ctr "${A[@]}" containers rm "$id"
  sed 's/^/    /' "$dir/$id.log"
}
run entrypoint trialforge-entrypoint -- python /trainer.py
run sh-wrapper /bin/sh -c "$wrapper" trialforge-trainer python /trainer.py
