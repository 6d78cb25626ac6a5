//! System test of the leftovers sweep on real containerd: what a crash between "snapshot
//! prepared" and "container created" (or mid-delete) leaves goes; a live container keeps all of
//! its own.

use std::path::PathBuf;

use hivemind_runtime::{ContainerRuntime, SweepReport, TaskState};

use super::{unique_id, TestEnv};

/// The cgroup hierarchies a leftover directory is planted in: the v1 ones that exist here, or
/// the v2 root.
fn cgroup_parents() -> Vec<PathBuf> {
    let v1: Vec<PathBuf> = ["pids", "memory"]
        .iter()
        .map(|h| PathBuf::from(format!("/sys/fs/cgroup/{h}/hivemind")))
        .filter(|p| p.parent().is_some_and(|h| h.join("cgroup.procs").exists()))
        .collect();
    if v1.is_empty() {
        vec![PathBuf::from("/sys/fs/cgroup/hivemind")]
    } else {
        v1
    }
}

#[tokio::test]
async fn the_sweep_removes_leftovers_and_keeps_live_containers() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let live = unique_id("live");
    env.run(&live, &["sleep", "300"]).await;

    // A crash after `Snapshots.Prepare`: an active snapshot without a container (labelled as a
    // GC root so containerd's own collector does not take it first), and its run files.
    let gone = unique_id("gone");
    let parent = env
        .ctr(&["snapshots", "ls"])
        .lines()
        .find(|l| l.contains("Committed"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a committed layer snapshot")
        .to_string();
    env.ctr(&["snapshots", "prepare", &gone, &parent]);
    env.ctr(&["snapshots", "label", &gone, "containerd.io/gc.root=test"]);
    assert!(env.ctr(&["snapshots", "ls"]).contains(&gone));
    let run_dir = env.config().run_dir.join(&gone);
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    // A removal that could not delete the logs.
    let log_dir = env.config().replica_log_dir(&gone);
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join("0000000001.log"), "x\n").unwrap();
    // A crash mid-delete: empty cgroup directories runc did not remove.
    let cgroups: Vec<PathBuf> = cgroup_parents().iter().map(|p| p.join(&gone)).collect();
    for dir in &cgroups {
        std::fs::create_dir_all(dir).unwrap();
    }

    // Too young: nothing goes.
    let young = env
        .runtime
        .sweep_leftovers(std::time::Duration::from_secs(3600))
        .await
        .expect("sweep");
    assert_eq!(young, SweepReport::default());
    assert!(run_dir.exists());

    let report = env
        .runtime
        .sweep_leftovers(std::time::Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!(report.snapshots, 1, "{report:?}");
    assert_eq!(report.run_dirs, 1, "{report:?}");
    assert_eq!(report.log_dirs, 1, "{report:?}");
    assert!(!log_dir.exists());
    assert!(report.cgroups >= cgroups.len(), "{report:?}");
    let snapshots = env.ctr(&["snapshots", "ls"]);
    assert!(!snapshots.contains(&gone), "{snapshots}");
    assert!(!run_dir.exists());
    for dir in &cgroups {
        assert!(!dir.exists(), "{} left", dir.display());
    }

    // The live container keeps its snapshot, run files and cgroup, and still runs.
    assert!(snapshots.contains(&live), "{snapshots}");
    assert!(env.config().run_dir.join(&live).exists());
    assert!(env.config().replica_log_dir(&live).exists());
    let info = env.info(&live).await.expect("live container listed");
    let Some(TaskState::Running { pid }) = info.task else {
        panic!("live container not running: {info:?}");
    };
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&format!("hivemind/{live}")), "{own}");
    assert_eq!(
        env.runtime
            .sweep_leftovers(std::time::Duration::ZERO)
            .await
            .unwrap(),
        SweepReport::default()
    );

    // Removal takes the container's files and logs with it.
    env.runtime.remove(&live).await.expect("remove");
    assert!(!env.config().run_dir.join(&live).exists());
    assert!(!env.config().replica_log_dir(&live).exists());
}
