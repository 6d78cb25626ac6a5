#!/usr/bin/env bash
# Prints Hivemind's single-node figures against SPEC §9's budgets (run as root, containerd up):
#   - `hivemind up` start to API ready (/healthz answers)
#   - idle RSS of `hivemind up` with no apps
#   - deploy → replica running for 1 replica (image present), end to end through the CLI
#     (`hivemind deploy --wait` returns), against `ctr run -d` of the same image
# Uses its own containerd namespace, data dir and port; cleans up after itself.
# Usage: benches/startup.sh [RUNS]   (build first: cargo build --release -p hivemind -p hivemind-test-support)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
RUNS=${1:-7}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${HIVEMIND_BIN:-$TARGET/release/hivemind}
MKIMAGE=${HIVEMIND_MKIMAGE:-$TARGET/release/hivemind-mkimage}
NS=hm-bench-$$
DATA=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
IMAGE=hivemind.test/busybox:1
export HIVEMIND_SERVER=http://127.0.0.1:$PORT HIVEMIND_DATA_DIR=$DATA/data HIVEMIND_CONTAINERD_NAMESPACE=$NS
UP_PID=

cleanup() {
  [ -n "$UP_PID" ] && kill -9 "$UP_PID" 2>/dev/null || true
  clean_containerd_namespace "$NS"
  rm -rf "$DATA"
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

start_up() {
  "$BIN" up --api-addr 127.0.0.1:$PORT >>"$DATA/up.log" 2>&1 &
  UP_PID=$!
}
stop_up() { kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=; }

"$MKIMAGE" "$DATA/busybox.tar" "$IMAGE" >/dev/null
"$BIN" image import "$DATA/busybox.tar" >/dev/null

# 1. Start to API ready.
: >"$DATA/ready"
for _ in $(seq "$RUNS"); do
  t0=$(now_ms); start_up
  until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.002; done
  echo $(( $(now_ms) - t0 )) >>"$DATA/ready"
  stop_up
done
echo "up -> API ready:            median $(median <"$DATA/ready") ms over $RUNS runs (budget 300 ms)"

# 2. Idle RSS (server + agent, no apps), after it settled.
start_up
until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.01; done
sleep 5
rss=$(awk '/VmRSS/ {print $2}' /proc/$UP_PID/status)
echo "idle RSS of hivemind up:    $((rss / 1024)) MB ($rss kB) (budget 30 MB)"

# 3. Deploy -> running, 1 replica, image present.
cat >"$DATA/compose.yaml" <<YAML
services:
  one:
    image: $IMAGE
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
YAML
: >"$DATA/deploy"
for i in $(seq "$RUNS"); do
  t0=$(now_ms)
  "$BIN" deploy -f "$DATA/compose.yaml" --app bench$i --wait >/dev/null
  echo $(( $(now_ms) - t0 )) >>"$DATA/deploy"
  "$BIN" rm bench$i >/dev/null
done
until [ -z "$(ctr -n "$NS" containers ls -q)" ]; do sleep 0.1; done
echo "deploy --wait, 1 replica:   median $(median <"$DATA/deploy") ms over $RUNS runs"

: >"$DATA/ctr"
for i in $(seq "$RUNS"); do
  t0=$(now_ms)
  ctr -n "$NS" run -d "docker.io/$IMAGE" ctr-bench-$i sleep 3600 >/dev/null 2>&1 || ctr -n "$NS" run -d "$IMAGE" ctr-bench-$i sleep 3600 >/dev/null
  echo $(( $(now_ms) - t0 )) >>"$DATA/ctr"
  ctr -n "$NS" tasks kill -s SIGKILL ctr-bench-$i >/dev/null; sleep 0.2
  ctr -n "$NS" tasks rm -f ctr-bench-$i >/dev/null 2>&1 || true
  ctr -n "$NS" containers rm ctr-bench-$i >/dev/null
done
d=$(median <"$DATA/deploy"); c=$(median <"$DATA/ctr")
echo "ctr run -d, same image:     median $c ms over $RUNS runs"
echo "deploy / ctr run ratio:     $(awk -v d="$d" -v c="$c" 'BEGIN {printf "%.2f", d / c}') (budget 1.3)"
stop_up
