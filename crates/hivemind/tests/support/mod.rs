//! `TestNode`: a real `hivemind up` (server + agent) on a temp data dir, a free loopback port and
//! its own containerd namespace, driven through the real CLI. Dropping it kills the process and
//! removes everything it created in containerd, even when the test failed.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

pub const IMAGE: &str = "hivemind.test/busybox:1";
pub const WORKLOAD: &str = "hivemind.test/workload:1";

pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub namespace: String,
    pub addr: String,
    /// The agent endpoint (logs, exec); kept across restarts of `up`.
    pub agent_addr: String,
    /// Slot of this node's networking (bridge `hme{slot}`, 10.{150+slot}.0.0/16, ...), so that
    /// tests running at once on one machine never share a bridge, subnet or nft table.
    pub slot: u32,
    child: Option<Child>,
}

/// Network slots: unique within this test process, spread across processes by pid.
fn next_slot() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (std::process::id() * 7 + n) % 50
}

pub use hivemind_test_support::containerd::require_containerd;

/// `hm-workload`, built by `cargo test --workspace` beside this test binary.
pub fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("hm-workload");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p hivemind-workload` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A plain HTTP/1.1 GET (one request per connection); returns (status, body).
pub fn http_get(addr: &str, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The names of the files in `dir` that `keep` accepts, sorted; none when `dir` is missing.
pub fn file_names(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hivemind")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestNode {
    /// Starts `hivemind up` and imports the busybox test image into its namespace.
    pub fn start() -> TestNode {
        let suffix: String = (0..6)
            .map(|_| (b'a' + rand::thread_rng().gen_range(0..26)) as char)
            .collect();
        let mut node = TestNode {
            dir: tempfile::tempdir().unwrap(),
            namespace: format!("hm-e2e-{suffix}"),
            addr: format!("127.0.0.1:{}", free_port()),
            agent_addr: format!("127.0.0.1:{}", free_port()),
            slot: next_slot(),
            child: None,
        };
        let tar = node.dir.path().join("busybox.tar");
        hivemind_test_support::image::build_busybox_image(&tar, IMAGE).unwrap();
        node.cli_ok(&["image", "import", tar.to_str().unwrap()]);
        node.spawn();
        node
    }

    /// Imports the project's test workload (`hm-workload` in a busybox image) as `WORKLOAD`.
    pub fn import_workload(&self) {
        let tar = self.dir.path().join("workload.tar");
        hivemind_test_support::image::build_workload_image(&tar, WORKLOAD, &workload_bin())
            .unwrap();
        self.cli_ok(&["image", "import", tar.to_str().unwrap()]);
    }

    /// Runs `hm-workload ARGS` inside a running replica (through containerd's exec) and returns
    /// its stdout.
    pub fn exec(&self, replica: &str, args: &[&str]) -> String {
        let out = self.exec_command(replica, args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn exec_command(&self, replica: &str, args: &[&str]) -> Command {
        static EXEC: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = EXEC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut cmd = Command::new("ctr");
        cmd.args([
            "-n",
            &self.namespace,
            "tasks",
            "exec",
            "--exec-id",
            &format!("t{n}"),
            replica,
            "hm-workload",
        ])
        .args(args);
        cmd
    }

    /// The id of a running replica of `service`.
    pub fn replica_of(&self, service: &str) -> String {
        let prefix = format!("{service}-");
        self.running_tasks()
            .into_iter()
            .map(|(id, _)| id)
            .find(|id| id.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no running replica of {service}"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the `up` process (again, after `kill9`).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .unwrap();
        let child = Command::new(bin())
            .args(["up", "--api-addr", &self.addr])
            .envs(self.env())
            .env("HIVEMIND_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_for("API ready", Duration::from_secs(20), || {
            self.cli(&["nodes", "-o", "json"]).status.success()
        });
    }

    /// SIGKILL of the whole `up` process, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HIVEMIND_SERVER", format!("http://{}", self.addr)),
            ("HIVEMIND_DATA_DIR", self.data_dir().display().to_string()),
            ("HIVEMIND_CONTAINERD_NAMESPACE", self.namespace.clone()),
            ("HIVEMIND_NODE_NAME", "node-1".to_string()),
            // Registry credentials of this node only (`registry login` writes them here).
            (
                "DOCKER_CONFIG",
                self.dir.path().join("docker").display().to_string(),
            ),
            ("HIVEMIND_AGENT_ADDR", self.agent_addr.clone()),
            ("HIVEMIND_BRIDGE", self.bridge()),
            ("HIVEMIND_NETNS_PREFIX", format!("{}-", self.bridge())),
            ("HIVEMIND_NFT_TABLE", format!("hivemind_e2e_{}", self.slot)),
            (
                "HIVEMIND_CLUSTER_CIDR",
                format!("10.{}.0.0/16", 150 + self.slot),
            ),
            (
                "HIVEMIND_SERVICE_CIDR",
                format!("10.{}.0.0/16", 200 + self.slot),
            ),
        ]
    }

    pub fn bridge(&self) -> String {
        format!("hme{}", self.slot)
    }

    /// The node's gateway (bridge and DNS address): the first node gets the first /24.
    pub fn gateway(&self) -> String {
        format!("10.{}.0.1", 150 + self.slot)
    }

    /// This node's network objects as the kernel shows them: links and netns with its prefix,
    /// and its nft table. Used to check that nothing leaks.
    pub fn network_objects(&self) -> Vec<String> {
        let prefix = self.bridge();
        let run = |args: &[&str]| {
            String::from_utf8_lossy(
                &Command::new(args[0])
                    .args(&args[1..])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .into_owned()
        };
        let mut out: Vec<String> = run(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_string())
            })
            .filter(|n| n.starts_with(&prefix))
            .map(|n| format!("link {n}"))
            .collect();
        out.extend(
            run(&["ip", "netns", "list"])
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("netns {n}")),
        );
        let table = format!("hivemind_e2e_{}", self.slot);
        out.extend(
            run(&["nft", "list", "table", "inet", &table])
                .lines()
                .map(|l| format!("nft {}", l.trim())),
        );
        out.sort();
        out
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .envs(self.env())
            .env_remove("HIVEMIND_TOKEN")
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns stdout, failing the test with its stderr if it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "hivemind {args:?} failed:\n{}\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.cli_ok(&all)).unwrap()
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .args(["-n", &self.namespace])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr tasks ls` as (container id, pid, status).
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        self.ctr(&["tasks", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    pub fn running_tasks(&self) -> Vec<(String, u32)> {
        let mut t: Vec<_> = self
            .tasks()
            .into_iter()
            .filter(|(_, _, s)| s == "RUNNING")
            .map(|(id, pid, _)| (id, pid))
            .collect();
        t.sort();
        t
    }

    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .lines()
            .map(String::from)
            .collect()
    }

    /// Snapshot keys other than the image's committed layers (i.e. containers' rootfs).
    pub fn active_snapshots(&self) -> Vec<String> {
        self.ctr(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter(|l| l.contains("Active"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    /// Polls `cond` until it holds or `timeout` passes (then fails with the log).
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\nlog:\n{}",
            self.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Writes `compose` as `compose.yaml` and deploys it as `app` with `--wait`; panics unless
    /// the deploy succeeds. Returns the CLI's output.
    pub fn deploy_wait(&self, app: &str, compose: &str) -> String {
        let file = self.write("compose.yaml", compose);
        self.cli_ok(&[
            "deploy",
            "-f",
            file.to_str().unwrap(),
            "--app",
            app,
            "--wait",
        ])
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
        // Everything in our namespace goes, whatever state the test left it in.
        hivemind_test_support::containerd::cleanup_namespace(&self.namespace);
        // The node network: netns, veths (their peers go with the netns), bridge, nft table.
        let prefix = self.bridge();
        for line in self.network_objects() {
            if let Some(ns) = line.strip_prefix("netns ") {
                let _ = Command::new("ip").args(["netns", "delete", ns]).output();
            }
        }
        for line in self.network_objects() {
            if let Some(link) = line.strip_prefix("link ") {
                let _ = Command::new("ip").args(["link", "delete", link]).output();
            }
        }
        let _ = Command::new("nft")
            .args([
                "delete",
                "table",
                "inet",
                &format!("hivemind_e2e_{}", self.slot),
            ])
            .output();
        debug_assert!(prefix.starts_with("hme"));
        // Cgroups and bundles are containerd's to clean; our per-container run dirs are in `dir`.
    }
}
