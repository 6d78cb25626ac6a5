//! Containerd namespaces for tests, through Debian's `ctr`: listing and emptying them.
//!
//! Every system test works in a namespace of its own and empties it when it ends, passed or
//! panicked; this is the one copy of how.

use std::process::Command;
use std::time::Duration;

/// `ctr -n NAMESPACE ARGS...`; its stdout (empty when `ctr` fails).
pub fn ctr(namespace: &str, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("-n")
        .arg(namespace)
        .args(args)
        .output()
        .expect("run ctr (apt-get install containerd)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first column of a `ctr ... ls` listing: the header line is skipped unless `quiet`
/// (`ls -q` prints none).
pub fn ids(listing: &str, quiet: bool) -> Vec<String> {
    listing
        .lines()
        .skip(usize::from(!quiet))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Removes everything in `namespace` (tasks, containers, snapshots, images, blobs, leases),
/// then the namespace itself; best effort, never panics.
pub fn cleanup_namespace(namespace: &str) {
    let ls = |kind: &str| ids(&ctr(namespace, &[kind, "ls", "-q"]), true);
    for task in ls("tasks") {
        ctr(namespace, &["tasks", "kill", "-s", "SIGKILL", &task]);
        ctr(namespace, &["tasks", "rm", "-f", &task]);
    }
    for container in ls("containers") {
        ctr(namespace, &["containers", "rm", &container]);
    }
    // Children before parents: retry until the listing is empty.
    for _ in 0..10 {
        let snapshots = ids(&ctr(namespace, &["snapshots", "ls"]), false);
        if snapshots.is_empty() {
            break;
        }
        for s in snapshots {
            ctr(namespace, &["snapshots", "rm", &s]);
        }
    }
    for kind in ["images", "content", "leases"] {
        for id in ls(kind) {
            ctr(namespace, &[kind, "rm", &id]);
        }
    }
    // containerd's garbage collector frees the last snapshots and blobs asynchronously, and a
    // namespace can be deleted only once it is empty: retry for a while.
    for attempt in 0..30 {
        let Ok(out) = Command::new("ctr")
            .args(["namespaces", "rm", namespace])
            .output()
        else {
            return;
        };
        if out.status.success() {
            return;
        }
        if attempt == 29 {
            eprintln!(
                "cleanup of {namespace} incomplete: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// containerd's socket on every machine the tests run on.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Fails the test unless containerd is there (CI always has it), or skips it (`false`) when the
/// developer says so explicitly with HIVEMIND_SKIP_SYSTEM_TESTS=1.
pub fn require_containerd() -> bool {
    if std::path::Path::new(CONTAINERD_SOCKET).exists() {
        return true;
    }
    if std::env::var("HIVEMIND_SKIP_SYSTEM_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: containerd is not running and HIVEMIND_SKIP_SYSTEM_TESTS=1");
        return false;
    }
    panic!(
        "containerd is not running at {CONTAINERD_SOCKET}: start it (scripts/test.sh does), or \
         set HIVEMIND_SKIP_SYSTEM_TESTS=1 to skip system tests"
    );
}
