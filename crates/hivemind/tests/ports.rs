//! A published port that a host process already holds: the node reports it as a problem
//! (`hivemind nodes`), a `PortUnavailable` event names the port and the service, the agent keeps
//! trying, and once the port is free the ingress serves it and a `Resolved` event follows.
//! Changing a published port is routing: the same containers serve on the new port. Keys read
//! but not honoured (`allow_from`) are deploy warnings, and `--strict` refuses them.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{http_get, require_containerd, TestNode, WORKLOAD};

fn events(node: &TestNode) -> Vec<(String, String)> {
    node.cli_json(&["events"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn node_problems(node: &TestNode) -> Vec<String> {
    node.cli_json(&["nodes"])[0]["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["message"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_published_port_held_by_the_host_is_reported_and_served_once_free() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    node.import_workload();
    // A host process holds the port before the service is deployed.
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let file = node.write(
        "compose.yaml",
        &format!(
            "services:\n  web:\n    image: {WORKLOAD}\n    ports: [\"{port}:80\"]\n    stop_grace_period: 1s\n"
        ),
    );
    node.cli_ok(&[
        "deploy",
        "-f",
        file.to_str().unwrap(),
        "--app",
        "shop",
        "--wait",
    ]);

    node.wait_for("the node reports the port", Duration::from_secs(15), || {
        node_problems(&node)
            .iter()
            .any(|p| p.contains(&format!("published port {port} (shop/web)")))
    });
    let table = node.cli_ok(&["nodes"]);
    assert!(table.contains("PortUnavailable"), "{table}");
    // The events controller records the problem just after the report stored it.
    node.wait_for("the problem recorded", Duration::from_secs(15), || {
        events(&node)
            .iter()
            .any(|(reason, _)| reason == "PortUnavailable")
    });
    let warned: Vec<_> = events(&node)
        .into_iter()
        .filter(|(reason, _)| reason == "PortUnavailable")
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].1.contains("in use"), "{warned:?}");

    // The holder lets go: the agent's next pass opens the port and the problem resolves.
    drop(holder);
    node.wait_for("the port served", Duration::from_secs(15), || {
        http_get(&format!("127.0.0.1:{port}"), "x", "/").is_ok_and(|(status, _)| status == 200)
    });
    node.wait_for("the problem resolved", Duration::from_secs(15), || {
        node_problems(&node).is_empty()
    });
    node.wait_for("the resolution recorded", Duration::from_secs(15), || {
        events(&node).iter().any(|(reason, message)| {
            reason == "Resolved" && message.contains(&format!("published port {port}"))
        })
    });
    let all = events(&node);
    // Reported once, not on every heartbeat.
    assert_eq!(
        all.iter().filter(|(r, _)| r == "PortUnavailable").count(),
        1,
        "{all:?}"
    );
}

/// A port nothing listens on now.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Each replica of `service` by id with its start time, once every one runs with a start time.
fn started(node: &TestNode, service: &str) -> BTreeMap<String, u64> {
    node.cli_json(&["ps", service])
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["status"]["state"] == "running")
        .filter_map(|v| {
            Some((
                v["replica"]["id"].as_str()?.to_string(),
                v["status"]["started_at"].as_u64()?,
            ))
        })
        .collect()
}

fn serves(port: u16) -> bool {
    http_get(&format!("127.0.0.1:{port}"), "x", "/").is_ok_and(|(status, _)| status == 200)
}

/// Acceptance 7 of issue 9.
#[test]
fn changing_a_published_port_keeps_the_containers_and_serves_on_the_new_port() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    node.import_workload();
    let (first, second) = (unused_port(), unused_port());
    let compose = |port: u16, extra: &str| {
        format!(
            "services:\n  web:\n    image: {WORKLOAD}\n    deploy: {{replicas: 2}}\n    ports: [\"{port}:80\"]\n    stop_grace_period: 1s\n{extra}"
        )
    };
    node.deploy_wait("shop", &compose(first, ""));
    node.wait_for("the first port served", Duration::from_secs(15), || {
        serves(first)
    });
    let before = started(&node, "web");
    assert_eq!(before.len(), 2, "{before:?}");
    let tasks = node.running_tasks();

    // A new published port and a rollout strategy: both routing, so nothing restarts. The
    // strategy is not honoured yet, which the deploy says.
    let file = node.write(
        "compose.yaml",
        &compose(second, "    x-hivemind: {strategy: blue-green}\n"),
    );
    let out = node.cli(&["deploy", "-f", file.to_str().unwrap(), "--app", "shop"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: services.web.x-hivemind.strategy: not honoured yet"),
        "{stderr}"
    );
    node.wait_for("the new port served", Duration::from_secs(15), || {
        serves(second)
    });
    node.wait_for("the old port closed", Duration::from_secs(15), || {
        !serves(first)
    });
    // Same replicas, same start times, same container processes.
    assert_eq!(started(&node, "web"), before);
    assert_eq!(node.running_tasks(), tasks);
    let service = &node.cli_json(&["services"])[0];
    assert_eq!(service["spec"]["ports"][0]["published"], second);

    // `allow_from` is read but not enforced: a warning, and `--strict` refuses the file.
    let policy = node.write(
        "policy.yaml",
        &compose(second, "    x-hivemind: {allow_from: [web]}\n"),
    );
    let policy = policy.to_str().unwrap();
    let refused = node.cli(&["deploy", "-f", policy, "--app", "shop", "--strict"]);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("services.web.x-hivemind.allow_from: not enforced yet"),
        "{stderr}"
    );
    assert!(stderr.contains("--strict"), "{stderr}");
    let service = &node.cli_json(&["services"])[0];
    assert!(
        service["spec"]["hivemind"].get("allow_from").is_none(),
        "a refused deploy wrote: {service}"
    );
    let out = node.cli(&["deploy", "-f", policy, "--app", "shop"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: services.web.x-hivemind.allow_from: not enforced yet"),
        "{stderr}"
    );
    // Still routing only: the containers stay.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(started(&node, "web"), before);
    assert_eq!(node.running_tasks(), tasks);
}
