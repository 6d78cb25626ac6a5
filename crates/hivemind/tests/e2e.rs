//! System tests: the real binary, real containerd and runc (root). Each test runs its own
//! `hivemind up` on a temp data dir and its own containerd namespace (see `support`).

mod support;

use std::time::Duration;

use support::{require_containerd, TestNode, IMAGE};

fn web_compose(replicas: u32) -> String {
    format!(
        r#"
services:
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080"]
    stop_grace_period: 1s
    deploy:
      replicas: {replicas}
"#
    )
}

/// (replica id, state, pid) from `hivemind ps -o json`.
fn ps(node: &TestNode) -> Vec<(String, String, Option<u64>)> {
    let mut out: Vec<_> = node
        .cli_json(&["ps"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["replica"]["id"].as_str().unwrap().to_string(),
                v["status"]["state"]
                    .as_str()
                    .unwrap_or("pending")
                    .to_string(),
                v["status"]["pid"].as_u64(),
            )
        })
        .collect();
    out.sort();
    out
}

fn running_ids(node: &TestNode) -> Vec<String> {
    node.running_tasks().into_iter().map(|(id, _)| id).collect()
}

#[test]
fn deploy_scale_and_remove_on_containerd() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    node.deploy_wait("hello", &web_compose(3));

    // Acceptance 1: containerd runs exactly the replicas, and `ps` agrees with it.
    let tasks = node.running_tasks();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let listed = ps(&node);
    assert_eq!(listed.len(), 3);
    for ((id, state, pid), (task_id, task_pid)) in listed.iter().zip(&tasks) {
        assert_eq!(id, task_id);
        assert_eq!(state, "running");
        assert_eq!(*pid, Some(u64::from(*task_pid)));
    }

    // Acceptance 2: scale up and down converge within seconds.
    node.cli_ok(&["scale", "web=5"]);
    node.wait_for("5 running replicas", Duration::from_secs(15), || {
        running_ids(&node).len() == 5 && ps(&node).iter().all(|(_, s, _)| s == "running")
    });
    node.cli_ok(&["scale", "hello/web=1"]);
    node.wait_for("1 replica left", Duration::from_secs(15), || {
        node.containers().len() == 1 && running_ids(&node).len() == 1
    });
    assert_eq!(ps(&node).len(), 1);

    // `rm` leaves no container, task or container snapshot in the namespace.
    node.cli_ok(&["rm", "hello"]);
    node.wait_for("everything removed", Duration::from_secs(15), || {
        node.containers().is_empty()
            && node.tasks().is_empty()
            && node.active_snapshots().is_empty()
    });
    assert!(node.cli_json(&["apps"]).as_array().unwrap().is_empty());
}

#[test]
fn killed_container_is_restarted_per_policy() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let file = node.write(
        "compose.yaml",
        &format!(
            r#"
services:
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080"]
    stop_grace_period: 1s
  once:
    image: {IMAGE}
    command: ["sh", "-c", "sleep 1; exit 3"]
    restart: "no"
"#
        ),
    );
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "policy"]);
    node.wait_for("web running", Duration::from_secs(15), || {
        ps(&node)
            .iter()
            .any(|(id, s, _)| id.starts_with("web-") && s == "running")
    });
    let (id, _, pid) = ps(&node)
        .into_iter()
        .find(|(id, _, _)| id.starts_with("web-"))
        .unwrap();
    let pid = pid.unwrap();
    // Killed from outside Hivemind: the default policy (always) brings it back.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    node.wait_for("web restarted", Duration::from_secs(10), || {
        let replicas = node.cli_json(&["ps"]);
        replicas.as_array().unwrap().iter().any(|v| {
            v["replica"]["id"] == id.as_str()
                && v["status"]["state"] == "running"
                && v["status"]["restarts"].as_u64() == Some(1)
                && v["status"]["pid"].as_u64() != Some(pid)
        })
    });
    // `restart: "no"`: the replica that exited stays exited, with its exit code.
    node.wait_for("once exited", Duration::from_secs(15), || {
        node.cli_json(&["ps", "once"])
            .as_array()
            .unwrap()
            .iter()
            .any(|v| {
                v["status"]["state"] == "exited" && v["status"]["exit_code"].as_i64() == Some(3)
            })
    });
    std::thread::sleep(Duration::from_secs(2));
    let once = node.cli_json(&["ps", "once"]);
    assert_eq!(once[0]["status"]["restarts"].as_u64(), Some(0), "{once}");
}

#[test]
fn kill_9_of_up_keeps_and_adopts_containers() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    node.deploy_wait("hello", &web_compose(3));
    let before = node.running_tasks();
    assert_eq!(before.len(), 3);

    node.kill9();
    // The containers were never stopped: same tasks, same pids, with nobody managing them.
    assert_eq!(node.running_tasks(), before);

    node.spawn();
    node.wait_for(
        "replicas reported running again",
        Duration::from_secs(15),
        || {
            let listed = ps(&node);
            listed.len() == 3 && listed.iter().all(|(_, s, _)| s == "running")
        },
    );
    // Give the agent a few passes to do anything wrong: nothing may be duplicated or restarted.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        node.running_tasks(),
        before,
        "containers were replaced, not adopted"
    );
    assert_eq!(node.containers().len(), 3);
    let listed: Vec<String> = ps(&node).into_iter().map(|(id, _, _)| id).collect();
    let ids: Vec<String> = before.into_iter().map(|(id, _)| id).collect();
    assert_eq!(listed, ids);
}

