//! Volumes through the real binary on real containerd: a named volume keeps its data across
//! `rm` and a redeploy and `rm --volumes` removes it, copy-up fills a new volume from the image
//! (owners, modes and symlinks kept), a `:ro` bind mount is read-only inside, a `type: tmpfs`
//! volume is a tmpfs, a missing bind source fails the replica naming the path, anonymous
//! volumes go with their replica, and external volumes are created and removed by hand.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hivemind_test_support::image::{build_image_with_entries, EntryKind, OwnedEntry};
use support::{require_containerd, TestNode, IMAGE};

const WAIT: Duration = Duration::from_secs(30);

fn volume_dir(node: &TestNode, name: &str) -> PathBuf {
    node.data_dir().join("volumes").join("default").join(name)
}

/// `sh -c SCRIPT` in `replica`, through `hivemind exec`.
fn sh(node: &TestNode, replica: &str, script: &str) -> std::process::Output {
    node.cli(&["exec", replica, "--", "sh", "-c", script])
}

fn sh_ok(node: &TestNode, replica: &str, script: &str) -> String {
    let out = sh(node, replica, script);
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn volume_names(node: &TestNode) -> Vec<String> {
    node.cli_json(&["volume", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

const STORE: &str = r#"
volumes:
  data: {}
services:
  db:
    image: IMAGE
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    volumes: ["data:/var/lib/db"]
"#;

#[test]
fn a_named_volume_keeps_its_data_across_rm_and_redeploy_and_rm_volumes_removes_it() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let compose = STORE.replace("IMAGE", IMAGE);
    node.deploy_wait("store", &compose);
    let replica = node.replica_of("db");
    sh_ok(&node, &replica, "echo kept > /var/lib/db/row");
    let data = volume_dir(&node, "store_data").join("_data");
    assert_eq!(std::fs::read_to_string(data.join("row")).unwrap(), "kept\n");
    node.wait_for("the volume object, on this node", WAIT, || {
        volume_names(&node) == ["store_data"]
    });
    let mode = std::fs::metadata(node.data_dir().join("volumes"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the volume directory is private");

    node.cli_ok(&["rm", "store"]);
    node.wait_for("the container gone", WAIT, || node.containers().is_empty());
    // Longer than the agent's sweep period: an app's removal leaves its volume.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(volume_names(&node), ["store_data"]);
    assert!(data.join("row").exists());

    node.deploy_wait("store", &compose);
    let replica = node.replica_of("db");
    assert_eq!(sh_ok(&node, &replica, "cat /var/lib/db/row"), "kept\n");

    node.cli_ok(&["rm", "--volumes", "store"]);
    node.wait_for("the volume and its data removed", WAIT, || {
        volume_names(&node).is_empty() && !volume_dir(&node, "store_data").exists()
    });
}

#[test]
fn copy_up_fills_a_new_volume_from_the_image_keeping_owners_modes_and_links() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let entry = |path: &str, kind: EntryKind, mode: u32, uid: u64| OwnedEntry {
        path: path.into(),
        kind,
        mode,
        uid,
        gid: uid,
    };
    let tar = node.dir.path().join("seeded.tar");
    build_image_with_entries(
        &tar,
        "hivemind.test/seeded:1",
        &[
            entry("srv/", EntryKind::Dir, 0o755, 0),
            entry("srv/app/", EntryKind::Dir, 0o750, 1000),
            entry(
                "srv/app/seed",
                EntryKind::File(b"from the image\n".to_vec()),
                0o640,
                1000,
            ),
            entry(
                "srv/app/link",
                EntryKind::Symlink("seed".into()),
                0o777,
                1000,
            ),
            entry("srv/app/sub/", EntryKind::Dir, 0o700, 1001),
        ],
    )
    .unwrap();
    node.cli_ok(&["image", "import", tar.to_str().unwrap()]);
    node.deploy_wait(
        "seed",
        r#"
volumes:
  app: {}
  bare: {}
services:
  web:
    image: hivemind.test/seeded:1
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    volumes:
      - app:/srv/app
      - {type: volume, source: bare, target: /srv/app2, volume: {nocopy: true}}
"#,
    );
    let data = volume_dir(&node, "seed_app").join("_data");
    let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    let root = meta(&data);
    assert_eq!(
        (root.uid(), root.gid(), root.mode() & 0o7777),
        (1000, 1000, 0o750)
    );
    let seed = meta(&data.join("seed"));
    assert_eq!((seed.uid(), seed.mode() & 0o7777), (1000, 0o640));
    assert_eq!(
        std::fs::read_to_string(data.join("seed")).unwrap(),
        "from the image\n"
    );
    assert!(meta(&data.join("link")).file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap(),
        Path::new("seed")
    );
    let sub = meta(&data.join("sub"));
    assert_eq!((sub.uid(), sub.mode() & 0o7777), (1001, 0o700));
    // The container sees it too, and the nocopy volume stayed empty.
    let replica = node.replica_of("web");
    assert_eq!(
        sh_ok(&node, &replica, "cat /srv/app/link"),
        "from the image\n"
    );
    let bare = volume_dir(&node, "seed_bare").join("_data");
    assert_eq!(std::fs::read_dir(bare).unwrap().count(), 0);
    // Copy-up happens into a new volume only: what the app changed survives a new replica.
    sh_ok(&node, &replica, "echo changed > /srv/app/seed");
    node.cli_ok(&["rm", "seed"]);
    node.wait_for("the container gone", WAIT, || node.containers().is_empty());
    node.deploy_wait(
        "seed",
        "volumes: {app: {}}\nservices:\n  web: {image: hivemind.test/seeded:1, command: [sleep, \"3600\"], volumes: [\"app:/srv/app\"]}\n",
    );
    assert_eq!(
        std::fs::read_to_string(data.join("seed")).unwrap(),
        "changed\n"
    );
}

#[test]
fn binds_read_only_tmpfs_volumes_and_anonymous_volumes() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let host = node.dir.path().join("site");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("index.html"), "hello\n").unwrap();
    // Relative to the Compose file, which `deploy_wait` writes into the test's directory.
    node.deploy_wait(
        "mounts",
        &format!(
            r#"
services:
  web:
    image: {IMAGE}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    volumes:
      - ./site:/www:ro
      - {{type: tmpfs, target: /scratch, tmpfs: {{size: 1m}}}}
      - /cache
"#
        ),
    );
    let replica = node.replica_of("web");
    assert_eq!(sh_ok(&node, &replica, "cat /www/index.html"), "hello\n");
    let write = sh(&node, &replica, "echo x > /www/new");
    assert!(!write.status.success(), "a :ro bind mount is read-only");
    assert!(!host.join("new").exists());

    let mounts = sh_ok(&node, &replica, "cat /proc/mounts");
    let scratch = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/scratch"))
        .unwrap_or_else(|| panic!("no /scratch in\n{mounts}"));
    assert!(scratch.starts_with("tmpfs /scratch tmpfs "), "{scratch}");
    assert!(scratch.contains("size=1024k"), "{scratch}");

    sh_ok(&node, &replica, "echo tmp > /cache/x");
    let anonymous = node.data_dir().join("volumes/_anonymous").join(&replica);
    assert_eq!(
        // Numbered by its place among the service's mounts (the tmpfs is not one).
        std::fs::read_to_string(anonymous.join("1/_data/x")).unwrap(),
        "tmp\n"
    );
    node.cli_ok(&["rm", "mounts"]);
    node.wait_for("the anonymous volume gone with its replica", WAIT, || {
        !anonymous.exists()
    });
}

/// Regression: a bind source missing on the node, with `create_host_path: false`, used to be
/// a container that runc could not start, restarted without a reason; now the replica fails
/// saying which path is missing.
#[test]
fn missing_bind_source_fails_the_replica_naming_the_path() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let missing = node.dir.path().join("not-there");
    let file = node.write(
        "compose.yaml",
        &format!(
            "services:\n  web:\n    image: {IMAGE}\n    command: [sleep, \"3600\"]\n    volumes: [{{type: bind, source: {}, target: /mnt}}]\n",
            missing.display()
        ),
    );
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "bind"]);
    let wanted = missing.display().to_string();
    node.wait_for("the replica's failure naming the path", WAIT, || {
        node.cli_json(&["ps"]).as_array().unwrap().iter().any(|v| {
            v["status"].to_string().contains(&format!(
                "bind mount source {wanted} (for /mnt) does not exist on this node"
            ))
        })
    });
    assert!(!missing.exists(), "create_host_path: false creates nothing");
}

