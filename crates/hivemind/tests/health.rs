//! System tests of health checks through the real binary, server, agent and containerd (see
//! `support`): a `CMD-SHELL` check that passes and then fails takes its replica out of DNS
//! within an interval, is recorded as an event with the check's output, and the replica is
//! restarted, healthy again; `ps` and `deploy --wait` follow the health; and a request loop
//! through the ingress sees no failure while one replica of two goes unhealthy (issue 10's
//! acceptance 2).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{http_get, require_containerd, TestNode, IMAGE, WORKLOAD};

/// The addresses the node's DNS gives for every ready replica of `web` in app `app`.
fn dns_ready(node: &TestNode, app: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", node.gateway()))
        .args(["+short", "+time=1", "+tries=1"])
        .arg(format!("tasks.web.{app}.default.hivemind"))
        .output()
        .expect("dig (dnsutils) is installed by scripts/lib.sh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect()
}

fn ps(node: &TestNode) -> Vec<serde_json::Value> {
    node.cli_json(&["ps", "web"]).as_array().unwrap().clone()
}

fn field<'a>(replica: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    path.iter().fold(replica, |v, k| &v[*k])
}

#[test]
fn a_failing_check_takes_the_replica_out_of_dns_and_restarts_it() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    // Each run creates /tmp/ok, so a restarted replica passes again.
    let compose = format!(
        r#"
services:
  web:
    image: {IMAGE}
    command: ["sh", "-c", "touch /tmp/ok; exec sleep 100000"]
    stop_grace_period: 1s
    deploy: {{replicas: 2}}
    healthcheck:
      test: test -f /tmp/ok || (echo no /tmp/ok; exit 1)
      interval: 1s
      timeout: 2s
      retries: 2
"#
    );
    let started = Instant::now();
    let out = node.deploy_wait("shop", &compose);
    let to_healthy = started.elapsed();
    assert!(out.contains("web 2/2"), "{out}");
    // `--wait` returned only once both were healthy.
    let replicas = ps(&node);
    assert_eq!(replicas.len(), 2);
    for r in &replicas {
        assert_eq!(field(r, &["status", "health", "status"]), "healthy", "{r}");
    }
    let table = node.cli_ok(&["ps"]);
    assert_eq!(table.matches("running (healthy)").count(), 2, "{table}");
    node.wait_for("both in DNS", Duration::from_secs(5), || {
        dns_ready(&node, "shop").len() == 2
    });

    let victim = field(&replicas[0], &["replica", "id"])
        .as_str()
        .unwrap()
        .to_string();
    let victim_ip = field(&replicas[0], &["status", "ip"])
        .as_str()
        .unwrap()
        .to_string();
    let removed = Instant::now();
    node.cli_ok(&["exec", &victim, "--", "rm", "/tmp/ok"]);

    // Unhealthy after `retries` (2) failed checks at 1 s; out of DNS within one more interval.
    let mut saw_unhealthy = false;
    let mut out_of_dns = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && (out_of_dns.is_none() || !saw_unhealthy) {
        if out_of_dns.is_none() && !dns_ready(&node, "shop").contains(&victim_ip) {
            out_of_dns = Some(removed.elapsed());
        }
        let table = node.cli_ok(&["ps"]);
        saw_unhealthy |= table
            .lines()
            .any(|l| l.contains(&victim) && l.contains("(unhealthy)"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out_of_dns = out_of_dns.expect("the failing replica left DNS");
    eprintln!(
        "deploy to healthy {to_healthy:?}; failing check to out of DNS {out_of_dns:?} (2 checks at 1s + drain)"
    );
    assert!(saw_unhealthy, "ps never showed the replica unhealthy");
    assert!(
        out_of_dns < Duration::from_millis(2 * 1_000 + 1_000 + 2_000),
        "left DNS only after {out_of_dns:?}"
    );

    // Restarted (not replaced): same id, a restart counted, healthy and in DNS again.
    node.wait_for("the victim healthy again", Duration::from_secs(30), || {
        ps(&node).iter().any(|r| {
            field(r, &["replica", "id"]) == victim.as_str()
                && field(r, &["status", "restarts"]).as_u64() >= Some(1)
                && field(r, &["status", "health", "status"]) == "healthy"
        })
    });
    node.wait_for("both in DNS again", Duration::from_secs(10), || {
        dns_ready(&node, "shop").len() == 2
    });

    // The events carry the transition and the check's output.
    let events = node.cli_json(&["events"]);
    let unhealthy: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "Unhealthy" && e["object"]["name"] == victim.as_str())
        .collect();
    assert_eq!(unhealthy.len(), 1, "{events:#}");
    let lines = unhealthy[0]["last_lines"].to_string();
    assert!(lines.contains("no /tmp/ok"), "{}", unhealthy[0]);
}

#[test]
fn a_check_that_outlives_its_timeout_is_killed() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let compose = format!(
        r#"
services:
  web:
    image: {IMAGE}
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    healthcheck:
      test: [CMD, sleep, "30"]
      interval: 1s
      timeout: 500ms
      retries: 100
"#
    );
    let file = node.write("compose.yaml", &compose);
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "shop"]);
    node.wait_for("a timed-out check", Duration::from_secs(20), || {
        node.cli_ok(&["ps"]).contains("running (starting)")
    });
    std::thread::sleep(Duration::from_secs(4));
    let replica = node.replica_of("web");
    // Four checks started by now; each was killed at 500 ms, so at most the current one runs.
    let execs = node
        .ctr(&["tasks", "ps", &replica])
        .lines()
        .filter(|l| l.contains("ExecID"))
        .count();
    assert!(execs <= 1, "{execs} exec processes left running");
}

