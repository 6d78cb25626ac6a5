#!/usr/bin/env bash
# Prints the service controller's own figures (no server, no agents): the time for it to write
# 0 -> REPLICAS replica objects of one service over NODES simulated nodes (Node objects in a real
# SQLite store on disk, bounded batches), then to replace the replicas of a tenth of the nodes
# when they go Down. Issue 9, item 4 / acceptance 2.
# Usage: benches/replicas.sh [REPLICAS] [NODES]   (defaults 100000 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p hivemind-control --example scale_bench -- "${1:-100000}" "${2:-1000}"
