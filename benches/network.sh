#!/usr/bin/env bash
# Prints requests/s and latency (wrk) to one service of 3 `hm-workload serve` replicas:
#   - straight to one replica's address (the floor),
#   - through the service VIP (nftables DNAT, from the host),
#   - through the published port (the ingress proxy, L4),
# on a single node started with its own bridge, CIDRs, nft table and containerd namespace.
# Bounded: each run is 5 s on loopback/bridge addresses of this machine. Run as root with
# containerd up, after `cargo build --release -p hivemind -p hivemind-test-support -p hivemind-workload`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${HIVEMIND_BIN:-$TARGET/release/hivemind}
MKIMAGE=${HIVEMIND_MKIMAGE:-$TARGET/release/hivemind-mkimage}
WORKLOAD=${HIVEMIND_WORKLOAD:-$TARGET/release/hm-workload}
command -v wrk >/dev/null || { echo "install wrk (apt-get install -y wrk)" >&2; exit 1; }
NS=hm-netbench-$$
DATA=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
PUB=28080
export HIVEMIND_SERVER=http://127.0.0.1:$PORT HIVEMIND_DATA_DIR=$DATA/data HIVEMIND_CONTAINERD_NAMESPACE=$NS
export HIVEMIND_BRIDGE=hmb0 HIVEMIND_NETNS_PREFIX=hmb0- HIVEMIND_NFT_TABLE=hivemind_bench
export HIVEMIND_CLUSTER_CIDR=10.240.0.0/16 HIVEMIND_SERVICE_CIDR=10.241.0.0/16
UP_PID=

cleanup() {
  [ -n "$UP_PID" ] && kill -9 "$UP_PID" 2>/dev/null || true
  clean_containerd_namespace "$NS"
  for n in $(ip netns list | awk '{print $1}' | grep '^hmb0-' || true); do ip netns delete "$n"; done
  ip link delete hmb0 2>/dev/null || true
  nft delete table inet hivemind_bench 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

"$MKIMAGE" "$DATA/wl.tar" hivemind.test/workload:1 --workload "$WORKLOAD" >/dev/null
"$BIN" image import "$DATA/wl.tar" >/dev/null
"$BIN" up --api-addr 127.0.0.1:$PORT >"$DATA/up.log" 2>&1 &
UP_PID=$!
until "$BIN" nodes >/dev/null 2>&1; do sleep 0.05; done
cat >"$DATA/compose.yaml" <<YAML
services:
  web:
    image: hivemind.test/workload:1
    ports: ["$PUB:80"]
    deploy: { replicas: 3 }
YAML
"$BIN" deploy -f "$DATA/compose.yaml" --app bench --wait >/dev/null
sleep 1
IP=$("$BIN" ps -o json | awk -F'"' '/"ip"/ {print $4; exit}')
VIP=$("$BIN" services -o json | awk -F'"' '/"vip"/ {print $4; exit}')

run() {
  local name=$1 url=$2
  local out rps p99
  out=$(wrk -t2 -c8 -d5s --latency "$url" 2>&1)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  printf '%-28s %10s req/s   p50 %-8s p99 %-8s %s\n' "$name" "$rps" "$p50" "$p99" "$errs"
}
echo "wrk -t2 -c8 -d5s, 3 replicas of hm-workload serve, 2 cores shared with everything"
run "direct to replica $IP" "http://$IP/"
run "service VIP $VIP" "http://$VIP/"
run "published port :$PUB" "http://127.0.0.1:$PUB/"
