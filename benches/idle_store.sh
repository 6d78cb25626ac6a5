#!/usr/bin/env bash
# Prints what an idle cluster costs the store over a long window (SPEC acceptance 4: "after an
# hour idle the store file has not grown"): a real `hivemind server` on SQLite with NODES
# simulated nodes (hivemind-sim) heartbeating, and nothing else happening. Leases live in memory,
# so an idle cluster should commit nothing: the revision and the file (db + wal) stay put.
# Prints, at the start and the end of the window (and every SAMPLE seconds in between): store
# revision, state.db and state.db-wal sizes, server RSS; at the end, the server's CPU over the
# window as % of one core.
# Usage: benches/idle_store.sh [SECONDS] [NODES]   (defaults 3600 100)
# Env: ADDR (default 127.0.0.1:18580), SAMPLE (default 300), DATA (default a temp dir, removed)
# Build first: cargo build --release -p hivemind -p hivemind-test-support
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3600}
NODES=${2:-100}
ADDR=${ADDR:-127.0.0.1:18580}
SAMPLE=${SAMPLE:-300}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${HIVEMIND_BIN:-$TARGET/release/hivemind}
SIM=${HIVEMIND_SIM:-$TARGET/release/hivemind-sim}
KEEP_DATA=${DATA:+1}
DATA=${DATA:-$(mktemp -d)}
mkdir -p "$DATA"
export HIVEMIND_SERVER=http://$ADDR HIVEMIND_DATA_DIR=$DATA/data
SERVER_PID= SIM_PID=

cleanup() {
  [ -n "$SIM_PID" ] && kill -9 "$SIM_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null || true
  [ -z "$KEEP_DATA" ] && rm -rf "$DATA"
  true
}
trap cleanup EXIT

now_s() { date +%s; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
revision() { sqlite3 -readonly "file:$DATA/data/state.db?mode=ro" "SELECT value FROM counters WHERE name = 'revision'" 2>/dev/null || echo "?"; }
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SERVER_PID/status"; }
report() {
  local db wal
  db=$(size "$DATA/data/state.db"); wal=$(size "$DATA/data/state.db-wal")
  printf '%-10s %6ss  revision %-8s db %10s B  wal %10s B  db+wal %10s B  server RSS %s MB\n' \
    "$1" "$(( $(now_s) - T0 ))" "$(revision)" "$db" "$wal" "$((db + wal))" "$(rss_mb)"
}

if curl -fs "http://$ADDR/healthz" >/dev/null 2>&1; then
  echo "something already answers on $ADDR; set ADDR to a free address" >&2
  exit 1
fi
"$BIN" server --api-addr "$ADDR" --log warn >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
until curl -fs "http://$ADDR/healthz" >/dev/null 2>&1; do
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:" >&2; cat "$DATA/server.log" >&2; exit 1; }
  sleep 0.05
done
TOKEN=$(cat "$DATA/data/admin.token")
NODE_TOKEN=$("$BIN" token create --role node 2>/dev/null)

"$SIM" --server "http://$ADDR" --token "$NODE_TOKEN" --nodes "$NODES" >"$DATA/sim.log" 2>&1 &
SIM_PID=$!
until [ "$(curl -fs -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/nodes" \
  | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)" -ge "$NODES" ]; do
  kill -0 "$SIM_PID" 2>/dev/null || { echo "hivemind-sim exited:" >&2; cat "$DATA/sim.log" >&2; exit 1; }
  sleep 0.2
done
echo "$NODES simulated nodes registered; $(date -u +%H:%M:%S) server pid $SERVER_PID, data $DATA/data"
# Let registration settle (node subnets allocated, first reports written) before the window opens.
sleep 10

T0=$(now_s)
rev0=$(revision); file0=$(( $(size "$DATA/data/state.db") + $(size "$DATA/data/state.db-wal") ))
ticks0=$(cpu_ticks "$SERVER_PID")
report start
end=$((T0 + DURATION))
while [ "$(now_s)" -lt "$end" ]; do
  left=$((end - $(now_s)))
  sleep $(( left < SAMPLE ? left : SAMPLE ))
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died:" >&2; tail -20 "$DATA/server.log" >&2; exit 1; }
  kill -0 "$SIM_PID" 2>/dev/null || { echo "hivemind-sim died:" >&2; tail -20 "$DATA/sim.log" >&2; exit 1; }
  [ "$(now_s)" -lt "$end" ] && report sample
done
ticks1=$(cpu_ticks "$SERVER_PID"); T1=$(now_s)
report end
rev1=$(revision); file1=$(( $(size "$DATA/data/state.db") + $(size "$DATA/data/state.db-wal") ))
hz=$(getconf CLK_TCK)
echo "window:          $((T1 - T0)) s idle, $NODES nodes"
echo "revision:        $rev0 -> $rev1 ($(( rev1 - rev0 )) store transactions)"
echo "db+wal:          $file0 -> $file1 B ($(( file1 - file0 )) B)"
awk -v t="$((ticks1 - ticks0))" -v hz="$hz" -v s="$((T1 - T0))" \
  'BEGIN {printf "server CPU:      %.2f%% of one core (%.1f s over the window)\n", 100 * t / hz / s, t / hz}'
echo "server RSS:      $(rss_mb) MB"
echo "server log:      $(grep -c . "$DATA/server.log" || true) lines (warn and above), the last ones:"
tail -5 "$DATA/server.log" | cut -c1-300