#[test]
fn external_volumes_are_created_refused_while_in_use_and_removed() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let compose = format!(
        "volumes:\n  shared: {{external: true}}\nservices:\n  web:\n    image: {IMAGE}\n    command: [sleep, \"3600\"]\n    stop_grace_period: 1s\n    volumes: [\"shared:/shared\"]\n"
    );
    let file = node.write("compose.yaml", &compose);
    let refused = node.cli(&["deploy", "-f", file.to_str().unwrap(), "--app", "ext"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("external volume shared, which does not exist")
            && stderr.contains("hivemind volume create shared"),
        "{stderr}"
    );

    node.cli_ok(&["volume", "create", "shared", "--label", "team=web"]);
    let inspect = node.cli_json(&["volume", "inspect", "shared"]);
    assert_eq!(inspect["labels"]["team"], "web");
    assert_eq!(inspect["external"], true);
    node.deploy_wait("ext", &compose);
    let replica = node.replica_of("web");
    sh_ok(&node, &replica, "echo x > /shared/f");

    let busy = node.cli(&["volume", "rm", "shared"]);
    assert!(!busy.status.success());
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains(&format!("in use by replica {replica}")),
        "{stderr}"
    );

    // `rm --volumes` leaves external volumes alone.
    node.cli_ok(&["rm", "--volumes", "ext"]);
    node.wait_for("the container gone", WAIT, || node.containers().is_empty());
    assert_eq!(volume_names(&node), ["shared"]);
    node.wait_for("the replica gone from the store", WAIT, || {
        node.cli(&["volume", "rm", "shared"]).status.success()
    });
    node.wait_for("its data removed by the node", WAIT, || {
        !volume_dir(&node, "shared").exists()
    });
}

