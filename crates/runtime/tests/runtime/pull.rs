//! System tests of registry pulls: `Containerd::image_pull` and pull policies on `create`,
//! against the real containerd and a real local registry (`docker-registry`, root required).
//!
//! Each test starts its own registry on a free loopback port with a temp storage directory
//! (optionally with htpasswd auth), pushes test images with `skopeo`, and uses its own
//! containerd namespace (`hm-pull-<random>`). Guards kill the registry and empty and remove the
//! namespace when the test ends, passed or panicked. Download evidence comes from the registry's
//! access log and the pull's own progress events, never from timings.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hivemind_runtime::pull::{credentials_store, registry_login_check, Credentials};
use hivemind_runtime::{
    ContainerRuntime, Containerd, CreateOptions, PullProgress, RegistryConfig, RuntimeConfig,
    RuntimeError, TaskState,
};
use hivemind_test_support::containerd::cleanup_namespace;
use hivemind_test_support::image::{build_busybox_image, build_layered_image};
use hivemind_test_support::registry::Registry;
use hivemind_types::spec::PullPolicy;
use hivemind_types::{Replica, ServiceSpec};

const SOCKET: &str = "/run/containerd/containerd.sock";

/// A containerd namespace and runtime for one test, emptied and removed on drop.
struct TestEnv {
    namespace: String,
    dir: tempfile::TempDir,
    runtime: Containerd,
}

impl TestEnv {
    async fn new() -> Option<TestEnv> {
        if !hivemind_test_support::containerd::require_containerd() {
            return None;
        }
        let namespace = format!("hm-pull-{:08x}", rand::random::<u32>());
        let dir = tempfile::tempdir().expect("tempdir");
        let config = RuntimeConfig {
            socket: PathBuf::from(SOCKET),
            namespace: namespace.clone(),
            log_dir: dir.path().join("logs"),
            log_driver: hivemind_test_support::log_driver::binary(),
            log_rotation: Default::default(),
            run_dir: dir.path().join("run"),
            snapshotter: "overlayfs".to_string(),
        };
        let runtime = Containerd::connect(config).await.expect("connect");
        // Credentials only from this test's own file; loopback is plain HTTP by default.
        runtime.set_registry_config(RegistryConfig {
            docker_config: Some(dir.path().join("docker/config.json")),
            insecure: vec![],
        });
        Some(TestEnv {
            namespace,
            dir,
            runtime,
        })
    }

    fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker/config.json")
    }

    fn archive(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Pulls `reference` collecting its progress events.
    async fn pull(&self, reference: &str) -> (Result<String, RuntimeError>, Vec<PullProgress>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let result = self.runtime.image_pull(reference, Some(tx)).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (result.map(|i| i.digest), events)
    }

    /// Creates and starts a replica of `image` running `command`; returns its stdout once it
    /// has exited 0.
    async fn run_to_end(&self, image: &str, policy: PullPolicy, command: &[&str]) -> String {
        let id = format!("r-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let replica = replica(&id, image, policy, command);
        self.runtime
            .create(&replica, &CreateOptions::default())
            .await
            .expect("create");
        self.runtime.start(&id).await.expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = self.runtime.list().await.expect("list");
            let task = list.into_iter().find(|c| c.id == id).and_then(|c| c.task);
            if let Some(TaskState::Stopped { exit_code }) = task {
                // The log driver may still be writing the last lines.
                let dir = self.dir.path().join("logs").join(&id);
                let mut out = stdout_of(&dir);
                let flushed = Instant::now() + Duration::from_secs(1);
                while out.is_empty() && Instant::now() < flushed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    out = stdout_of(&dir);
                }
                assert_eq!(exit_code, 0, "{command:?} exited {exit_code}: {out}");
                return out;
            }
            assert!(Instant::now() < deadline, "{id} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The stdout lines of the CRI log records in a replica's log directory.
fn stdout_of(dir: &Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out = String::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let mut words = line.splitn(4, ' ');
            if words.nth(1) == Some("stdout") {
                out.push_str(words.nth(1).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    out
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        cleanup_namespace(&self.namespace);
    }
}

fn replica(id: &str, image: &str, policy: PullPolicy, command: &[&str]) -> Replica {
    let spec = ServiceSpec {
        image: image.to_string(),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        replicas: 1,
        stop_signal: "SIGTERM".to_string(),
        stop_grace_period_ms: 1_000,
        pull_policy: policy,
        ..Default::default()
    };
    Replica {
        id: id.to_string(),
        namespace: "default".to_string(),
        app: "pull".to_string(),
        service: "web".to_string(),
        node: "node-1".to_string(),
        revision_hash: spec.revision_hash(),
        spec,
        meta: Default::default(),
    }
}

fn downloaded(events: &[PullProgress]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, PullProgress::LayerDownloaded { .. }))
        .count()
}

fn present(events: &[PullProgress]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, PullProgress::LayerPresent { .. }))
        .count()
}

