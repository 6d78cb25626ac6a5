#!/usr/bin/env bash
# Prints the store's figures: 1-op transactions per second one at a time and with 64 concurrent
# writers (group commit: one fsync per batch), one 100,000-replica transaction and the time
# until a watcher has it whole, indexed and full reads. File store in a temp dir, then in memory.
# Usage: benches/store.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -q -p hivemind-store --bench store
