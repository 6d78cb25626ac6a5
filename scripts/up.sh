#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine (as root), install what is missing,
# build hivemind, start a single-node cluster on the embedded SQLite store and deploy
# examples/hello. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root
install_packages
ensure_rust
start_containerd

echo "==> building hivemind (release)"
cargo build --release -p hivemind -p hivemind-test-support
TARGET="${CARGO_TARGET_DIR:-target}"
install -m 0755 "$TARGET"/release/hivemind /usr/local/bin/hivemind

# The demo needs no registry: its image is built here from Debian's busybox-static.
mkdir -p /var/lib/hivemind/images
"$TARGET"/release/hivemind-mkimage /var/lib/hivemind/images/busybox.tar hivemind.test/busybox:1 >/dev/null
hivemind image import /var/lib/hivemind/images/busybox.tar

if ! hivemind nodes >/dev/null 2>&1; then
  echo "==> starting hivemind up (log: /var/log/hivemind/hivemind.log)"
  mkdir -p /var/log/hivemind
  setsid nohup hivemind up >>/var/log/hivemind/hivemind.log 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    hivemind nodes >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

echo "==> deploying examples/hello"
hivemind deploy -f examples/hello/compose.yaml --wait
hivemind ps
