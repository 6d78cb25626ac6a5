//! System tests of `runtime::Containerd` against the real containerd (root required).
//!
//! Each test gets its own containerd namespace (`hm-test-<random>`) and temp directory, and a
//! guard that removes every task, container, snapshot, image, blob and lease of that namespace,
//! then the namespace, with `ctr` when the test ends, whether it passed or panicked.
//! Without `/run/containerd/containerd.sock` the tests fail, unless
//! `HIVEMIND_SKIP_SYSTEM_TESTS=1` is set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hivemind_runtime::{
    labels, normalize_image_ref, ContainerInfo, ContainerRuntime, Containerd, CreateOptions,
    RuntimeConfig, RuntimeError, TaskState,
};
use hivemind_test_support::containerd::{cleanup_namespace, ctr, ids};
use hivemind_types::{Replica, ServiceSpec};

/// Limits and identity (`deploy.resources`, `read_only`, capabilities, `init`, ...).
#[path = "runtime/limits.rs"]
mod limits;

/// Output through the log driver: CRI records, rotation, restarts.
#[path = "runtime/logs.rs"]
mod logs;

/// Images: archive imports, users resolved from the image.
#[path = "runtime/images.rs"]
mod images;

/// Exec sessions: stdin, terminals, cleanup.
#[path = "runtime/exec.rs"]
mod exec;

/// The sweep of what crashed operations leave.
#[path = "runtime/leftovers.rs"]
mod leftovers;

/// Registry pulls and pull policies, against a real local registry.
#[path = "runtime/pull.rs"]
mod pull;

