//! Runs one check: a command in the container through containerd exec, or an HTTP/TCP probe
//! from the node to the replica's bridge address.
//!
//! Cheap on purpose: no process on the node beyond containerd's own exec (the HTTP probe is a
//! hand-written GET on one connection, not a client with a pool), output bounded to
//! `Health::MAX_OUTPUT` as it arrives. Every probe is bounded by the check's `timeout`: an exec
//! cut off there is killed by the runtime (dropping its session), as Docker kills it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hivemind_runtime::{ContainerRuntime, ExecOutput};
use hivemind_types::healthcheck::{Probe, ResolvedCheck};
use hivemind_types::{error_chain, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Whether a check passed, and what it printed (or why it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub passed: bool,
    pub output: String,
}

impl ProbeResult {
    fn fail(output: impl Into<String>) -> ProbeResult {
        ProbeResult {
            passed: false,
            output: bound(output.into()),
        }
    }
}

/// Runs `check` once against replica `id` (address `ip`, for the node-side probes).
pub async fn run_probe<R: ContainerRuntime>(
    runtime: &R,
    id: &str,
    ip: Option<IpAddr>,
    check: &ResolvedCheck,
) -> ProbeResult {
    let timeout = check.timeout;
    let probe = async {
        match &check.probe {
            Probe::Exec(args) => exec(runtime, id, args).await,
            Probe::Tcp { port } => match ip {
                None => ProbeResult::fail("the replica has no address yet"),
                Some(ip) => match TcpStream::connect(SocketAddr::new(ip, *port)).await {
                    Ok(_) => ProbeResult {
                        passed: true,
                        output: format!("connected to {ip}:{port}"),
                    },
                    Err(e) => ProbeResult::fail(format!("cannot connect to {ip}:{port}: {e}")),
                },
            },
            Probe::Http {
                path,
                port,
                status_min,
                status_max,
            } => match ip {
                None => ProbeResult::fail("the replica has no address yet"),
                Some(ip) => http(SocketAddr::new(ip, *port), path, *status_min, *status_max).await,
            },
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => ProbeResult::fail(format!("health check timed out after {}", human(timeout))),
    }
}

/// Runs `args` in the container; exit 0 passes. Output beyond the bound is read and dropped, so
/// that a chatty check never blocks on a full channel.
async fn exec<R: ContainerRuntime>(runtime: &R, id: &str, args: &[String]) -> ProbeResult {
    let (tx, mut rx) = mpsc::channel(16);
    let run = runtime.exec(id, args, tx);
    let collect = async {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            let bytes = match chunk {
                ExecOutput::Stdout(b) | ExecOutput::Stderr(b) => b,
            };
            let room = Health::MAX_OUTPUT.saturating_sub(out.len());
            out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        out
    };
    let (status, out) = tokio::join!(run, collect);
    let output = bound(String::from_utf8_lossy(&out).into_owned());
    match status {
        Ok(0) => ProbeResult {
            passed: true,
            output,
        },
        Ok(code) => ProbeResult::fail(if output.is_empty() {
            format!("exit code {code}")
        } else {
            output
        }),
        Err(e) => ProbeResult::fail(error_chain(&e)),
    }
}

/// `GET path` over one connection; passes when the status is within `min..=max`.
async fn http(addr: SocketAddr, path: &str, min: u16, max: u16) -> ProbeResult {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return ProbeResult::fail(format!("cannot connect to {addr}: {e}")),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hivemind-health\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return ProbeResult::fail(format!("cannot send the request to {addr}: {e}"));
    }
    // The status line and some of the body are enough: the answer's start is the output.
    let mut buf = vec![0u8; Health::MAX_OUTPUT.min(1024)];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if len == 0 => {
                return ProbeResult::fail(format!("cannot read the answer from {addr}: {e}"))
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    let Some(status) = status_code(&text) else {
        return ProbeResult::fail(format!(
            "{addr} did not answer with HTTP: {:?}",
            text.lines().next().unwrap_or("")
        ));
    };
    let output = bound(text);
    if (min..=max).contains(&status) {
        ProbeResult {
            passed: true,
            output,
        }
    } else {
        ProbeResult::fail(format!(
            "GET {path}: status {status}, not within {min}-{max}\n{output}"
        ))
    }
}

/// The status code of an HTTP/1.x answer's first line.
fn status_code(answer: &str) -> Option<u16> {
    let line = answer.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// Cuts `s` to `Health::MAX_OUTPUT` bytes on a character boundary.
pub fn bound(mut s: String) -> String {
    if s.len() > Health::MAX_OUTPUT {
        let mut end = Health::MAX_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_runtime::fake::FakeRuntime;
    use tokio::net::TcpListener;

    fn check(probe: Probe, timeout_ms: u64) -> ResolvedCheck {
        ResolvedCheck {
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(timeout_ms),
            retries: 3,
            start_period: Duration::ZERO,
            start_interval: Duration::from_secs(1),
        }
    }

    /// Serves one connection with `answer` (or holds it open without answering).
    async fn server(answer: Option<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).await;
            match answer {
                Some(a) => conn.write_all(a.as_bytes()).await.unwrap(),
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
        });
        addr
    }

    fn http_probe(port: u16) -> Probe {
        Probe::Http {
            path: "/healthz".into(),
            port,
            status_min: 200,
            status_max: 399,
        }
    }

    #[tokio::test]
    async fn http_probe_passes_within_the_status_range_and_fails_outside() {
        let rt = FakeRuntime::new();
        let ok = server(Some("HTTP/1.1 204 No Content\r\n\r\n")).await;
        let r = run_probe(
            &rt,
            "web-1",
            Some(ok.ip()),
            &check(http_probe(ok.port()), 1000),
        )
        .await;
        assert!(r.passed, "{r:?}");
        let bad = server(Some("HTTP/1.1 503 Service Unavailable\r\n\r\ndown")).await;
        let r = run_probe(
            &rt,
            "web-1",
            Some(bad.ip()),
            &check(http_probe(bad.port()), 1000),
        )
        .await;
        assert!(!r.passed);
        assert!(r.output.contains("status 503"), "{}", r.output);
        let junk = server(Some("SSH-2.0-OpenSSH\r\n")).await;
        let r = run_probe(
            &rt,
            "web-1",
            Some(junk.ip()),
            &check(http_probe(junk.port()), 1000),
        )
        .await;
        assert!(
            r.output.contains("did not answer with HTTP"),
            "{}",
            r.output
        );
    }

    #[tokio::test]
    async fn probes_time_out_and_need_an_address() {
        let rt = FakeRuntime::new();
        let silent = server(None).await;
        let started = std::time::Instant::now();
        let r = run_probe(
            &rt,
            "web-1",
            Some(silent.ip()),
            &check(http_probe(silent.port()), 200),
        )
        .await;
        assert!(!r.passed);
        assert!(r.output.contains("timed out after 200ms"), "{}", r.output);
        assert!(started.elapsed() < Duration::from_secs(2));
        let r = run_probe(&rt, "web-1", None, &check(Probe::Tcp { port: 80 }, 200)).await;
        assert!(r.output.contains("no address"), "{}", r.output);
    }

    #[tokio::test]
    async fn tcp_probe_passes_when_a_connection_opens_and_fails_when_refused() {
        let rt = FakeRuntime::new();
        let open = server(Some("")).await;
        let r = run_probe(
            &rt,
            "web-1",
            Some(open.ip()),
            &check(Probe::Tcp { port: open.port() }, 1000),
        )
        .await;
        assert!(r.passed, "{r:?}");
        // A port just closed again refuses.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let r = run_probe(
            &rt,
            "web-1",
            Some(closed.ip()),
            &check(
                Probe::Tcp {
                    port: closed.port(),
                },
                1000,
            ),
        )
        .await;
        assert!(!r.passed);
        assert!(r.output.contains("cannot connect"), "{}", r.output);
    }

    #[tokio::test]
    async fn an_exec_that_cannot_run_fails_with_the_runtimes_reason() {
        let rt = FakeRuntime::new();
        let r = run_probe(
            &rt,
            "web-1",
            None,
            &check(Probe::Exec(vec!["true".into()]), 1000),
        )
        .await;
        assert!(!r.passed);
        assert!(r.output.contains("runs no processes"), "{}", r.output);
    }

    #[test]
    fn output_is_bounded_on_a_character_boundary() {
        let long = "é".repeat(Health::MAX_OUTPUT);
        let cut = bound(long);
        assert!(cut.len() <= Health::MAX_OUTPUT && cut.len() >= Health::MAX_OUTPUT - 1);
        assert_eq!(status_code("HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(status_code("HTTP/2 200"), None);
    }
}