/// A volume with `driver_opts` is mount(8) of them at first use, and unmounted when removed.
#[test]
fn driver_opts_are_mounted_at_first_use_and_unmounted_at_removal() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    node.cli_ok(&[
        "volume",
        "create",
        "fast",
        "--driver-opt",
        "type=tmpfs",
        "--driver-opt",
        "device=tmpfs",
        "--driver-opt",
        "o=size=2m,mode=0777,nosuid",
    ]);
    node.deploy_wait(
        "opts",
        &format!(
            "volumes:\n  fast: {{external: true}}\nservices:\n  web:\n    image: {IMAGE}\n    command: [sleep, \"3600\"]\n    stop_grace_period: 1s\n    volumes: [\"fast:/fast\"]\n"
        ),
    );
    let data = volume_dir(&node, "fast").join("_data");
    let host_mount = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(data.to_str().unwrap()))
            .map(String::from)
    };
    let line = host_mount().expect("the volume is mounted on the node");
    assert!(
        line.contains(" - tmpfs tmpfs ") && line.contains("size=2048k"),
        "{line}"
    );
    let replica = node.replica_of("web");
    let mounts = sh_ok(&node, &replica, "cat /proc/mounts");
    assert!(
        mounts.lines().any(|l| l.starts_with("tmpfs /fast tmpfs ")),
        "{mounts}"
    );

    node.cli_ok(&["rm", "opts"]);
    node.wait_for("the volume removable", WAIT, || {
        node.cli(&["volume", "rm", "fast"]).status.success()
    });
    node.wait_for("unmounted and removed by the node", WAIT, || {
        host_mount().is_none() && !volume_dir(&node, "fast").exists()
    });
}