const SOCKET: &str = "/run/containerd/containerd.sock";
const IMAGE: &str = "hm-test/busybox:1";

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

    /// Builds the busybox docker-archive and imports it as `IMAGE`.
    async fn import_busybox(&self) {
        let tar = self.dir.path().join("busybox.tar");
        hivemind_test_support::image::build_busybox_image(&tar, IMAGE).expect("build image");
        self.runtime.image_import(&tar).await.expect("import");
    }

    fn ctr(&self, args: &[&str]) -> String {
        ctr(&self.namespace, args)
    }

    /// The text of `id`'s `stream` records, one line each, from its log driver's files.
    fn log(&self, id: &str, stream: &str) -> String {
        logs::records(&self.dir.path().join("logs").join(id))
            .into_iter()
            .filter(|r| r.stream == stream)
            .map(|r| r.text + "\n")
            .collect()
    }

    /// Creates and starts a replica running `command`.
    async fn run(&self, id: &str, command: &[&str]) -> u32 {
        let replica = replica(id, command);
        self.runtime
            .create(&replica, &CreateOptions::default())
            .await
            .expect("create");
        self.runtime.start(id).await.expect("start")
    }

    async fn info(&self, id: &str) -> Option<ContainerInfo> {
        let list = self.runtime.list().await.expect("list");
        list.into_iter().find(|c| c.id == id)
    }

    /// Polls until `id`'s task is stopped; returns the exit code.
    async fn wait_stopped(&self, id: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(TaskState::Stopped { exit_code }) = self.info(id).await.and_then(|c| c.task)
            {
                return exit_code;
            }
            assert!(Instant::now() < deadline, "{id} did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

fn replica(id: &str, command: &[&str]) -> Replica {
    let spec = ServiceSpec {
        image: IMAGE.to_string(),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        replicas: 1,
        stop_signal: "SIGTERM".to_string(),
        stop_grace_period_ms: 10_000,
        ..Default::default()
    };
    Replica {
        id: id.to_string(),
        namespace: "default".to_string(),
        app: "shop".to_string(),
        service: "web".to_string(),
        node: "node-1".to_string(),
        revision_hash: spec.revision_hash(),
        spec,
        meta: Default::default(),
    }
}

fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

#[tokio::test]
async fn runs_logs_stops_restarts_and_removes() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let id = unique_id("web");
    let mut r = replica(
        &id,
        &[
            "sh",
            "-c",
            "echo hello $FOO $HOSTNAME; echo oops >&2; exec sleep 1000",
        ],
    );
    r.spec.environment.insert("FOO".into(), "bar".into());
    env.runtime
        .create(&r, &CreateOptions::default())
        .await
        .unwrap();
    let info = env.info(&id).await.expect("listed after create");
    assert_eq!(info.task, None);
    assert_eq!(info.image, normalize_image_ref(IMAGE));
    assert_eq!(info.labels[labels::REPLICA], id);
    assert_eq!(info.labels[labels::SERVICE], "web");
    assert_eq!(info.labels[labels::APP], "shop");
    assert_eq!(info.labels[labels::NAMESPACE], "default");
    assert_eq!(info.labels[labels::REVISION], r.revision_hash);

    let pid = env.runtime.start(&id).await.unwrap();
    assert_eq!(
        env.info(&id).await.unwrap().task,
        Some(TaskState::Running { pid })
    );
    assert_eq!(
        env.runtime.start(&id).await.unwrap(),
        pid,
        "start is idempotent"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env.log(&id, "stderr").contains("oops") {
        assert!(Instant::now() < deadline, "no output in the logs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.log(&id, "stdout"), format!("hello bar {id}\n"));
    assert_eq!(env.log(&id, "stderr"), "oops\n");

    // `sleep` as PID 1 ignores SIGTERM: the grace period runs out, SIGKILL gives 137.
    let t = Instant::now();
    let code = env
        .runtime
        .stop(&id, "SIGTERM", Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(code, Some(137));
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(env.info(&id).await.unwrap().task, None);
    assert_eq!(
        env.runtime
            .stop(&id, "SIGTERM", Duration::ZERO)
            .await
            .unwrap(),
        None,
        "stopping without a task is a no-op"
    );

    // Restart: same container, fresh process, logs appended.
    let pid2 = env.runtime.start(&id).await.unwrap();
    assert_ne!(pid, pid2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.log(&id, "stdout").lines().count() < 2 {
        assert!(Instant::now() < deadline, "restart wrote no output");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    env.runtime.remove(&id).await.unwrap();
    env.runtime.remove(&id).await.expect("remove is idempotent");
    assert!(env.info(&id).await.is_none());
    assert_eq!(env.ctr(&["containers", "ls", "-q"]).trim(), "");
    assert_eq!(env.ctr(&["tasks", "ls", "-q"]).trim(), "");
    let snapshots = ids(&env.ctr(&["snapshots", "ls"]), false);
    assert!(
        !snapshots.contains(&id),
        "container snapshot removed: {snapshots:?}"
    );
    assert!(!env.dir.path().join("run").join(&id).exists());
    // Only the image's layer snapshot is left; removing the image would release it.
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
}

#[tokio::test]
async fn stop_signal_that_is_handled_exits_within_grace() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let id = unique_id("trap");
    env.run(
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; while true; do sleep 0.1; done",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let code = env
        .runtime
        .stop(&id, "TERM", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(code, Some(3));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let err = env
        .runtime
        .stop(&id, "SIGNOPE", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::BadSignal { .. }), "{err}");
    env.runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn exits_reports_an_external_kill_and_start_restarts() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let mut exits = env.runtime.exits().await.unwrap();
    // `exits()` returns once the subscription is live: no sleep needed before the kill.
    let id = unique_id("victim");
    let pid = env.run(&id, &["sleep", "1000"]).await;
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), exits.recv())
        .await
        .expect("an exit event within 10 s")
        .expect("channel open");
    assert_eq!(exit.id, id);
    assert_eq!(exit.exit_code, 137);
    assert_eq!(
        env.info(&id).await.unwrap().task,
        Some(TaskState::Stopped { exit_code: 137 })
    );
    let pid2 = env.runtime.start(&id).await.unwrap();
    assert_ne!(pid, pid2);
    assert_eq!(
        env.info(&id).await.unwrap().task,
        Some(TaskState::Running { pid: pid2 })
    );
    env.runtime.remove(&id).await.unwrap();
    // The removal's SIGKILL is reported too.
    let exit = tokio::time::timeout(Duration::from_secs(10), exits.recv())
        .await
        .expect("an exit event for the removal")
        .expect("channel open");
    assert_eq!(exit.id, id);
}

#[tokio::test]
async fn a_new_connection_adopts_running_containers() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let id = unique_id("restore");
    let pid = env.run(&id, &["sleep", "1000"]).await;
    // A second, independent client: as after an agent restart.
    let fresh = Containerd::connect(env.config()).await.unwrap();
    let listed = fresh.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].task, Some(TaskState::Running { pid }));
    assert_eq!(listed[0].labels[labels::SERVICE], "web");
    assert_eq!(
        fresh
            .stop(&id, "SIGKILL", Duration::from_secs(5))
            .await
            .unwrap(),
        Some(137)
    );
    fresh.remove(&id).await.unwrap();
}

#[tokio::test]
async fn containers_without_our_label_are_not_listed() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let out = Command::new("ctr")
        .args(["-n", &env.namespace, "containers", "create"])
        .args([&normalize_image_ref(IMAGE), "foreign", "sleep", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.runtime.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn errors_name_the_problem() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;

    let mut r = replica(&unique_id("noimg"), &["true"]);
    r.spec.image = "hm-test/missing:9".into();
    // Not pulled: the default policy (`missing`) would ask the registry instead.
    r.spec.pull_policy = hivemind_types::spec::PullPolicy::Never;
    let err = env
        .runtime
        .create(&r, &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::ImageNotFound { image } if image == "docker.io/hm-test/missing:9"),
        "{err:?}"
    );
    assert!(err.to_string().contains("hivemind image import"), "{err}");

    let mut r = replica(&unique_id("baduser"), &["true"]);
    r.spec.user = Some("ghost".into());
    let err = env
        .runtime
        .create(&r, &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::UserNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("ghost"), "{err}");
    // A failed create leaves nothing behind.
    assert!(env.runtime.list().await.unwrap().is_empty());
    assert_eq!(ids(&env.ctr(&["snapshots", "ls"]), false).len(), 1);

    let id = unique_id("dup");
    env.run(&id, &["sleep", "1000"]).await;
    let err = env
        .runtime
        .create(&replica(&id, &["true"]), &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists { .. }), "{err:?}");

    let err = env.runtime.start("no-such-container").await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
    env.runtime.remove("no-such-container").await.unwrap();
    env.runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn create_and_start_latency_of_ten_replicas() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let mut times = Vec::new();
    let mut ids_made = Vec::new();
    for i in 0..10 {
        let id = format!("lat{i}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let t = Instant::now();
        env.run(&id, &["sleep", "1000"]).await;
        times.push(t.elapsed());
        ids_made.push(id);
    }
    let mut sorted = times.clone();
    sorted.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "create+start latency, 10 sequential replicas: median {:?}, mean {:?}, min {:?}, max {:?}",
        sorted[sorted.len() / 2],
        mean,
        sorted[0],
        sorted[sorted.len() - 1]
    );
    for id in ids_made {
        env.runtime.remove(&id).await.unwrap();
    }
}
