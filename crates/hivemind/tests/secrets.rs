//! System test of secrets and configs (issue 10, acceptance 3): a Compose project's secret from
//! a file and from the shell, a config inline and a cluster secret (`secret create`), deployed
//! through the binary on real containerd. The values are readable in the container at their
//! targets with their owners and modes, from a tmpfs, and appear nowhere else: not in the store
//! file, any API output, events, logs, or the node's disk under the data dir.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng as _;
use support::{bin, require_containerd, TestNode, IMAGE};

fn random(prefix: &str) -> String {
    let tail: String = (0..16)
        .map(|_| (b'a' + rand::thread_rng().gen_range(0..26)) as char)
        .collect();
    format!("{prefix}-{tail}")
}

/// Mount points under `dir` (from /proc/self/mountinfo), with their file system type.
fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = PathBuf::from(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?.to_string();
            point.starts_with(dir).then_some((point, fstype))
        })
        .collect()
}

/// Unmounts what the test may leave mounted (a failure before the app's removal).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for (point, _) in mounts_under(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&point).status();
        }
    }
}

/// Every file under `dir` on the same file system as `dir` (the node's disk: mounted tmpfs
/// are not crossed), with its content.
fn disk_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dev = std::fs::metadata(dir).unwrap().dev();
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != dev {
                continue;
            }
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The CLI with `stdin` piped in.
fn cli_stdin(node: &TestNode, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(bin())
        .args(args)
        .envs(node.env())
        .env_remove("HIVEMIND_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn secrets_are_readable_in_the_container_and_nowhere_else() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    let _unmount = Unmount(node.data_dir().join("secrets"));
    let password = random("pw");
    let api_key = random("key");
    let tls = random("tls");
    let values = [password.as_str(), api_key.as_str(), tls.as_str()];

    // A cluster secret from standard input.
    let out = cli_stdin(&node, &["secret", "create", "tls", "-"], &tls);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(dir.join("db_password.txt"), &password).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:
  web:
    image: {IMAGE}
    command: [\"sleep\", \"600\"]
    stop_grace_period: 1s
    secrets:
      - db_password
      - {{source: api_key, target: key.txt, uid: '1000', gid: '1001', mode: 0400}}
      - tls
    configs:
      - {{source: app_conf, target: /etc/app.conf}}
secrets:
  db_password: {{file: ./db_password.txt}}
  api_key: {{environment: API_KEY}}
  tls: {{external: true}}
configs:
  app_conf: {{content: \"workers=2\"}}
"
        ),
    )
    .unwrap();
    let deploy = |node: &TestNode, key: &str| {
        let out = Command::new(bin())
            .args(["deploy", "--app", "shop", "--wait", "--timeout", "60s"])
            .envs(node.env())
            .env_remove("HIVEMIND_TOKEN")
            .env("API_KEY", key)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "deploy failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            node.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let mut outputs = vec![deploy(&node, &api_key)];

    let replica = node.replica_of("web");
    let exec = |node: &TestNode, replica: &str, args: &[&str]| {
        let mut all = vec!["exec", replica, "--"];
        all.extend(args);
        node.cli_ok(&all)
    };
    assert_eq!(
        exec(&node, &replica, &["cat", "/run/secrets/db_password"]),
        password
    );
    assert_eq!(
        exec(&node, &replica, &["cat", "/run/secrets/key.txt"]),
        api_key
    );
    assert_eq!(exec(&node, &replica, &["cat", "/run/secrets/tls"]), tls);
    assert_eq!(
        exec(&node, &replica, &["cat", "/etc/app.conf"]),
        "workers=2"
    );
    // Mode, owner and group as `ls -ln` shows them (the image has no `stat`).
    let owner = |path: &str| -> Vec<String> {
        let line = exec(&node, &replica, &["ls", "-ln", path]);
        line.split_whitespace()
            .enumerate()
            .filter(|(i, _)| [0, 2, 3].contains(i))
            .map(|(_, f)| f.to_string())
            .collect()
    };
    assert_eq!(
        owner("/run/secrets/key.txt"),
        ["-r--------", "1000", "1001"]
    );
    assert_eq!(owner("/run/secrets/db_password"), ["-r--r--r--", "0", "0"]);
    // Read-only, even for root in the container.
    let write = node.cli(&[
        "exec",
        &replica,
        "--",
        "sh",
        "-c",
        "echo x > /run/secrets/db_password",
    ]);
    assert!(!write.status.success(), "a secret was writable");

    // On the node, the files are on a tmpfs of the replica's own.
    let secrets_dir = node.data_dir().join("secrets");
    let mounts = mounts_under(&secrets_dir);
    assert_eq!(
        mounts,
        vec![(secrets_dir.join(&replica), "tmpfs".to_string())],
        "{mounts:?}"
    );

    // A cluster secret in use cannot be removed.
    let rm = node.cli(&["secret", "rm", "tls"]);
    assert!(!rm.status.success());
    let why = String::from_utf8_lossy(&rm.stderr);
    assert!(why.contains("in use by default/shop/web"), "{why}");

    // The agent restarted with its containers running: the files stay.
    node.kill9();
    node.spawn();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(node.replica_of("web"), replica);
    assert_eq!(
        exec(&node, &replica, &["cat", "/run/secrets/db_password"]),
        password
    );

    // What the API and the CLI show, all of it.
    for args in [
        &["ps"][..],
        &["services"],
        &["apps"],
        &["secret", "ls"],
        &["secret", "inspect", "db_password", "--app", "shop"],
        &["secret", "inspect", "tls"],
        &["config", "ls"],
        &["events"],
        &["nodes"],
    ] {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        outputs.push(node.cli_ok(&all));
        outputs.push(node.cli_ok(args));
    }
    outputs.push(node.cli_ok(&["logs", "web"]));
    let inspect = node.cli_json(&["secret", "inspect", "db_password", "--app", "shop"]);
    assert_eq!(inspect["size"], password.len());
    assert_eq!(inspect["users"][0], "default/shop/web");
    assert_eq!(inspect["digest"].as_str().map(str::len), Some(12));

    // A changed value replaces the replica; the new one reads the new value.
    let new_key = random("key2");
    outputs.push(deploy(&node, &new_key));
    // `deploy --wait` returned once the new replica ran.
    let replaced = node
        .running_tasks()
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| id.starts_with("web-") && *id != replica)
        .expect("a new replica");
    assert_eq!(
        exec(&node, &replaced, &["cat", "/run/secrets/key.txt"]),
        new_key
    );
    node.wait_for(
        "the old replica's tmpfs gone",
        Duration::from_secs(30),
        || {
            mounts_under(&secrets_dir)
                .iter()
                .all(|(p, _)| !p.ends_with(&replica))
        },
    );

    let mut all_values: Vec<&str> = values.to_vec();
    all_values.push(&new_key);
    for output in &outputs {
        for v in &all_values {
            assert!(
                !output.contains(v),
                "a value in the CLI's output:\n{output}"
            );
        }
    }
    // The node's disk under the data dir: the store and its WAL, logs, run files, everything
    // not on a tmpfs.
    let files = disk_files(&node.data_dir());
    let names: BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    assert!(
        names.contains("state.db") && names.contains("secrets.key"),
        "{names:?}"
    );
    // The search sees the store: the config, which is not secret, is there in plain.
    assert!(
        files.iter().any(|(_, bytes)| contains(bytes, "workers=2")),
        "the config's content is in no file: the search reads nothing"
    );
    for (path, bytes) in &files {
        for v in &all_values {
            assert!(!contains(bytes, v), "{v} found in {}", path.display());
        }
    }
    let log = std::fs::read(node.data_dir().parent().unwrap().join("up.log")).unwrap();
    for v in &all_values {
        assert!(!contains(&log, v), "{v} in the server's and agent's log");
    }

    // Removing the app removes its own secrets and the replica's tmpfs; then the cluster one
    // can go too.
    node.cli_ok(&["rm", "shop"]);
    node.wait_for("the tmpfs removed", Duration::from_secs(30), || {
        mounts_under(&secrets_dir).is_empty()
    });
    let left = node.cli_json(&["secret", "ls"]);
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    node.cli_ok(&["secret", "rm", "tls"]);
    assert_eq!(node.cli_json(&["secret", "ls"]), serde_json::json!([]));
}
