//! `serve`: the HTTP server. `GET /` answers the name, `/healthz` can be failed and healed,
//! `/` can be made to return 500, `/headers` echoes the request headers, `/clientip` the peer
//! address, `/slow?ms=N` answers late. One log line per request on stdout. On SIGTERM or SIGINT
//! it stops accepting, lets in-flight requests finish (idle keep-alive connections are closed),
//! and returns so the process exits 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::{read_request, write_response, Request};
use crate::log_line;

/// The longest `/slow` delay, so a typo cannot hold a shutdown forever.
const MAX_SLOW: Duration = Duration::from_secs(300);
/// How long in-flight requests get after SIGTERM before the process exits anyway.
const DRAIN: Duration = Duration::from_secs(30);

/// Switches flipped over HTTP.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) name: String,
    failing: AtomicBool,
    unhealthy: AtomicBool,
}

impl State {
    pub(crate) fn new(name: String) -> Self {
        State {
            name,
            ..State::default()
        }
    }
}

/// Answers one request: `(status, body)`.
pub(crate) async fn respond(state: &State, req: &Request, peer: SocketAddr) -> (u16, String) {
    let flip = |flag: &AtomicBool, on: bool, what: &str| {
        flag.store(on, Ordering::SeqCst);
        (200, format!("{what}\n"))
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("GET" | "HEAD", "/") if state.failing.load(Ordering::SeqCst) => {
            (500, "failing\n".to_string())
        }
        ("GET" | "HEAD", "/") => (200, format!("{}\n", state.name)),
        ("GET" | "HEAD", "/healthz") if state.unhealthy.load(Ordering::SeqCst) => {
            (503, "unhealthy\n".to_string())
        }
        ("GET" | "HEAD", "/healthz") => (200, "ok\n".to_string()),
        ("GET", "/headers") => {
            let mut body = String::new();
            for (n, v) in &req.headers {
                body.push_str(&format!("{n}: {v}\n"));
            }
            (200, body)
        }
        ("GET", "/clientip") => (200, format!("{peer}\n")),
        ("GET", "/slow") => {
            let ms = req.query_param("ms").unwrap_or("1000");
            let Ok(ms) = ms.parse::<u64>() else {
                return (400, format!("bad ms {ms:?}\n"));
            };
            tokio::time::sleep(Duration::from_millis(ms).min(MAX_SLOW)).await;
            (200, format!("{}\n", state.name))
        }
        ("POST", "/fail") => flip(&state.failing, true, "failing"),
        ("POST", "/recover") => flip(&state.failing, false, "recovered"),
        ("POST", "/fail-health") => flip(&state.unhealthy, true, "unhealthy"),
        ("POST", "/heal") => flip(&state.unhealthy, false, "healed"),
        (
            _,
            "/" | "/healthz" | "/headers" | "/clientip" | "/slow" | "/fail" | "/recover"
            | "/fail-health" | "/heal",
        ) => (405, "method not allowed\n".to_string()),
        _ => (404, "not found\n".to_string()),
    }
}

/// Serves connections on `listener` until SIGTERM/SIGINT, then drains.
/// `stop` resolves (to the signal's name) when shutdown should begin.
pub(crate) async fn run(
    listener: TcpListener,
    state: State,
    stop: impl Future<Output = &'static str>,
) {
    let state = Arc::new(state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            signal = &mut stop => {
                log_line(&format!("{signal}: shutting down"));
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(connection(stream, peer, state.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    log_line(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        log_line("drain timed out; exiting with requests in flight");
    }
}

/// Handles requests on one connection until the client closes, asks to close, or shutdown
/// begins while the connection is idle.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let req = tokio::select! {
            r = read_request(&mut stream) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let req = match req {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let _ = write_response(&mut stream, 400, &format!("{e}\n"), false).await;
                log_line(&format!("{peer} bad request: {e}"));
                return;
            }
        };
        let start = Instant::now();
        let (status, body) = respond(&state, &req, peer).await;
        let keep_alive = req.keep_alive && !*stop.borrow();
        let body = if req.method == "HEAD" { "" } else { &body };
        let written = write_response(&mut stream, status, body, keep_alive).await;
        log_line(&format!(
            "{peer} {} {}{}{} {status} {:.1}ms",
            req.method,
            req.path,
            if req.query.is_empty() { "" } else { "?" },
            req.query,
            start.elapsed().as_secs_f64() * 1000.0
        ));
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

/// The default name: the UTS hostname (the container's own), else `/etc/hostname`.
pub(crate) fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            let s = std::fs::read_to_string(p).ok()?;
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request_head;

    fn call(state: &State, line: &str) -> (u16, String) {
        let req =
            parse_request_head(&format!("{line} HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4")).unwrap();
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(respond(state, &req, peer))
    }

    #[test]
    fn switches_flip_and_flip_back() {
        let s = State::new("web-1".into());
        assert_eq!(call(&s, "GET /"), (200, "web-1\n".into()));
        assert_eq!(call(&s, "POST /fail").0, 200);
        assert_eq!(call(&s, "GET /").0, 500);
        assert_eq!(call(&s, "GET /healthz"), (200, "ok\n".into()));
        assert_eq!(call(&s, "POST /recover").0, 200);
        assert_eq!(call(&s, "GET /").0, 200);
        assert_eq!(call(&s, "POST /fail-health").0, 200);
        assert_eq!(call(&s, "GET /healthz").0, 503);
        assert_eq!(call(&s, "GET /").0, 200);
        assert_eq!(call(&s, "POST /heal").0, 200);
        assert_eq!(call(&s, "GET /healthz").0, 200);
    }

    #[test]
    fn echo_endpoints_and_errors() {
        let s = State::new("n".into());
        let (code, body) = call(&s, "GET /headers");
        assert_eq!(code, 200);
        assert!(body.contains("X-Forwarded-For: 1.2.3.4\n"), "{body}");
        assert_eq!(call(&s, "GET /clientip"), (200, "10.0.0.9:5555\n".into()));
        assert_eq!(call(&s, "GET /slow?ms=1"), (200, "n\n".into()));
        assert_eq!(call(&s, "GET /slow?ms=x").0, 400);
        assert_eq!(call(&s, "GET /nope").0, 404);
        assert_eq!(call(&s, "GET /fail").0, 405);
        assert_eq!(call(&s, "DELETE /").0, 405);
    }
}
