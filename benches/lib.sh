# Shared helpers of the bench scripts. Sourced, not run.

# Removes everything in containerd namespace $1 (tasks, containers, images, snapshots), then
# the namespace itself.
clean_containerd_namespace() {
  local ns=$1 t c i s
  for t in $(ctr -n "$ns" tasks ls -q 2>/dev/null); do ctr -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  sleep 0.3
  for t in $(ctr -n "$ns" tasks ls -q 2>/dev/null); do ctr -n "$ns" tasks rm -f "$t" >/dev/null 2>&1 || true; done
  for c in $(ctr -n "$ns" containers ls -q 2>/dev/null); do ctr -n "$ns" containers rm "$c" >/dev/null 2>&1 || true; done
  for i in $(ctr -n "$ns" images ls -q 2>/dev/null); do ctr -n "$ns" images rm "$i" >/dev/null 2>&1 || true; done
  sleep 0.3
  for s in $(ctr -n "$ns" snapshots ls 2>/dev/null | awk 'NR>1 {print $1}'); do ctr -n "$ns" snapshots rm "$s" >/dev/null 2>&1 || true; done
  # Garbage collection empties the namespace asynchronously; it can only be deleted once empty.
  for _ in $(seq 30); do
    ctr namespaces rm "$ns" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
