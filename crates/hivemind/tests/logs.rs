//! System tests of `hivemind logs` and `hivemind exec` through the server and the agent
//! endpoint, against real containerd (see `support`).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{require_containerd, TestNode, IMAGE};

fn counter_compose() -> String {
    format!(
        r#"
services:
  web:
    image: {IMAGE}
    command: ["sh", "-c", "i=0; while true; do echo line $$i from $$(hostname); i=$$((i+1)); sleep 0.2; done"]
    stop_grace_period: 1s
    deploy:
      replicas: 2
"#
    )
}

/// (host, sequence number) of each `line N from HOST` in `out`.
fn parse(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let text = l.rsplit(" | ").next().unwrap_or(l);
            let mut words = text.split_whitespace();
            (words.next()? == "line").then_some(())?;
            let n = words.next()?.parse().ok()?;
            (words.next()? == "from").then_some(())?;
            Some((words.next()?.to_string(), n))
        })
        .collect()
}

/// A `hivemind logs -f` child whose stdout is collected by a thread.
struct Follower {
    child: Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Follower {
    fn start(node: &TestNode, args: &[&str]) -> Follower {
        let mut child = Command::new(support::bin())
            .arg("logs")
            .args(args)
            .env("HIVEMIND_SERVER", format!("http://{}", node.addr))
            .env("HIVEMIND_DATA_DIR", node.data_dir())
            .env_remove("HIVEMIND_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Follower { child, out }
    }

    fn lines(&self) -> Vec<(String, u64)> {
        parse(&self.out.lock().unwrap())
    }

    fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&[(String, u64)]) -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond(&self.lines()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; got:\n{}",
            self.out.lock().unwrap()
        );
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every host's numbers, in the order they were printed.
fn by_host(lines: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut hosts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (host, n) in lines {
        hosts.entry(host.clone()).or_default().push(*n);
    }
    hosts
}

fn assert_consecutive(numbers: &[u64], what: &str) {
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{what}: gap or repeat in {numbers:?}");
    }
}

#[test]
fn logs_tail_follow_survive_a_restart_and_exec_returns_exit_codes() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    let file = node.write("compose.yaml", &counter_compose());
    node.cli_ok(&[
        "deploy",
        "-f",
        file.to_str().unwrap(),
        "--app",
        "app",
        "--wait",
    ]);
    std::thread::sleep(Duration::from_millis(1500));

    // --tail 5 shows the last 5 lines of each replica, prefixed with the replica.
    let out = node.cli_ok(&["logs", "web", "--tail", "5"]);
    let lines = parse(&out);
    let hosts = by_host(&lines);
    assert_eq!(hosts.len(), 2, "lines from both replicas:\n{out}");
    for (host, numbers) in &hosts {
        assert_eq!(numbers.len(), 5, "{host}:\n{out}");
        assert_consecutive(numbers, host);
    }
    assert!(out.lines().all(|l| l.starts_with("web-")), "{out}");

    // A replica id gives that replica's lines alone, without prefix.
    let replica = node.replica_of("web");
    let out = node.cli_ok(&["logs", &replica, "--tail", "3"]);
    assert_eq!(parse(&out).len(), 3, "{out}");
    assert!(out.starts_with("line "), "{out}");

    // -f sees new lines for ~2 s.
    let follower = Follower::start(&node, &["web", "-f", "--tail", "1"]);
    std::thread::sleep(Duration::from_secs(2));
    let seen = by_host(&follower.lines());
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (host, numbers) in &seen {
        assert!(numbers.len() >= 5, "{host}: {numbers:?}");
        assert_consecutive(numbers, host);
    }

    // kill -9 of `up` while following: the follower reconnects and resumes where it stopped.
    node.kill9();
    std::thread::sleep(Duration::from_secs(1));
    node.spawn();
    let before = follower.lines().len();
    follower.wait_for(
        "lines after the restart",
        Duration::from_secs(20),
        |lines| lines.len() >= before + 10,
    );
    for (host, numbers) in by_host(&follower.lines()) {
        assert_consecutive(&numbers, &host);
    }
    drop(follower);

    // exec: output streamed, exit status returned.
    let out = node.cli(&[
        "exec",
        &replica,
        "--",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = node.cli(&["exec", &replica, "--", "hostname"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        replica.as_str()
    );
    assert_eq!(out.status.code(), Some(0));

    // A missing command: a clear error and a non-zero exit.
    let out = node.cli(&["exec", &replica, "--", "no-such-command"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-command"), "{stderr}");
    assert!(
        stderr.contains("not found") || stderr.contains("no such file"),
        "{stderr}"
    );
    // An unknown replica: 404 from the server.
    let out = node.cli(&["exec", "web-zzzzz", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
}
