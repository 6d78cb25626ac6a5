# Shared steps of up.sh and test.sh: packages, Rust, containerd. Sourced, not run.

# Debian packages Hivemind needs at run and test time (SPEC §7).
PACKAGES=(containerd runc nftables iproute2 protobuf-compiler busybox-static ca-certificates curl gcc pkg-config docker-registry skopeo apache2-utils dnsutils tini)

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: run this as root (containerd, cgroups and netns need it)" >&2
    echo "  fix: sudo $0" >&2
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    # Debian 12's rustc (1.63) is too old for the dependencies; rustup is the supported way.
    echo "==> installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

start_containerd() {
  if ctr version >/dev/null 2>&1; then
    return
  fi
  echo "==> starting containerd"
  if ! systemctl start containerd 2>/dev/null; then
    mkdir -p /var/log/hivemind
    nohup containerd >/var/log/hivemind/containerd.log 2>&1 &
  fi
  for _ in $(seq 1 100); do
    ctr version >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "error: containerd did not start; see /var/log/hivemind/containerd.log" >&2
  exit 1
}