#[test]
fn missing_image_fails_the_wait_with_the_reason() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let file = node.write(
        "compose.yaml",
        "services:\n  web:\n    image: hivemind.test/nothing-here:1\n",
    );
    let out = node.cli(&[
        "deploy",
        "-f",
        file.to_str().unwrap(),
        "--app",
        "bad",
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing-here"), "{stderr}");
    assert!(node.containers().is_empty());
}

#[test]
fn bad_compose_files_are_refused_before_anything_is_written() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    // (file, what stderr must name)
    let cases = [
        ("services: {}\n", "services"),
        ("services:\n  web:\n    build: .\n", "services.web.build"),
        (
            "services:\n  web:\n    image: x\n    ports: [\"80:abc\"]\n",
            "services.web.ports[0]",
        ),
        // `Web_1` is a valid Compose name now (mapped to `web-1`); a space is not.
        ("services:\n  \"Web 1\":\n    image: x\n", "Web 1"),
        (
            "services:\n  web:\n    image: x\n    deploy: { replicas: three }\n",
            "services.web.deploy.replicas",
        ),
        (
            "services:\n  web:\n    image: x\n    enviroment: [A=1]\n",
            "environment",
        ),
        (
            "services:\n  web:\n    image: x\n    stop_grace_period: soon\n",
            "services.web.stop_grace_period",
        ),
        (
            "services:\n  web:\n    image: ${IMAGE:?set IMAGE}\n",
            "IMAGE",
        ),
        ("services:\n  web: [\n", "line 3"),
        // Volumes are honoured now; one the file does not define is refused.
        (
            "services:\n  web:\n    image: x\n    volumes: [\"data:/d\"]\n",
            "services.web.volumes[0]",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let file = node.write(&format!("bad{i}.yaml"), text);
        let out = node.cli(&["deploy", "-f", file.to_str().unwrap(), "--app", "bad"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} was accepted: {text}");
        assert!(
            stderr.contains(needle),
            "case {i}: {stderr:?} does not name {needle}"
        );
        assert!(!stderr.contains("panicked"), "case {i}: {stderr}");
    }
    assert!(node.cli_json(&["apps"]).as_array().unwrap().is_empty());
    assert!(node.containers().is_empty());
}

#[test]
fn killing_up_mid_deploy_leaves_exactly_the_desired_containers() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    let file = node.write("compose.yaml", &web_compose(12));
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "hello"]);
    // Kill the agent (and server) while containers are being created.
    node.wait_for("the first containers", Duration::from_secs(15), || {
        !node.containers().is_empty()
    });
    node.kill9();
    node.spawn();
    node.wait_for("12 running replicas", Duration::from_secs(30), || {
        let listed = ps(&node);
        listed.len() == 12 && listed.iter().all(|(_, s, _)| s == "running")
    });
    std::thread::sleep(Duration::from_secs(2));
    // Exactly the desired containers: one per replica object, all running, nothing else.
    let ids: Vec<String> = ps(&node).into_iter().map(|(id, _, _)| id).collect();
    let mut containers = node.containers();
    containers.sort();
    assert_eq!(containers, ids, "orphans or missing containers");
    assert_eq!(running_ids(&node), ids);
}

#[test]
fn oom_kill_is_named_in_ps() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let file = node.write(
        "compose.yaml",
        &format!(
            r#"
services:
  hog:
    image: {IMAGE}
    command: ["sh", "-c", "x=a; while true; do x=$$x$$x; done"]
    restart: "no"
    deploy:
      resources: {{ limits: {{ memory: 16M }} }}
"#
        ),
    );
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "oom"]);
    node.wait_for("the OOM kill reported", Duration::from_secs(30), || {
        node.cli_json(&["ps"]).as_array().unwrap().iter().any(|v| {
            v["status"]["state"] == "exited"
                && v["status"]["exit_code"].as_i64() == Some(137)
                && v["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("OOM-killed"))
        })
    });
}

