//! A published port that a host process already holds: the node reports it as a problem
//! (`hivemind nodes`), a `PortUnavailable` event names the port and the service, the agent keeps
//! trying, and once the port is free the ingress serves it and a `Resolved` event follows.

mod support;

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
    let all = events(&node);
    assert!(
        all.iter().any(|(reason, message)| reason == "Resolved"
            && message.contains(&format!("published port {port}"))),
        "{all:?}"
    );
    // Reported once, not on every heartbeat.
    assert_eq!(
        all.iter().filter(|(r, _)| r == "PortUnavailable").count(),
        1,
        "{all:?}"
    );
}
