#!/usr/bin/env bash
# The README's second command and what .ci/run calls: every check and every test, including the
# system tests against real containerd and runc (root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root
install_packages
ensure_rust
start_containerd

# A build cache outside the clone speeds up repeated runs; a cold one works too.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/hivemind/target}"
mkdir -p "$CARGO_TARGET_DIR"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
cargo test --workspace
