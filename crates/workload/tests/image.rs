//! System test of the workload image with the real containerd (root required): builds the image
//! from this package's `hm-workload` with `hivemind_test_support::image::build_workload_image`,
//! imports it into a scratch namespace with `ctr`, and checks that name resolution works inside
//! (the image's `/etc/hosts`, and a bind-mounted one as runtimes provide), that busybox `sh` is
//! still there, that `serve` answers on the host network, that `loop` works from inside a
//! container, and that `serve` as PID 1 exits 0 on SIGTERM. The namespace is removed afterwards,
//! pass or fail. Without containerd the test fails, unless `HIVEMIND_SKIP_SYSTEM_TESTS=1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hivemind_test_support::image::build_workload_image;

const SOCKET: &str = "/run/containerd/containerd.sock";
const IMAGE: &str = "hivemind.test/workload:systest";

/// Whether to run; panics with what to do when the machine is not set up.
fn system_tests_enabled() -> bool {
    let skip = std::env::var("HIVEMIND_SKIP_SYSTEM_TESTS").as_deref() == Ok("1");
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let containerd = Path::new(SOCKET).exists();
    if root && containerd {
        return true;
    }
    if skip {
        eprintln!("skipping: needs root and containerd, and HIVEMIND_SKIP_SYSTEM_TESTS=1");
        return false;
    }
    panic!(
        "this system test needs root and a running containerd ({SOCKET} {}; root: {root}): \
         start it with `containerd &` as root, or set HIVEMIND_SKIP_SYSTEM_TESTS=1 to skip",
        if containerd { "present" } else { "absent" }
    );
}

/// A scratch containerd namespace, emptied and removed on drop.
struct Namespace(String);

impl Namespace {
    fn new() -> Namespace {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Namespace(format!("hm-wl-test-{}-{nanos:08x}", std::process::id()))
    }

    /// `ctr -n NS ARGS…` under a 60 s `timeout`.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["60", "ctr", "-n", &self.0])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// Runs `hm-workload ARGS` (or any command) in a throwaway container; `ctr run` options go
    /// in `opts`.
    fn run(&self, id: &str, opts: &[&str], cmd: &[&str]) -> Output {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[IMAGE, id]);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    fn ids(&self, what: &str) -> Vec<String> {
        let out = self.ctr(&[what, "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for task in self.ids("tasks") {
            self.ctr(&["tasks", "kill", "-s", "SIGKILL", &task]);
            self.ctr(&["tasks", "rm", "-f", &task]);
        }
        for c in self.ids("containers") {
            self.ctr(&["containers", "rm", &c]);
        }
        for image in self.ids("images") {
            self.ctr(&["images", "rm", "--sync", &image]);
        }
        for _ in 0..20 {
            let removed = Command::new("ctr")
                .args(["namespaces", "rm", &self.0])
                .output()
                .is_ok_and(|o| o.status.success());
            if removed {
                return;
            }
            for blob in self.ids("content") {
                self.ctr(&["content", "rm", &blob]);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("warning: could not remove containerd namespace {}", self.0);
    }
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port; `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp.split_once("\r\n\r\n")?.1.to_string())
}

#[test]
fn workload_image_runs_in_containerd() {
    if !system_tests_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("workload.tar");
    let bin = Path::new(env!("CARGO_BIN_EXE_hm-workload"));
    build_workload_image(&tar, IMAGE, bin).expect("build the workload image");
    let size = std::fs::metadata(&tar).unwrap().len();
    eprintln!("workload image: {size} bytes");
    assert!(size < 40 << 20, "image unexpectedly large: {size} bytes");

    let ns = Namespace::new();
    stdout_of(&ns.ctr(&["images", "import", tar.to_str().unwrap()]));

    // getaddrinfo through nsswitch: the image's /etc/hosts, then a bind-mounted one.
    let out = stdout_of(&ns.run("resolve", &[], &["hm-workload", "resolve", "localhost"]));
    assert!(out.lines().any(|l| l == "127.0.0.1"), "{out:?}");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n10.1.2.3 web.default.hivemind\n",
    )
    .unwrap();
    let mount = format!(
        "type=bind,src={},dst=/etc/hosts,options=rbind:ro",
        hosts.display()
    );
    let out = stdout_of(&ns.run(
        "resolve-mounted",
        &["--mount", &mount],
        &[
            "hm-workload",
            "resolve",
            "web.default.hivemind",
            "--type",
            "A",
        ],
    ));
    assert_eq!(out, "10.1.2.3\n");
    let missing = ns.run(
        "resolve-missing",
        &[],
        &["hm-workload", "resolve", "nope.invalid"],
    );
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");

    // busybox is still there for `sh -c` probes.
    let out = stdout_of(&ns.run("sh", &[], &["sh", "-c", "echo hi from $(hostname)"]));
    assert!(out.starts_with("hi from"), "{out:?}");

    // serve on the host network as PID 1, reached from the host and from another container.
    let port = free_port().to_string();
    let mut server = Command::new("timeout")
        .args([
            "120",
            "ctr",
            "-n",
            &ns.0,
            "run",
            "--rm",
            "--net-host",
            IMAGE,
            "srv",
        ])
        .args(["hm-workload", "serve", "--port", &port, "--name", "wl-sys"])
        .stdout(Stdio::null())
        .spawn()
        .expect("ctr run serve");
    let port: u16 = port.parse().unwrap();
    let start = Instant::now();
    let body = loop {
        if let Some(body) = http_get(port, "/") {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body, "wl-sys\n");
    assert_eq!(http_get(port, "/healthz").as_deref(), Some("ok\n"));
    let url = format!("http://localhost:{port}/");
    let out = stdout_of(&ns.run(
        "client",
        &["--net-host"],
        &[
            "hm-workload",
            "loop",
            "--url",
            &url,
            "--count",
            "5",
            "--interval",
            "10ms",
        ],
    ));
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["ok"], 5, "{summary}");
    assert_eq!(summary["by_body"]["wl-sys"], 5, "{summary}");

    stdout_of(&ns.ctr(&["tasks", "kill", "-s", "SIGTERM", "srv"]));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve ignored SIGTERM as PID 1"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "serve exited with {status} after SIGTERM");
}
