//! System test of the agent's image GC executor (`converge::image_gc::collect_images`) against
//! the real containerd (root required).
//!
//! The test gets its own containerd namespace (`hm-test-gc-<random>`) and temp directory, and a
//! guard that removes every task, container, snapshot, image, blob and lease of that namespace,
//! then the namespace, with `ctr` when the test ends, whether it passed or panicked.
//! Without `/run/containerd/containerd.sock` the test fails, unless
//! `HIVEMIND_SKIP_SYSTEM_TESTS=1` is set.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::SOCKET;
use hivemind_agent::converge::image_gc::{collect_images, ImageGcPolicy};
use hivemind_runtime::{
    normalize_image_ref, ContainerRuntime, Containerd, CreateOptions, RuntimeConfig,
};
use hivemind_test_support::containerd::cleanup_namespace;
use hivemind_test_support::image::{build_busybox_image, build_layered_image};
use hivemind_types::{Replica, ServiceSpec};

const USED: &str = "hm-test/busybox:1";
const UNUSED: &str = "hm-test/layered:1";

/// Removes everything in the namespace on drop; best effort, never panics.
struct NamespaceGuard(String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        cleanup_namespace(&self.0);
    }
}

fn replica(id: &str, image: &str) -> Replica {
    let spec = ServiceSpec {
        image: image.to_string(),
        command: Some(vec!["sleep".to_string(), "300".to_string()]),
        replicas: 1,
        stop_signal: "SIGTERM".to_string(),
        stop_grace_period_ms: 1_000,
        ..Default::default()
    };
    Replica {
        id: id.to_string(),
        namespace: "default".to_string(),
        app: "gc".to_string(),
        service: "web".to_string(),
        node: "node-1".to_string(),
        revision_hash: spec.revision_hash(),
        spec,
        meta: Default::default(),
    }
}

fn policy(high: u8, low: u8) -> ImageGcPolicy {
    ImageGcPolicy {
        high_percent: high,
        low_percent: low,
        containerd_root: PathBuf::from("/var/lib/containerd"),
    }
}

async fn image_names(runtime: &Containerd) -> BTreeSet<String> {
    let images = runtime.image_list().await.expect("list images");
    images.into_iter().map(|i| i.name).collect()
}

#[tokio::test]
async fn image_gc_removes_unused_images_and_keeps_used_ones() {
    if !hivemind_test_support::containerd::require_containerd() {
        return;
    }
    let namespace = format!("hm-test-gc-{:08x}", rand::random::<u32>());
    let _guard = NamespaceGuard(namespace.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Containerd::connect(RuntimeConfig {
        socket: PathBuf::from(SOCKET),
        namespace: namespace.clone(),
        log_dir: dir.path().join("logs"),
        log_driver: hivemind_test_support::log_driver::binary(),
        log_rotation: Default::default(),
        run_dir: dir.path().join("run"),
        snapshotter: "overlayfs".to_string(),
    })
    .await
    .expect("connect to containerd");

    let busybox = dir.path().join("busybox.tar");
    build_busybox_image(&busybox, USED).expect("build busybox");
    let layered = dir.path().join("layered.tar");
    build_layered_image(&layered, UNUSED, 3).expect("build layered");
    runtime
        .image_import(&busybox)
        .await
        .expect("import busybox");
    runtime
        .image_import(&layered)
        .await
        .expect("import layered");
    let (used, unused) = (normalize_image_ref(USED), normalize_image_ref(UNUSED));
    let both = BTreeSet::from([used.clone(), unused.clone()]);
    assert_eq!(image_names(&runtime).await, both);

    let replica = replica("gc-1", USED);
    runtime
        .create(&replica, &CreateOptions::default())
        .await
        .expect("create");
    runtime.start(&replica.id).await.expect("start");

    // high=100: the disk is never fuller than that, so nothing goes.
    let removed = collect_images(&runtime, &policy(100, 0), &BTreeSet::new())
        .await
        .expect("gc at 100%");
    assert!(removed.is_empty(), "removed at high=100: {removed:?}");
    assert_eq!(image_names(&runtime).await, both);

    // high=0, low=0: any usage is too much; every unused image goes, the used one stays.
    let removed = collect_images(&runtime, &policy(0, 0), &BTreeSet::new())
        .await
        .expect("gc at 0%");
    let removed: Vec<(String, bool)> = removed.into_iter().map(|i| (i.name, i.size > 0)).collect();
    assert_eq!(removed, vec![(unused, true)]);
    assert_eq!(image_names(&runtime).await, BTreeSet::from([used]));

    runtime
        .stop(&replica.id, "SIGKILL", std::time::Duration::from_secs(1))
        .await
        .expect("stop");
    runtime.remove(&replica.id).await.expect("remove");
}
