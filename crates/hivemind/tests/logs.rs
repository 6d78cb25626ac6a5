//! System tests of `hivemind logs` and `hivemind exec` through the server and the agent
//! endpoint, against real containerd (see `support`).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{file_names, require_containerd, TestNode, IMAGE};

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
    node.deploy_wait("app", &counter_compose());
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

/// A service that writes 3000 lines at once (about 150 KiB), then one more line two seconds
/// later, with 20 KiB log files of which 3 are kept.
fn rotating_compose() -> String {
    format!(
        r#"
services:
  chatty:
    image: {IMAGE}
    command: ["sh", "-c", "h=$$(hostname); i=0; while [ $$i -lt 3000 ]; do echo line $$i from $$h padding-padding; i=$$((i+1)); done; sleep 2; echo late; exec sleep 1000"]
    stop_signal: SIGKILL
    logging:
      driver: json-file
      options:
        max-size: 20k
        max-file: "3"
"#
    )
}

/// The numbered log files of `replica` on the node.
fn log_files(node: &TestNode, replica: &str) -> Vec<String> {
    file_names(&node.data_dir().join("logs").join(replica), |n| {
        n.ends_with(".log")
    })
}

#[test]
fn rotated_logs_tail_since_and_timestamps() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    node.deploy_wait("app", &rotating_compose());
    let replica = node.replica_of("chatty");
    node.wait_for("the late line", Duration::from_secs(30), || {
        node.cli_ok(&["logs", &replica, "--tail", "1"]).trim() == "late"
    });

    // Rotation: at most 3 files of at most 20 KiB, and the first ones are gone.
    let files = log_files(&node, &replica);
    assert!(!files.is_empty() && files.len() <= 3, "{files:?}");
    assert_ne!(files[0], "0000000001.log", "nothing rotated: {files:?}");
    for f in &files {
        let len = std::fs::metadata(node.data_dir().join("logs").join(&replica).join(f))
            .unwrap()
            .len();
        assert!(len <= 20 * 1024, "{f}: {len} bytes");
    }

    // A full read starts at the oldest line kept and has no gap up to the last one.
    let all = node.cli_ok(&["logs", &replica]);
    let numbers: Vec<u64> = parse(&all).into_iter().map(|(_, n)| n).collect();
    assert!(
        numbers[0] > 0,
        "oldest lines rotated away: {:?}",
        &numbers[..3]
    );
    assert_eq!(numbers.last(), Some(&2999));
    assert_consecutive(&numbers, "full read");
    assert!(all.ends_with("late\n"), "{}", &all[all.len() - 100..]);

    // --tail reads back across files.
    let out = node.cli_ok(&["logs", &replica, "--tail", "4"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("line 2997 from "), "{out}");
    assert_eq!(lines[3], "late");

    // -t puts each line's RFC 3339 timestamp first; the late line is ~2 s after the burst.
    let out = node.cli_ok(&["logs", &replica, "--tail", "2", "-t"]);
    let stamped: Vec<(std::time::SystemTime, &str)> = out
        .lines()
        .map(|l| {
            let (ts, text) = l.split_once(' ').unwrap();
            assert_eq!(ts.len(), 30, "{l}");
            (humantime::parse_rfc3339(ts).unwrap(), text)
        })
        .collect();
    assert_eq!(stamped.len(), 2, "{out}");
    assert!(stamped[0].1.starts_with("line 2999 "), "{out}");
    assert_eq!(stamped[1].1, "late");
    let gap = stamped[1].0.duration_since(stamped[0].0).unwrap();
    assert!(gap >= Duration::from_millis(1500), "{gap:?}");

    // --since an RFC 3339 time: only what was written from then on; with --tail, the last N
    // of those.
    let late = humantime::format_rfc3339_nanos(stamped[1].0).to_string();
    assert_eq!(node.cli_ok(&["logs", &replica, "--since", &late]), "late\n");
    assert_eq!(
        node.cli_ok(&["logs", &replica, "--since", &late, "--tail", "3"]),
        "late\n"
    );
    // --since a duration: an hour covers everything kept, a second after the last line nothing.
    assert_eq!(node.cli_ok(&["logs", &replica, "--since", "1h"]), all);
    let quiet = stamped[1].0 + Duration::from_millis(1500);
    if let Ok(wait) = quiet.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait);
    }
    assert_eq!(node.cli_ok(&["logs", &replica, "--since", "1s"]), "");
    // The service, merged by time, with its prefix.
    let out = node.cli_ok(&["logs", "chatty", "--tail", "1", "-t"]);
    assert!(
        out.starts_with(&format!("{replica} | {late} late")),
        "{out}"
    );

    // Bad values are refused with the option and the fix.
    let out = node.cli(&["logs", &replica, "--since", "yesterday"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--since") && stderr.contains("10m"),
        "{stderr}"
    );
    let bad = node.write(
        "bad.yaml",
        &rotating_compose().replace("driver: json-file", "driver: syslog"),
    );
    // Another log driver is a warning (logs stay on the node), which --strict refuses.
    let out = node.cli(&[
        "deploy",
        "-f",
        bad.to_str().unwrap(),
        "--app",
        "bad",
        "--strict",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("services.chatty.logging.driver") && stderr.contains("--strict"),
        "{stderr}"
    );
}

#[test]
fn follow_crosses_rotated_files_without_gap_or_repeat() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    // About 70 bytes a record, 100 records a second, 4 KiB files: a new file every ~0.6 s.
    node.deploy_wait(
        "app",
        &format!(
            r#"
services:
  steady:
    image: {IMAGE}
    command: ["sh", "-c", "h=$$(hostname); i=0; while true; do echo line $$i from $$h padding-padding; i=$$((i+1)); sleep 0.01; done"]
    stop_signal: SIGKILL
    logging:
      options: {{max-size: 4k, max-file: "2"}}
"#
        ),
    );
    let replica = node.replica_of("steady");
    let follower = Follower::start(&node, &[&replica, "-f", "--tail", "1"]);
    let first_files = log_files(&node, &replica);
    follower.wait_for(
        "lines across several files",
        Duration::from_secs(30),
        |lines| lines.len() >= 300,
    );
    let later_files = log_files(&node, &replica);
    assert!(later_files.len() <= 2, "{later_files:?}");
    assert!(
        later_files.iter().all(|f| !first_files.contains(f)),
        "the files rotated away while following: {first_files:?} -> {later_files:?}"
    );
    let numbers: Vec<u64> = follower.lines().into_iter().map(|(_, n)| n).collect();
    assert_consecutive(&numbers, "followed across rotation");
}
