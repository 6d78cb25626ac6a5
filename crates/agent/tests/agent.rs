//! System tests of the agent's own parts against the real containerd (root required): the image
//! GC executor and the agent endpoint. The runtime's, the log driver's and the data plane's
//! system tests live with their crates.
//!
//! Without `/run/containerd/containerd.sock` the tests fail, unless
//! `HIVEMIND_SKIP_SYSTEM_TESTS=1` is set.

use std::path::{Path, PathBuf};

use hivemind_runtime::{Containerd, RuntimeConfig};
use hivemind_test_support::containerd::cleanup_namespace;

/// Image GC: unused images go, used ones stay.
#[path = "agent/image_gc.rs"]
mod image_gc;

/// The agent endpoint under hostile requests (ids that are not ids, bad parameters).
#[path = "agent/serve.rs"]
mod serve;

const SOCKET: &str = "/run/containerd/containerd.sock";

/// A containerd namespace and temp directory for one test, emptied and removed on drop.
struct TestEnv {
    namespace: String,
    dir: tempfile::TempDir,
    runtime: Containerd,
}

impl TestEnv {
    /// `None` when system tests are skipped on purpose.
    async fn new() -> Option<TestEnv> {
        if !hivemind_test_support::containerd::require_containerd() {
            return None;
        }
        let namespace = format!("hm-test-{:08x}", rand::random::<u32>());
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = Containerd::connect(config(&namespace, dir.path()))
            .await
            .expect("connect to containerd");
        Some(TestEnv {
            namespace,
            dir,
            runtime,
        })
    }

    fn config(&self) -> RuntimeConfig {
        config(&self.namespace, self.dir.path())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        cleanup_namespace(&self.namespace);
    }
}

fn config(namespace: &str, dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        socket: PathBuf::from(SOCKET),
        namespace: namespace.to_string(),
        log_dir: dir.join("logs"),
        log_driver: hivemind_test_support::log_driver::binary(),
        log_rotation: Default::default(),
        run_dir: dir.join("run"),
        snapshotter: "overlayfs".to_string(),
    }
}
