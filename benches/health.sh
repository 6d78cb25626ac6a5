#!/usr/bin/env bash
# Prints what health checks cost (issue 10's figure): REPLICAS busybox replicas (default 50)
# with no check, then a `CMD` check every second (containerd exec), then an `x-hivemind` HTTP
# probe every second (from the node). For each, the CPU over WINDOW seconds (default 30) as %
# of one core of: `hivemind up` (server and agent in one process), containerd, and the
# namespace's shims with the processes they reaped (runc for each exec, the check itself).
# Usage: benches/health.sh [REPLICAS] [WINDOW]. Run as root with containerd up, after
# `cargo build --release -p hivemind -p hivemind-test-support`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
REPLICAS=${1:-50}
WINDOW=${2:-30}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${HIVEMIND_BIN:-$TARGET/release/hivemind}
MKIMAGE=${HIVEMIND_MKIMAGE:-$TARGET/release/hivemind-mkimage}
NS=hm-healthbench-$$
DATA=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export HIVEMIND_SERVER=http://127.0.0.1:$PORT HIVEMIND_DATA_DIR=$DATA/data HIVEMIND_CONTAINERD_NAMESPACE=$NS
export HIVEMIND_BRIDGE=hmh0 HIVEMIND_NETNS_PREFIX=hmh0- HIVEMIND_NFT_TABLE=hivemind_healthbench
export HIVEMIND_CLUSTER_CIDR=10.244.0.0/16 HIVEMIND_SERVICE_CIDR=10.245.0.0/16
export HIVEMIND_AGENT_ADDR=127.0.0.1:$((PORT + 1))
UP_PID=

cleanup() {
  [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  "$BIN" down >/dev/null 2>&1 || true
  clean_containerd_namespace "$NS"
  rm -rf "$DATA"
}
trap cleanup EXIT

# utime + stime of a process (with its reaped children's when $2 is set), in clock ticks.
ticks() { awk -v c="${2:-}" '{ t = $14 + $15; if (c != "") t += $16 + $17; print t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
sum_ticks() { local total=0 p; for p in $1; do total=$((total + $(ticks "$p" "${2:-}"))); done; echo $total; }
pct() { awk -v t="$1" -v w="$WINDOW" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", 100 * t / hz / w }'; }

"$MKIMAGE" "$DATA/busybox.tar" hivemind.test/busybox:1 >/dev/null
"$BIN" image import "$DATA/busybox.tar" >/dev/null
"$BIN" up --api-addr 127.0.0.1:$PORT >"$DATA/up.log" 2>&1 &
UP_PID=$!
until "$BIN" nodes >/dev/null 2>&1; do sleep 0.05; done
CONTAINERD=$(pidof containerd)

measure() {
  local what=$1 check=$2
  cat >"$DATA/compose.yaml" <<YAML
services:
  web:
    image: hivemind.test/busybox:1
    command: [httpd, -f, -p, "80"]
    stop_grace_period: 1s
    deploy: {replicas: $REPLICAS}
$check
YAML
  "$BIN" deploy -f "$DATA/compose.yaml" --app bench --wait --timeout 5m >/dev/null
  sleep 5
  local shims up0 cd0 sh0
  shims=$(pgrep -f "containerd-shim.*-namespace $NS" || true)
  up0=$(ticks $UP_PID); cd0=$(sum_ticks "$CONTAINERD"); sh0=$(sum_ticks "$shims" children)
  sleep "$WINDOW"
  echo "$what: hivemind up $(pct $(( $(ticks $UP_PID) - up0 )))%, containerd $(pct $(( $(sum_ticks "$CONTAINERD") - cd0 )))%, shims+runc $(pct $(( $(sum_ticks "$shims" children) - sh0 )))% of a core ($REPLICAS replicas, ${WINDOW}s)"
}

measure "no check  " ""
measure "CMD exec/1s" "    healthcheck: {test: [CMD, \"true\"], interval: 1s, timeout: 5s}"
measure "HTTP/1s    " "    x-hivemind: {healthcheck: {http: {port: 80, status: 200-499}, interval: 1s}}"