/// A repository name no other test (or earlier run) uses, so its layers are new to every store.
fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn pull_by_tag_runs_and_a_second_pull_downloads_nothing() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let registry = Registry::start(None);
    build_busybox_image(&env.archive("bb.tar"), "hello:1").expect("build");
    registry.push(&env.archive("bb.tar"), "hello:1");
    let reference = registry.reference("hello:1");

    let (digest, events) = env.pull(&reference).await;
    let digest = digest.expect("first pull");
    assert!(
        matches!(events.first(), Some(PullProgress::Resolved { digest: d, .. }) if *d == digest)
    );
    assert!(matches!(events.last(), Some(PullProgress::Done { .. })));
    let listed = env.runtime.image_list().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|i| i.name == reference && i.digest == digest),
        "{listed:?}"
    );
    let out = env
        .run_to_end(&reference, PullPolicy::Never, &["echo", "pulled"])
        .await;
    assert_eq!(out, "pulled\n");

    let blob_gets = registry.gets("hello", "blobs");
    let (again, events) = env.pull(&reference).await;
    assert_eq!(again.expect("second pull"), digest);
    assert_eq!(downloaded(&events), 0, "{events:?}");
    assert_eq!(present(&events), 1, "{events:?}");
    assert_eq!(
        registry.gets("hello", "blobs"),
        blob_gets,
        "no blob fetched again"
    );
}

#[tokio::test]
async fn multi_layer_image_is_unpacked_and_timed_against_ctr() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let registry = Registry::start(None);
    let (ours, theirs) = (unique("layers-a"), unique("layers-b"));
    let built = build_layered_image(&env.archive("a.tar"), &format!("{ours}:1"), 5).expect("a");
    build_layered_image(&env.archive("b.tar"), &format!("{theirs}:1"), 5).expect("b");
    registry.push(&env.archive("a.tar"), &format!("{ours}:1"));
    registry.push(&env.archive("b.tar"), &format!("{theirs}:1"));

    let reference = registry.reference(&format!("{ours}:1"));
    let started = Instant::now();
    let (digest, events) = env.pull(&reference).await;
    let hivemind_time = started.elapsed();
    digest.expect("pull layered image");
    // The base layer may already be on disk from another test; the others are new.
    assert!(downloaded(&events) >= 4, "{events:?}");
    assert_eq!(downloaded(&events) + present(&events), 5, "{events:?}");

    let mut command = vec!["cat"];
    command.extend(built.files.iter().map(|(path, _)| path.as_str()));
    let out = env
        .run_to_end(&reference, PullPolicy::Never, &command)
        .await;
    let expected: String = built.files.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(out, expected);

    // The same kind of image, new to the store too, pulled by containerd's own client.
    let ctr_ns = format!("{}-ctr", env.namespace);
    let started = Instant::now();
    let pulled = Command::new("ctr")
        .args(["-n", &ctr_ns, "images", "pull", "--plain-http"])
        .arg(registry.reference(&format!("{theirs}:1")))
        .output()
        .expect("run ctr");
    let ctr_time = started.elapsed();
    cleanup_namespace(&ctr_ns);
    assert!(
        pulled.status.success(),
        "ctr pull: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    println!(
        "pull of a 5-layer image (~1 MiB of new layers): hivemind {:.1} ms, \
         `ctr images pull --plain-http` {:.1} ms",
        hivemind_time.as_secs_f64() * 1e3,
        ctr_time.as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn auth_registry_needs_the_credentials_from_docker_config() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let registry = Registry::start(Some(("hive", "s3cret")));
    build_busybox_image(&env.archive("bb.tar"), "private:1").expect("build");
    registry.push(&env.archive("bb.tar"), "private:1");
    let reference = registry.reference("private:1");

    let err = env.pull(&reference).await.0.expect_err("anonymous pull");
    let text = err.to_string();
    assert!(
        text.contains(&format!("401 from {}", registry.host)),
        "{text}"
    );
    assert!(
        text.contains(&format!("run `hivemind registry login {}`", registry.host)),
        "{text}"
    );

    let wrong = Credentials {
        username: "hive".into(),
        password: "nope".into(),
    };
    let config = env.runtime.registry_config();
    let refused = registry_login_check(&registry.host, &wrong, &config).await;
    assert!(refused.is_err(), "a wrong password must be refused");
    credentials_store(&env.docker_config(), &registry.host, &wrong).expect("store");
    let text = env.pull(&reference).await.0.unwrap_err().to_string();
    assert!(text.contains("were refused"), "{text}");

    let right = Credentials {
        username: "hive".into(),
        password: "s3cret".into(),
    };
    registry_login_check(&registry.host, &right, &config)
        .await
        .expect("login check");
    credentials_store(&env.docker_config(), &registry.host, &right).expect("store");
    env.pull(&reference).await.0.expect("pull with credentials");
    let out = env
        .run_to_end(&reference, PullPolicy::Missing, &["echo", "authorized"])
        .await;
    assert_eq!(out, "authorized\n");
}

