//! Runs the real `hm-workload` binary: `serve` on a free loopback port driven by `loop` and raw
//! requests, graceful SIGTERM with a request in flight, `resolve`, the echo servers and
//! `sleep-forever`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hm-workload");

/// A running long-lived subcommand; killed on drop if still alive.
struct Server {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `args` and waits for its `listening on ADDR` line.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn hm-workload");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("listening line");
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        Server { child, addr, lines }
    }

    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        sigterm(&self.child);
        wait_timeout(&mut self.child, Duration::from_secs(10))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One raw HTTP/1.1 request with `Connection: close`: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn run_loop(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).arg("loop").args(args).output().unwrap();
    assert!(out.status.success(), "loop failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

#[test]
fn serve_answers_and_loop_summarizes() {
    let mut srv = Server::start(&[
        "serve",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--name",
        "web-a",
    ]);
    let url = srv.url("/");
    let s = run_loop(&["--url", &url, "--count", "20", "--interval", "1ms"]);
    assert_eq!(s["requests"], 20, "{s}");
    assert_eq!(s["ok"], 20, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["by_body"], serde_json::json!({"web-a": 20}), "{s}");
    assert!(s["p50_ms"].as_f64().unwrap() <= s["p99_ms"].as_f64().unwrap());

    // Failing on demand, and back.
    assert_eq!(request(srv.addr, "POST", "/fail", "").0, 200);
    let s = run_loop(&["--url", &url, "--count", "3", "--interval", "1ms"]);
    assert_eq!(
        (s["ok"].clone(), s["failed"].clone()),
        (0.into(), 3.into()),
        "{s}"
    );
    assert_eq!(s["errors"]["HTTP 500"], 3, "{s}");
    assert!(s["p50_ms"].is_null());
    assert_eq!(request(srv.addr, "POST", "/recover", "").0, 200);
    assert_eq!(request(srv.addr, "GET", "/", ""), (200, "web-a\n".into()));

    // Health, independently of /.
    assert_eq!(
        request(srv.addr, "GET", "/healthz", ""),
        (200, "ok\n".into())
    );
    request(srv.addr, "POST", "/fail-health", "");
    assert_eq!(request(srv.addr, "GET", "/healthz", "").0, 503);
    assert_eq!(request(srv.addr, "GET", "/", "").0, 200);
    request(srv.addr, "POST", "/heal", "");
    assert_eq!(request(srv.addr, "GET", "/healthz", "").0, 200);

    // Header echo and client address.
    let (code, body) = request(srv.addr, "GET", "/headers", "X-Forwarded-For: 10.9.8.7\r\n");
    assert_eq!(code, 200);
    assert!(body.contains("X-Forwarded-For: 10.9.8.7\n"), "{body}");
    let (_, ip) = request(srv.addr, "GET", "/clientip", "");
    assert!(ip.starts_with("127.0.0.1:"), "{ip}");

    // Slow answers against a short client timeout; duration bound.
    let slow = srv.url("/slow?ms=400");
    let s = run_loop(&["--url", &slow, "--count", "2", "--timeout", "100ms"]);
    assert_eq!(s["errors"]["timeout"], 2, "{s}");
    let s = run_loop(&["--url", &url, "--duration", "300ms", "--interval", "50ms"]);
    let n = s["requests"].as_u64().unwrap();
    assert!((3..=8).contains(&n), "{s}");

    // Unreachable port: failures are counted, exit status stays 0.
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let s = run_loop(&["--url", &dead, "--count", "2", "--interval", "1ms"]);
    assert_eq!(s["failed"], 2, "{s}");

    // One log line per request.
    let logged: Vec<String> = srv.lines.try_iter().collect();
    assert!(
        logged.iter().any(|l| l.contains("GET /headers 200")),
        "{logged:?}"
    );
    assert!(srv.terminate().success());
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let mut srv = Server::start(&["serve", "--port", "0", "--bind", "127.0.0.1", "--name", "g"]);
    let addr = srv.addr;
    let in_flight = std::thread::spawn(move || request(addr, "GET", "/slow?ms=700", ""));
    // Wait until the server has the request, then terminate.
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&srv.child);
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "still accepting after SIGTERM"
    );
    assert_eq!(in_flight.join().unwrap(), (200, "g\n".into()));
    let status = wait_timeout(&mut srv.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let lines: Vec<String> = srv.lines.try_iter().collect();
    assert!(lines.iter().any(|l| l.contains("SIGTERM")), "{lines:?}");
}

#[test]
fn resolve_prints_addresses_or_fails() {
    let out = Command::new(BIN)
        .args(["resolve", "localhost", "--type", "A"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "127.0.0.1\n");
    let out = Command::new(BIN)
        .args(["resolve", "10.1.2.3"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "10.1.2.3\n");
    let out = Command::new(BIN)
        .args(["resolve", "no-such-host.invalid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = Command::new(BIN)
        .args(["resolve", "127.0.0.1", "--type", "AAAA"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn echo_servers_echo() {
    let mut tcp = Server::start(&["tcp-echo", "--port", "0", "--bind", "127.0.0.1"]);
    let mut s = TcpStream::connect(tcp.addr).unwrap();
    s.write_all(b"hello tcp").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = String::new();
    s.read_to_string(&mut back).unwrap();
    assert_eq!(back, "hello tcp");
    assert!(tcp.terminate().success());

    let mut udp = Server::start(&["udp-echo", "--port", "0", "--bind", "127.0.0.1"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(b"hello udp", udp.addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"hello udp"[..], udp.addr));
    assert!(udp.terminate().success());
}

#[test]
fn sleep_forever_exits_zero_on_sigterm() {
    let mut child = Command::new(BIN)
        .arg("sleep-forever")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("sleeping"), "{first:?}");
    sigterm(&child);
    assert!(wait_timeout(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["nope"][..],
        &["serve", "--port", "x"],
        &["serve", "--what", "1"],
        &["loop"],
        &["loop", "--url", "https://a/"],
        &["loop", "--url", "http://a/", "--interval", "5y"],
        &["resolve"],
        &["resolve", "a", "--type", "MX"],
        &["tcp-echo"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