/// `POST path` to `addr`; returns the status.
fn http_post(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn requests_through_the_ingress_never_fail_while_a_replica_goes_unhealthy() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    node.import_workload();
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The probe runs from the node: the image needs no tool for it.
    let compose = format!(
        r#"
services:
  web:
    image: {WORKLOAD}
    ports: ["{port}:80"]
    stop_grace_period: 1s
    deploy: {{replicas: 2}}
    x-hivemind:
      healthcheck:
        http: {{path: /healthz, port: 80}}
        interval: 1s
        timeout: 1s
        retries: 2
"#
    );
    node.deploy_wait("shop", &compose);
    let replicas = ps(&node);
    let victim = field(&replicas[0], &["replica", "id"])
        .as_str()
        .unwrap()
        .to_string();
    let victim_ip = field(&replicas[0], &["status", "ip"])
        .as_str()
        .unwrap()
        .to_string();

    // `--wait` follows the statuses; the node's ingress gets the endpoints a moment later. The
    // loop starts once both replicas answer through it (`/` answers the replica's name).
    let mut names = BTreeSet::new();
    node.wait_for(
        "both replicas behind the ingress",
        Duration::from_secs(10),
        || {
            if let Ok((200, name)) = http_get(&format!("127.0.0.1:{port}"), "shop", "/") {
                names.insert(name);
            }
            names.len() == 2
        },
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        let addr = format!("127.0.0.1:{port}");
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match http_get(&addr, "shop", "/") {
                    Ok((200, _)) => ok += 1,
                    // When, from the loop's start (the check is failed after 1 s).
                    other => failed.push(format!("at {:?}: {other:?}", t0.elapsed())),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(http_post(&format!("{victim_ip}:80"), "/fail-health"), 200);
    node.wait_for(
        "the victim restarted and healthy",
        Duration::from_secs(30),
        || {
            ps(&node).iter().any(|r| {
                field(r, &["replica", "id"]) == victim.as_str()
                    && field(r, &["status", "restarts"]).as_u64() >= Some(1)
                    && field(r, &["status", "health", "status"]) == "healthy"
            })
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = looper.join().unwrap();
    if !failed.is_empty() {
        eprintln!("{}\n{}", node.cli_ok(&["events"]), node.log_tail());
    }
    eprintln!("{ok} requests through the ingress, {} failed", failed.len());
    assert!(ok > 50, "only {ok} requests went through");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}

#[test]
fn the_images_healthcheck_runs_unless_the_service_disables_it() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let image = "hivemind.test/checked:1";
    let tar = node.dir.path().join("checked.tar");
    hivemind_test_support::image::build_busybox_image_with_healthcheck(
        &tar,
        image,
        serde_json::json!({
            "Test": ["CMD-SHELL", "test -f /tmp/ok"],
            "Interval": 1_000_000_000u64,
            "Retries": 2,
        }),
    )
    .unwrap();
    node.cli_ok(&["image", "import", tar.to_str().unwrap()]);
    let compose = format!(
        r#"
services:
  web:
    image: {image}
    command: ["sh", "-c", "touch /tmp/ok; exec sleep 100000"]
    stop_grace_period: 1s
  off:
    image: {image}
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    healthcheck: {{disable: true}}
"#
    );
    // `--wait` waits for web's image check to pass; `off` has none.
    node.deploy_wait("shop", &compose);
    let health =
        |service: &str| node.cli_json(&["ps", service])[0]["status"]["health"]["status"].clone();
    assert_eq!(health("web"), "healthy");
    assert_eq!(health("off"), serde_json::Value::Null);
    let table = node.cli_ok(&["ps"]);
    assert!(table.contains("running (healthy)"), "{table}");
}
