//! System tests of issue 10's lifecycle keys with real containerd and busybox: a one-shot
//! `migrate` service completes and is not run again, a `web` that `depends_on` it with
//! `service_completed_successfully` is created only after it completed, and `hivemind stop`
//! keeps `web` stopped across a restart of `up` until `hivemind start`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{require_containerd, TestNode, IMAGE};

fn compose() -> String {
    format!(
        r#"
services:
  migrate:
    image: {IMAGE}
    command: ["sh", "-c", "sleep 1; echo done"]
    restart: "no"
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080"]
    stop_grace_period: 1s
    restart: unless-stopped
    depends_on:
      migrate:
        condition: service_completed_successfully
"#
    )
}

/// The replicas of `service` from `hivemind ps -o json`.
fn replicas_of(node: &TestNode, service: &str) -> Vec<Value> {
    node.cli_json(&["ps"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["replica"]["service"] == service)
        .cloned()
        .collect()
}

fn state(v: &Value) -> &str {
    v["status"]["state"].as_str().unwrap_or("pending")
}

fn the_one(node: &TestNode, service: &str) -> Value {
    let mut found = replicas_of(node, service);
    assert_eq!(found.len(), 1, "one replica of {service}: {found:#?}");
    found.remove(0)
}

fn events(node: &TestNode) -> Vec<Value> {
    node.cli_json(&["events"]).as_array().unwrap().clone()
}

#[test]
fn one_shot_dependency_completes_before_its_dependent_starts_and_stop_survives_a_restart() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    node.deploy_wait("lc", &compose());

    // migrate completed, with its exit code, and was not restarted.
    let migrate = the_one(&node, "migrate");
    assert_eq!(state(&migrate), "completed", "{migrate:#}");
    assert_eq!(migrate["status"]["exit_code"], 0);
    assert_eq!(migrate["status"]["restarts"], 0);
    let migrate_id = migrate["replica"]["id"].as_str().unwrap().to_string();
    let completed_at = migrate["status"]["exits"][0]["at"].as_u64().unwrap();

    // web's replica was created only once migrate had completed.
    node.wait_for("web running", Duration::from_secs(20), || {
        replicas_of(&node, "web")
            .first()
            .is_some_and(|w| state(w) == "running")
    });
    let web = the_one(&node, "web");
    let web_id = web["replica"]["id"].as_str().unwrap().to_string();
    let web_created = web["replica"]["meta"]["created_at"].as_u64().unwrap();
    let migrate_created = migrate["replica"]["meta"]["created_at"].as_u64().unwrap();
    assert!(
        web_created >= completed_at && completed_at > migrate_created,
        "migrate created {migrate_created}, completed {completed_at}; web created {web_created}"
    );

    // The events tell the story in order: web waited, migrate completed, web went ahead.
    let find = |reason: &str, name_prefix: &str| {
        events(&node).into_iter().find(|e| {
            e["reason"] == reason
                && e["object"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
    };
    node.wait_for("the completion event", Duration::from_secs(10), || {
        find("Completed", "migrate-").is_some()
    });
    let waiting = find("Waiting", "web").expect("a Waiting event for web");
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("waiting for migrate (service_completed_successfully)"),
        "{waiting:#}"
    );
    let completed = find("Completed", "migrate-").unwrap();
    let ready = find("DependenciesReady", "web").expect("a DependenciesReady event for web");
    let time = |e: &Value| e["time"].as_u64().unwrap();
    assert!(
        time(&waiting) <= time(&completed) && time(&completed) <= time(&ready),
        "waiting {}, completed {}, ready {}",
        time(&waiting),
        time(&completed),
        time(&ready)
    );
    assert!(
        time(&ready) <= web_created,
        "{ready:#} then web at {web_created}"
    );

    // The completed container is kept, so its logs stay readable; nothing runs it again.
    let logs = node.cli_ok(&["logs", &migrate_id]);
    assert_eq!(logs.matches("done").count(), 1, "{logs}");
    std::thread::sleep(Duration::from_secs(3));
    let again = the_one(&node, "migrate");
    assert_eq!(again["replica"]["id"], migrate_id.as_str());
    assert_eq!(state(&again), "completed");
    assert!(node.containers().contains(&migrate_id));

    // `stop` stops web's container and keeps it.
    let out = node.cli_ok(&["stop", "lc/web"]);
    assert!(out.contains("lc/web stopped"), "{out}");
    node.wait_for("web stopped", Duration::from_secs(20), || {
        state(&the_one(&node, "web")) == "stopped"
            && !node.running_tasks().iter().any(|(id, _)| *id == web_id)
    });
    assert!(node.containers().contains(&web_id));

    // Across a crash and restart of `up` (server and agent), web stays stopped and migrate
    // stays completed: neither is started again.
    node.kill9();
    node.spawn();
    node.wait_for("statuses reported again", Duration::from_secs(20), || {
        state(&the_one(&node, "migrate")) == "completed"
            && state(&the_one(&node, "web")) == "stopped"
    });
    std::thread::sleep(Duration::from_secs(4));
    let web_now = the_one(&node, "web");
    assert_eq!(state(&web_now), "stopped", "{web_now:#}");
    assert_eq!(web_now["replica"]["id"], web_id.as_str());
    assert!(!node.running_tasks().iter().any(|(id, _)| *id == web_id));
    assert_eq!(state(&the_one(&node, "migrate")), "completed");
    let logs = node.cli_ok(&["logs", &migrate_id]);
    assert_eq!(logs.matches("done").count(), 1, "migrate ran again: {logs}");

    // `start` brings the same replica back.
    node.cli_ok(&["start", "lc/web"]);
    node.wait_for("web running again", Duration::from_secs(20), || {
        state(&the_one(&node, "web")) == "running"
            && node.running_tasks().iter().any(|(id, _)| *id == web_id)
    });
    assert_eq!(the_one(&node, "web")["status"]["restarts"], 0);
    assert_eq!(state(&the_one(&node, "migrate")), "completed");
}

#[test]
fn a_failed_one_shot_blocks_its_dependent_with_an_event_naming_it() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let file = node.write(
        "compose.yaml",
        &format!(
            r#"
services:
  migrate:
    image: {IMAGE}
    command: ["sh", "-c", "exit 3"]
    restart: "no"
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080"]
    depends_on:
      migrate:
        condition: service_completed_successfully
"#
        ),
    );
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "lcfail"]);
    node.wait_for(
        "the DependencyFailed event",
        Duration::from_secs(20),
        || {
            events(&node).iter().any(|e| {
                e["reason"] == "DependencyFailed"
                    && e["message"].as_str().is_some_and(|m| {
                        m.contains("migrate (service_completed_successfully): exited with code 3")
                    })
            })
        },
    );
    assert_eq!(state(&the_one(&node, "migrate")), "exited");
    assert!(replicas_of(&node, "web").is_empty());
    // `ps` says why web has no replica.
    let table = node.cli_ok(&["ps"]);
    let row = table
        .lines()
        .find(|l| l.contains(" web ") || l.starts_with("-"))
        .unwrap_or_else(|| panic!("no row for web in:\n{table}"));
    assert!(
        row.contains("blocked") && row.contains("exited with code 3"),
        "{table}"
    );
}

