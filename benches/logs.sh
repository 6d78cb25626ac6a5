#!/usr/bin/env bash
# Prints how fast replica output is captured: one replica writes N lines as fast as busybox sh
# can, and the figure is lines/s from deploy to the last line being readable through
# `hivemind logs` (so it includes the log driver's writes and the agent's log endpoint), then
# the rate between the first and last record's driver timestamps, then the log driver alone
# fed from `seq` through a pipe (its ceiling, without busybox's echo loop or containerd).
# Bounded: N lines (default 200000). Run as root with containerd up, after
# `cargo build --release -p hivemind -p hivemind-test-support`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
LINES=${1:-200000}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${HIVEMIND_BIN:-$TARGET/release/hivemind}
MKIMAGE=${HIVEMIND_MKIMAGE:-$TARGET/release/hivemind-mkimage}
NS=hm-logbench-$$
DATA=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export HIVEMIND_SERVER=http://127.0.0.1:$PORT HIVEMIND_DATA_DIR=$DATA/data HIVEMIND_CONTAINERD_NAMESPACE=$NS
export HIVEMIND_BRIDGE=hml0 HIVEMIND_NETNS_PREFIX=hml0- HIVEMIND_NFT_TABLE=hivemind_logbench
export HIVEMIND_CLUSTER_CIDR=10.242.0.0/16 HIVEMIND_SERVICE_CIDR=10.243.0.0/16
export HIVEMIND_AGENT_ADDR=127.0.0.1:$((PORT + 1))
UP_PID=

cleanup() {
  [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  "$BIN" down >/dev/null 2>&1 || true
  clean_containerd_namespace "$NS"
  rm -rf "$DATA"
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

"$MKIMAGE" "$DATA/busybox.tar" hivemind.test/busybox:1 >/dev/null
"$BIN" image import "$DATA/busybox.tar" >/dev/null
"$BIN" up --api-addr 127.0.0.1:$PORT >"$DATA/up.log" 2>&1 &
UP_PID=$!
until "$BIN" nodes >/dev/null 2>&1; do sleep 0.05; done
cat >"$DATA/compose.yaml" <<YAML
services:
  chatty:
    image: hivemind.test/busybox:1
    command: ["sh", "-c", "i=0; while [ \$\$i -lt $LINES ]; do echo \"line \$\$i\"; i=\$\$((i+1)); done; exec sleep 3600"]
    stop_signal: SIGKILL
YAML
t0=$(now_ms)
"$BIN" deploy -f "$DATA/compose.yaml" --app logs --wait >/dev/null
last="line $((LINES - 1))"
until "$BIN" logs --tail 1 chatty 2>/dev/null | grep -q " $last\$"; do sleep 0.05; done
ms=$(( $(now_ms) - t0 ))
echo "captured $LINES lines in $ms ms: $(( LINES * 1000 / (ms > 0 ? ms : 1) )) lines/s (bounded by busybox sh's echo loop)"
t1=$(now_ms)
n=$("$BIN" logs chatty 2>/dev/null | wc -l)
echo "read back $n lines through hivemind logs in $(( $(now_ms) - t1 )) ms"
# The driver's own timestamps: first and last record of the replica's log files.
dir=$(ls -d "$DATA"/data/logs/chatty-* | head -1)
first=$(head -1 "$(ls "$dir"/*.log | head -1)" | cut -d' ' -f1)
lastts=$(tail -1 "$(ls "$dir"/*.log | tail -1)" | cut -d' ' -f1)
span_ns=$(( $(date -d "$lastts" +%s%N) - $(date -d "$first" +%s%N) ))
echo "driver timestamps: $LINES lines in $(( span_ns / 1000000 )) ms: $(( LINES * 1000000000 / (span_ns > 0 ? span_ns : 1) )) lines/s"
# The driver alone: `seq` into its stdout pipe (fd 3), stderr at EOF, fd 5 the ready pipe.
DRIVER_LINES=$((LINES * 10))
t2=$(now_ms)
seq 1 "$DRIVER_LINES" | "$BIN" log-driver "10485760:5:$DATA/driver" 3<&0 4</dev/null 5>/dev/null
ms=$(( $(now_ms) - t2 ))
echo "log driver alone: $DRIVER_LINES lines in $ms ms: $(( DRIVER_LINES * 1000 / (ms > 0 ? ms : 1) )) lines/s ($(ls "$DATA"/driver | wc -l) files kept)"
