//! System tests of container networking on one node (real containerd, netns, veth, nftables):
//! DNS names, service VIPs, published ports and the HTTP ingress, scale-down without dropped
//! requests, agent restarts and cleanup.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{http_get, require_containerd, TestNode, WORKLOAD};

fn app(node: &TestNode, web_replicas: u32) -> String {
    let port = published_port(node);
    format!(
        r#"
name: shop
services:
  web:
    image: {WORKLOAD}
    ports: ["{port}:80"]
    stop_grace_period: 2s
    deploy: {{ replicas: {web_replicas} }}
  client:
    image: {WORKLOAD}
    command: ["hm-workload", "sleep-forever"]
    stop_grace_period: 1s
"#
    )
}

fn published_port(node: &TestNode) -> u16 {
    18000 + node.slot as u16
}

fn start(web_replicas: u32) -> TestNode {
    let node = TestNode::start();
    node.import_workload();
    let file = node.write("compose.yaml", &app(&node, web_replicas));
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--wait"]);
    node
}

fn summary(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary in {out:?}"));
    serde_json::from_str(line).unwrap()
}

fn web_ips(node: &TestNode) -> BTreeSet<String> {
    node.cli_json(&["ps", "web"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["status"]["ip"].as_str().map(String::from))
        .collect()
}

#[test]
fn services_find_each_other_by_name_and_vip() {
    if !require_containerd() {
        return;
    }
    let node = start(3);
    node.wait_for("3 web addresses", Duration::from_secs(10), || {
        web_ips(&node).len() == 3
    });
    let client = node.replica_of("client");

    // `web` is the VIP; over 30 requests it spreads over all 3 replicas. A replica's address is
    // in the API as soon as it reports, and in the node's VIP set one assignment later, so wait
    // for the data plane to have all three before counting.
    let spread = || {
        let out = node.exec(
            &client,
            &[
                "loop",
                "--url",
                "http://web/",
                "--count",
                "30",
                "--interval",
                "10ms",
            ],
        );
        summary(&out)
    };
    node.wait_for(
        "the VIP spread over 3 replicas",
        Duration::from_secs(10),
        || spread()["by_body"].as_object().map(|b| b.len()) == Some(3),
    );
    let s = spread();
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["by_body"].as_object().unwrap().len(), 3, "{s}");

    // `tasks.web` are the replicas; `web.shop` (app-qualified) is the VIP too.
    let tasks: BTreeSet<String> = node
        .exec(&client, &["resolve", "tasks.web"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(tasks, web_ips(&node));
    let vip = node.exec(&client, &["resolve", "web.shop"]);
    assert!(
        vip.trim().starts_with(&format!("10.{}.", 200 + node.slot)),
        "{vip}"
    );

    // The node's DNS answers the host too: A and SRV records.
    let dig = |args: &[&str]| {
        let out = std::process::Command::new("dig")
            .arg(format!("@{}", node.gateway()))
            .args(["+short", "+time=2", "+tries=1"])
            .args(args)
            .output()
            .expect("dig (dnsutils) is installed by scripts/lib.sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(dig(&["web.shop.default.hivemind"]).trim(), vip.trim());
    let srv = dig(&["SRV", "_80._tcp.web.shop.default.hivemind"]);
    assert!(srv.contains(" 80 web.shop.default.hivemind."), "{srv}");
    assert!(dig(&["nothing.shop.default.hivemind"]).trim().is_empty());

    // busybox `nslookup` sends a dotted name as is (no search list): the node's DNS answers
    // the short name itself from the asker's address, like Docker's embedded DNS. A single
    // label goes through the search list (`web.shop.default.hivemind` answers), unless it is
    // absolute (`web.`).
    let lookup = |name: &str, owner: &str| nslookup(&node, &client, name, owner);
    assert_eq!(lookup("tasks.web", "tasks.web"), web_ips(&node));
    assert_eq!(lookup("tasks.web.shop", "tasks.web.shop"), web_ips(&node));
    let vip_only = BTreeSet::from([vip.trim().to_string()]);
    assert_eq!(lookup("web.shop", "web.shop"), vip_only);
    assert_eq!(lookup("web", "web.shop.default.hivemind"), vip_only);
    assert_eq!(lookup("web.", "web"), vip_only);
    // The host is no replica: short names are not ours for it (they go upstream).
    assert!(!dig(&["web"]).contains(vip.trim()));
}

/// The IPv4 addresses busybox `nslookup NAME` prints inside `replica` for the name `owner`
/// (see [`addresses_of`]). The whole output is printed for failures.
fn nslookup(node: &TestNode, replica: &str, name: &str, owner: &str) -> BTreeSet<String> {
    let out = node.cli(&["exec", replica, "--", "nslookup", name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "nslookup {name}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    addresses_of(&stdout, owner)
}

/// The addresses busybox `nslookup` output gives for `owner`: each answer is a `Name:` line
/// then an `Address:` line, so answers for other names (a search list completion, the
/// server's own `Address:` line) do not count.
fn addresses_of(output: &str, owner: &str) -> BTreeSet<String> {
    let mut addresses = BTreeSet::new();
    let mut named = None;
    for line in output.lines() {
        if let Some(n) = line.strip_prefix("Name:") {
            named = Some(n.trim().trim_end_matches('.').to_string());
        } else if let Some(address) = line.strip_prefix("Address:") {
            if named.as_deref() == Some(owner) {
                addresses.insert(address.trim().to_string());
            }
            named = None;
        }
    }
    addresses
}

/// Regression: a replica was a known DNS client only once its address had gone to the server
/// and come back in the endpoints, so short names asked right at start went upstream
/// (NXDOMAIN). It is known from its attachment on.
#[test]
fn a_new_replica_resolves_short_names_from_its_first_query() {
    if !require_containerd() {
        return;
    }
    let node = start(2);
    node.wait_for("2 web addresses", Duration::from_secs(10), || {
        web_ips(&node).len() == 2
    });
    // One query, at once, as an entrypoint script waiting for its backend would ask.
    let probe = format!(
        r#"{}  probe:
    image: {WORKLOAD}
    command: ["sh", "-c", "nslookup tasks.web; exec sleep 1000"]
    stop_grace_period: 1s
"#,
        app(&node, 2)
    );
    let file = node.write("compose.yaml", &probe);
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--wait"]);
    let replica = node.replica_of("probe");
    let mut logs = String::new();
    node.wait_for(
        "the probe's nslookup output",
        Duration::from_secs(10),
        || {
            logs = node.cli_ok(&["logs", &replica]);
            logs.contains("Name:") || logs.contains("can't find")
        },
    );
    assert_eq!(addresses_of(&logs, "tasks.web"), web_ips(&node), "{logs}");
}

#[test]
fn published_port_and_http_ingress_reach_every_replica() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    node.import_workload();
    let port = published_port(&node);
    let http_port = port + 100;
    node.deploy_wait(
        "edge",
        &format!(
            r#"
services:
  web:
    image: {WORKLOAD}
    ports: ["{port}:80"]
    deploy: {{ replicas: 3 }}
  site:
    image: {WORKLOAD}
    ports: ["{http_port}:80"]
    deploy: {{ replicas: 2 }}
    x-hivemind:
      ingress: {{ host: shop.test, path: / }}
"#
        ),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut seen = BTreeSet::new();
    node.wait_for(
        "all replicas behind the published port",
        Duration::from_secs(10),
        || {
            for _ in 0..30 {
                if let Ok((200, body)) = http_get(&addr, "localhost", "/") {
                    seen.insert(body.trim().to_string());
                }
            }
            seen.len() == 3
        },
    );

    let http = format!("127.0.0.1:{http_port}");
    let (status, body) = http_get(&http, "shop.test", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("site-"), "{body}");
    let (status, _) = http_get(&http, "elsewhere.test", "/").unwrap();
    assert_eq!(status, 404, "an unknown host has no route");
    // The backend sees who called: X-Forwarded-For carries the client's address.
    let (_, headers) = http_get(&http, "shop.test", "/headers").unwrap();
    assert!(
        headers
            .to_lowercase()
            .contains("x-forwarded-for: 127.0.0.1"),
        "{headers}"
    );
}

#[test]
fn scale_down_drops_no_request() {
    if !require_containerd() {
        return;
    }
    let node = start(3);
    let client = node.replica_of("client");
    // A bounded loop through the VIP, by name, while web goes from 3 to 1.
    let looping = node
        .exec_command(
            &client,
            &[
                "loop",
                "--url",
                "http://web/",
                "--duration",
                "6s",
                "--interval",
                "20ms",
            ],
        )
        .output();
    let scaler = {
        std::thread::spawn({
            let bin = support::bin().to_string();
            let server = format!("http://{}", node.addr);
            let data = node.data_dir();
            move || {
                std::thread::sleep(Duration::from_millis(1500));
                std::process::Command::new(bin)
                    .args(["scale", "web=1"])
                    .env("HIVEMIND_SERVER", server)
                    .env("HIVEMIND_DATA_DIR", data)
                    .status()
                    .unwrap()
            }
        })
    };
    let out = looping.unwrap();
    assert!(scaler.join().unwrap().success());
    let s = summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(s["failed"], 0, "requests failed during scale-down: {s}");
    assert!(s["requests"].as_u64().unwrap() > 50, "{s}");
    node.wait_for("one web replica", Duration::from_secs(15), || {
        web_ips(&node).len() == 1
    });
}

#[test]
fn agent_restart_keeps_addresses_and_rm_leaves_no_trace() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    node.import_workload();
    node.wait_for("node network up", Duration::from_secs(10), || {
        node.network_objects()
            .iter()
            .any(|o| o.starts_with("link "))
    });
    let before = node.network_objects();
    let file = node.write("compose.yaml", &app(&node, 3));
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--wait"]);
    node.wait_for("3 web addresses", Duration::from_secs(10), || {
        web_ips(&node).len() == 3
    });
    let ips = web_ips(&node);

    node.kill9();
    node.spawn();
    node.wait_for("replicas reported again", Duration::from_secs(15), || {
        web_ips(&node) == ips
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        web_ips(&node),
        ips,
        "addresses changed across an agent restart"
    );
    let netns: Vec<String> = node
        .network_objects()
        .into_iter()
        .filter(|o| o.starts_with("netns "))
        .collect();
    assert_eq!(
        netns.len(),
        4,
        "one netns per replica, no duplicates: {netns:?}"
    );

    node.cli_ok(&["rm", "shop"]);
    node.wait_for(
        "network back to its state before the app",
        Duration::from_secs(20),
        || node.containers().is_empty() && node.network_objects() == before,
    );
}

#[test]
fn bad_network_input_is_refused() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    // Overlapping ranges are refused at start.
    let out = std::process::Command::new(support::bin())
        .args([
            "up",
            "--api-addr",
            "127.0.0.1:1",
            "--cluster-cidr",
            "10.42.0.0/16",
            "--service-cidr",
            "10.42.128.0/20",
        ])
        .env("HIVEMIND_DATA_DIR", node.dir.path().join("other"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("overlap"), "{stderr}");

    // A published port another app holds is refused at deploy time, naming the key.
    let port = published_port(&node);
    let a = node.write(
        "a.yaml",
        &format!("services:\n  web:\n    image: {WORKLOAD}\n    ports: [\"{port}:80\"]\n"),
    );
    node.cli_ok(&["deploy", "-f", a.to_str().unwrap(), "--app", "first"]);
    let b = node.write(
        "b.yaml",
        &format!("services:\n  api:\n    image: {WORKLOAD}\n    ports: [\"{port}:8080\"]\n"),
    );
    let out = node.cli(&["deploy", "-f", b.to_str().unwrap(), "--app", "second"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("services.api.ports[0]") && stderr.contains("first/web"),
        "{stderr}"
    );

    // An invalid network name is refused by the Compose reader (`Bad_Net` is valid Compose,
    // mapped to `bad-net`; a space is not).
    let c = node.write(
        "c.yaml",
        &format!("services:\n  web:\n    image: {WORKLOAD}\nnetworks:\n  \"Bad Net\": {{}}\n"),
    );
    let out = node.cli(&["deploy", "-f", c.to_str().unwrap(), "--app", "third"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("networks"));
}

#[test]
fn down_takes_the_node_apart() {
    if !require_containerd() {
        return;
    }
    let mut node = start(2);
    node.wait_for("2 web addresses", Duration::from_secs(10), || {
        web_ips(&node).len() == 2
    });
    // While hivemind runs, `down` refuses: the agent would rebuild everything at once.
    let out = node.cli(&["down"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still running"));

    node.kill9();
    assert_eq!(
        node.running_tasks().len(),
        3,
        "stopping hivemind keeps containers"
    );
    let out = node.cli_ok(&["down"]);
    assert!(out.contains("removed 3 replica container(s)"), "{out}");
    assert!(node.containers().is_empty());
    assert!(node.active_snapshots().is_empty());
    assert_eq!(
        node.network_objects(),
        Vec::<String>::new(),
        "network left behind"
    );

    // The store survives: the next `up` brings the app back on a fresh network.
    node.spawn();
    node.wait_for("the app back", Duration::from_secs(20), || {
        web_ips(&node).len() == 2 && node.running_tasks().len() == 3
    });
}