#[tokio::test]
async fn missing_tag_and_unreachable_registry_are_clear_errors() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let registry = Registry::start(None);
    build_busybox_image(&env.archive("bb.tar"), "hello:1").expect("build");
    registry.push(&env.archive("bb.tar"), "hello:1");

    let reference = registry.reference("hello:nope");
    let text = env.pull(&reference).await.0.unwrap_err().to_string();
    assert!(
        text.starts_with(&format!("cannot pull {reference}:")),
        "{text}"
    );
    assert!(
        text.contains(&format!("tag nope not found in {}/hello", registry.host)),
        "{text}"
    );

    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let text = env
        .pull(&format!("127.0.0.1:{closed}/x:1"))
        .await
        .0
        .unwrap_err()
        .to_string();
    assert!(
        text.contains(&format!("cannot reach 127.0.0.1:{closed}")),
        "{text}"
    );
}

#[tokio::test]
async fn create_follows_the_pull_policy() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let registry = Registry::start(None);
    build_busybox_image(&env.archive("bb.tar"), "policy:1").expect("build");
    registry.push(&env.archive("bb.tar"), "policy:1");
    let reference = registry.reference("policy:1");

    // never: absent image is not fetched.
    let before = registry.gets("policy", "manifests");
    let replica = replica("never-1", &reference, PullPolicy::Never, &["true"]);
    let err = env
        .runtime
        .create(&replica, &CreateOptions::default())
        .await
        .expect_err("never pulls nothing");
    assert!(
        matches!(&err, RuntimeError::ImageNotFound { image } if *image == reference),
        "{err}"
    );
    assert!(err.to_string().contains("hivemind image pull"), "{err}");
    assert_eq!(registry.gets("policy", "manifests"), before);

    // missing: pulled once, then used as is.
    env.run_to_end(&reference, PullPolicy::Missing, &["true"])
        .await;
    let manifests = registry.gets("policy", "manifests");
    assert!(manifests > before);
    env.run_to_end(&reference, PullPolicy::Missing, &["true"])
        .await;
    assert_eq!(registry.gets("policy", "manifests"), manifests);

    // always: asks the registry every time, downloads nothing new.
    let blobs = registry.gets("policy", "blobs");
    env.run_to_end(&reference, PullPolicy::Always, &["true"])
        .await;
    assert!(registry.gets("policy", "manifests") > manifests);
    assert_eq!(registry.gets("policy", "blobs"), blobs);
}

#[tokio::test]
async fn concurrent_pulls_of_one_reference_download_once() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let registry = Registry::start(None);
    let repo = unique("twice");
    build_layered_image(&env.archive("l.tar"), &format!("{repo}:1"), 3).expect("build");
    registry.push(&env.archive("l.tar"), &format!("{repo}:1"));
    let reference = registry.reference(&format!("{repo}:1"));

    let before = registry.gets(&repo, "manifests");
    let (a, b) = tokio::join!(env.pull(&reference), env.pull(&reference));
    let (a, b) = (a.0.expect("pull a"), b.0.expect("pull b"));
    assert_eq!(a, b);
    assert_eq!(
        registry.gets(&repo, "manifests"),
        before + 1,
        "the second pull joined the first"
    );
    // Config and the two new layers, once each (the busybox base may be on disk already).
    let blobs = registry.gets(&repo, "blobs");
    assert!((3..=4).contains(&blobs), "{blobs} blob downloads");
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_fails_the_pull() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let registry = Registry::start(None);
    let repo = unique("damaged");
    build_layered_image(&env.archive("l.tar"), &format!("{repo}:1"), 2).expect("build");
    registry.push(&env.archive("l.tar"), &format!("{repo}:1"));
    let reference = registry.reference(&format!("{repo}:1"));

    // Find the top layer's blob through the registry's manifest and flip a byte on disk.
    let manifest = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo inspect");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).expect("manifest");
    let top = manifest["layers"][1]["digest"]
        .as_str()
        .expect("layer digest");
    let path = registry.blob_path(top);
    let mut bytes = std::fs::read(&path).expect("blob in registry storage");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).expect("damage blob");

    let text = env.pull(&reference).await.0.unwrap_err().to_string();
    assert!(text.contains(top), "{text}");
    assert!(text.to_lowercase().contains("digest"), "{text}");
    let listed = env.runtime.image_list().await.expect("list");
    assert!(listed.iter().all(|i| i.name != reference), "{listed:?}");
}