/// Regression: after a host reboot containerd keeps a replica's container but `/var/run/netns`
/// is empty, and starting the container failed for ever (`namespace path: lstat
/// /var/run/netns/...: no such file or directory`). Here the netns of a stopped replica is
/// deleted as a reboot would, and `start` must bring the same replica back on its address.
#[test]
fn a_replica_whose_netns_vanished_with_a_reboot_starts_again() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let file = format!(
        r#"
services:
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080"]
    stop_grace_period: 1s
"#
    );
    node.deploy_wait("rb", &file);
    let web = the_one(&node, "web");
    let web_id = web["replica"]["id"].as_str().unwrap().to_string();
    let ip = web["status"]["ip"].clone();
    node.cli_ok(&["stop", "rb/web"]);
    node.wait_for("web stopped", Duration::from_secs(20), || {
        state(&the_one(&node, "web")) == "stopped"
            && !node.running_tasks().iter().any(|(id, _)| *id == web_id)
    });
    let netns: Vec<String> = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next())
    .filter(|n| n.ends_with(&web_id))
    .map(str::to_string)
    .collect();
    assert_eq!(netns.len(), 1, "the replica's netns: {netns:?}");
    let deleted = std::process::Command::new("ip")
        .args(["netns", "delete", &netns[0]])
        .status()
        .unwrap();
    assert!(deleted.success());
    node.cli_ok(&["start", "rb/web"]);
    node.wait_for("web running again", Duration::from_secs(20), || {
        state(&the_one(&node, "web")) == "running"
            && node.running_tasks().iter().any(|(id, _)| *id == web_id)
    });
    assert_eq!(the_one(&node, "web")["status"]["ip"], ip, "same address");
}