/// Recorded events through the real binary: an exit carries its code and last line, an OOM
/// kill names the limit, and the crash loop that follows shows its back-off.
#[test]
fn exits_and_oom_kills_are_recorded_as_events() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let file = node.write(
        "compose.yaml",
        &format!(
            r#"
services:
  once:
    image: {IMAGE}
    command: ["sh", "-c", "echo starting; echo goodbye from once; exit 3"]
    restart: "no"
  hog:
    image: {IMAGE}
    command: ["sh", "-c", "x=a; while true; do x=$$x$$x; done"]
    deploy:
      resources: {{ limits: {{ memory: 64M }} }}
"#
        ),
    );
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "ev"]);
    let events =
        || -> Vec<serde_json::Value> { node.cli_json(&["events"]).as_array().unwrap().clone() };
    node.wait_for("the exit recorded", Duration::from_secs(30), || {
        events().iter().any(|e| {
            e["reason"] == "Exited"
                && e["exit_code"].as_i64() == Some(3)
                && e["object"]["service"] == "once"
                && e["last_lines"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l == "goodbye from once"))
        })
    });
    node.wait_for(
        "the OOM kill and back-off recorded",
        Duration::from_secs(90),
        || {
            let all = events();
            let oom = all.iter().any(|e| {
                e["reason"] == "OOMKilled"
                    && e["message"].as_str().is_some_and(|m| {
                        m.contains("killed for memory (limit 64 MiB), exit code 137")
                    })
            });
            let back_off = all.iter().any(|e| {
                e["reason"] == "BackOff"
                    && e["object"]["service"] == "hog"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("back-off "))
            });
            oom && back_off
        },
    );
    // Each exit once, however many reports repeated it.
    let all = events();
    let once_exits = all
        .iter()
        .filter(|e| e["reason"] == "Exited" && e["object"]["service"] == "once")
        .count();
    assert_eq!(once_exits, 1, "{all:?}");
    // The table shows the last lines under the event; a service name filters.
    let table = node.cli_ok(&["events", "once"]);
    assert!(table.contains("Exited"), "{table}");
    assert!(table.contains("    | goodbye from once"), "{table}");
    assert!(!table.contains("OOMKilled"), "{table}");
    let ps = node.cli_ok(&["ps", "hog"]);
    assert!(ps.contains("OOM-killed"), "{ps}");
    // The crash loop counts up one OOMKilled event instead of adding one per kill.
    node.wait_for(
        "a repeated OOM kill counted",
        Duration::from_secs(60),
        || {
            let ooms: Vec<_> = events()
                .into_iter()
                .filter(|e| e["reason"] == "OOMKilled")
                .collect();
            ooms.len() == 1 && ooms[0]["count"].as_u64().is_some_and(|c| c >= 2)
        },
    );
}

/// `events -f` prints events as they are recorded: a failed start (missing image) and an exit
/// with its last line, one JSON object per line.
#[test]
fn events_follow_prints_new_failures_and_exits() {
    use std::io::BufRead;
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let mut follow = std::process::Command::new(support::bin())
        .args(["events", "-f", "-o", "json"])
        .env("HIVEMIND_SERVER", format!("http://{}", node.addr))
        .env("HIVEMIND_DATA_DIR", node.data_dir())
        .env_remove("HIVEMIND_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(event) = serde_json::from_str(&line) {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    let file = node.write(
        "compose.yaml",
        &format!(
            r#"
services:
  gone:
    image: hivemind.test/nothing-here:1
  quit:
    image: {IMAGE}
    command: ["sh", "-c", "echo last words; exit 5"]
    restart: "no"
"#
        ),
    );
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "follow"]);
    let (mut failed, mut exited) = (false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !(failed && exited) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(event) = rx.recv_timeout(left) else {
            let _ = follow.kill();
            panic!("events -f printed only {seen:?}\nlog:\n{}", node.log_tail());
        };
        failed |= event["reason"] == "Failed"
            && event["object"]["service"] == "gone"
            && event["message"]
                .as_str()
                .is_some_and(|m| m.contains("nothing-here"));
        exited |= event["reason"] == "Exited"
            && event["exit_code"].as_i64() == Some(5)
            && event["last_lines"][0] == "last words";
        seen.push(event);
    }
    let _ = follow.kill();
    let _ = follow.wait();
}

/// An exit that happens while `up` is down is recorded when it comes back, once: a second
/// restart of `up` finds the same stopped container and records nothing new.
#[test]
fn exits_while_up_is_down_are_recorded_once() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    node.deploy_wait(
        "away",
        &format!(
            r#"
services:
  late:
    image: {IMAGE}
    command: ["sh", "-c", "sleep 3; echo bye while away; exit 4"]
    restart: "no"
"#
        ),
    );
    node.kill9();
    node.wait_for("the container exited", Duration::from_secs(15), || {
        node.tasks().iter().any(|(_, _, s)| s == "STOPPED")
    });
    let exits = |node: &TestNode| -> Vec<serde_json::Value> {
        node.cli_json(&["events", "late"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "Exited")
            .cloned()
            .collect()
    };
    node.spawn();
    node.wait_for("the exit recorded", Duration::from_secs(20), || {
        exits(&node).iter().any(|e| {
            e["exit_code"].as_i64() == Some(4)
                && e["last_lines"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l == "bye while away"))
        })
    });
    node.kill9();
    node.spawn();
    node.wait_for(
        "the replica reported again",
        Duration::from_secs(20),
        || node.cli_json(&["ps", "late"])[0]["status"]["state"] == "exited",
    );
    // A few report rounds (heartbeat 5 s) to do anything wrong.
    std::thread::sleep(Duration::from_secs(6));
    let all = exits(&node);
    assert_eq!(all.len(), 1, "{all:?}");
}
