#!/usr/bin/env bash
# Prints the control plane's figures at cluster scale against SPEC §9's budgets, with simulated
# nodes (hivemind-sim) against a real `hivemind server` on SQLite (no containerd needed):
#   1. N simulated nodes idle for IDLE seconds: server CPU as % of one core, store
#      transactions/s, server RSS
#   2. one service scaled 0 -> REPLICAS across them: time until every replica is reported running
#   3. one replica stops being an endpoint: time until every node's assignment has the change,
#      p50/p99 (the simulator's probe, all clocks in one process)
# Usage: benches/cluster.sh [NODES] [REPLICAS] [IDLE]   (defaults 1000 100000 60)
# Build first: cargo build --release -p hivemind -p hivemind-test-support
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-1000}
REPLICAS=${2:-100000}
IDLE=${3:-60}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${HIVEMIND_BIN:-$TARGET/release/hivemind}
SIM=${HIVEMIND_SIM:-$TARGET/release/hivemind-sim}
DATA=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export HIVEMIND_SERVER=http://127.0.0.1:$PORT HIVEMIND_DATA_DIR=$DATA/data
SERVER_PID= SIM_PID=

cleanup() {
  [ -n "$SIM_PID" ] && kill -9 "$SIM_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
revision() { sqlite3 -readonly "file:$DATA/data/state.db?mode=ro" "SELECT value FROM counters WHERE name = 'revision'" 2>/dev/null || echo 0; }
running() {
  curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/replicas?app=bench&service=web" \
    | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if (r.get("status") or {}).get("state") == "running"))'
}

# A /24 per node: 1,000 nodes need a bigger cluster range than the default /16.
"$BIN" server --api-addr 127.0.0.1:$PORT --log warn \
  --cluster-cidr 10.64.0.0/10 --service-cidr 10.43.0.0/16 >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.05; done
TOKEN=$(cat "$DATA/data/admin.token")
NODE_TOKEN=${NODE_TOKEN:-$("$BIN" token create --role node 2>/dev/null || echo "$TOKEN")}

t0=$(now_ms)
"$SIM" --server "http://127.0.0.1:$PORT" --token "$NODE_TOKEN" --nodes "$NODES" >"$DATA/sim.log" 2>&1 &
SIM_PID=$!
until [ "$(curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/nodes" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -ge "$NODES" ]; do sleep 0.2; done
echo "nodes registered:           $NODES in $(( $(now_ms) - t0 )) ms"
sleep 5

# 1. Idle.
ticks0=$(cpu_ticks $SERVER_PID); rev0=$(revision); t0=$(now_ms)
sleep "$IDLE"
ticks1=$(cpu_ticks $SERVER_PID); rev1=$(revision); t1=$(now_ms)
hz=$(getconf CLK_TCK)
awk -v t="$((ticks1 - ticks0))" -v hz="$hz" -v ms="$((t1 - t0))" -v n="$NODES" \
  'BEGIN {printf "idle server, %d nodes:     %.1f%% of one core (budget 10%%)\n", n, 100 * t / hz / (ms / 1000)}'
awk -v r="$((rev1 - rev0))" -v ms="$((t1 - t0))" 'BEGIN {printf "idle store transactions:    %.1f/s\n", r / (ms / 1000)}'
echo "server RSS:                 $(( $(awk '/VmRSS/ {print $2}' /proc/$SERVER_PID/status) / 1024 )) MB"

# 2. 0 -> REPLICAS.
cat >"$DATA/compose.yaml" <<YAML
services:
  web:
    image: hivemind.test/busybox:1
    command: ["sleep", "3600"]
    deploy: { replicas: 0 }
YAML
"$BIN" deploy -f "$DATA/compose.yaml" --app bench >/dev/null
t0=$(now_ms); sticks0=$(cpu_ticks $SERVER_PID); simticks0=$(cpu_ticks $SIM_PID)
"$BIN" scale bench/web="$REPLICAS" >/dev/null
last=0
while :; do
  n=$(running || echo 0)
  if [ "$n" != "$last" ]; then echo "  $(( $(now_ms) - t0 )) ms: $n running"; last=$n; fi
  [ "$n" -ge "$REPLICAS" ] && break
  [ $(( $(now_ms) - t0 )) -gt 300000 ] && { echo "gave up after 300 s at $n running"; break; }
  sleep 1
done
echo "0 -> $REPLICAS replicas running: $(( $(now_ms) - t0 )) ms (budget 30000 ms)"
# CPU time is steadier than wall time on a busy machine: what the scale-up cost each side.
awk -v s="$(( $(cpu_ticks $SERVER_PID) - sticks0 ))" -v m="$(( $(cpu_ticks $SIM_PID) - simticks0 ))" -v hz="$(getconf CLK_TCK)" \
  'BEGIN {printf "  CPU for it:               server %.1f s, simulated nodes %.1f s\n", s / hz, m / hz}'
echo "server RSS:                 $(( $(awk '/VmRSS/ {print $2}' /proc/$SERVER_PID/status) / 1024 )) MB"

# 3. One replica stops, then runs again: time until every node routing to it has the change.
sticks0=$(cpu_ticks $SERVER_PID)
"$SIM" --server "http://127.0.0.1:$PORT" --token "$TOKEN" --probe bench/web --rounds "${ROUNDS:-5}"
echo "server RSS:                 $(( $(awk '/VmRSS/ {print $2}' /proc/$SERVER_PID/status) / 1024 )) MB"
awk -v s="$(( $(cpu_ticks $SERVER_PID) - sticks0 ))" -v hz="$(getconf CLK_TCK)" \
  'BEGIN {printf "server CPU for the rounds:  %.1f s\n", s / hz}'
