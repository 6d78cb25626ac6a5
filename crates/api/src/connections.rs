//! The server's accept loop: HTTP/1.1 connections served by hyper's connection builder with a
//! header read timeout and a cap on open connections, so that idle or slow clients cannot use
//! up the process's file descriptors or tasks (about 20,000 idle unauthenticated connections
//! used to stop the API and `/healthz`).
//!
//! - **Header read timeout.** hyper starts it whenever a connection waits for a request head:
//!   for the first request (slowloris) and between keep-alive requests (idle keep-alive), so the
//!   one setting bounds both. Requests in flight (long polls, event streams) are not timed.
//! - **Connection cap.** A semaphore of [`ServeConfig::max_connections`] permits. A connection
//!   over the cap takes the permit of the connection idle the longest (no request in flight:
//!   never sent one, or between keep-alive requests), which is closed; when every connection is
//!   busy, the new one is closed at once. So a flood of idle connections can never lock out
//!   `/healthz` or a node's long poll, and busy ones are never cut.
//! - **File descriptors.** The soft `RLIMIT_NOFILE` is raised towards the hard one to fit the cap
//!   plus [`FD_RESERVE`]; when it cannot be, the cap is lowered (and a warning says so) rather
//!   than letting `accept` fail with EMFILE.
//!
//! Upgraded connections (exec sessions) leave hyper and stop counting once they are spliced.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tower::Service;

/// Default cap on open connections. 1,000 nodes hold about three each (the assignment long poll,
/// their lease/report connection, a log or exec stream now and then), users' CLIs, event watchers
/// and log followers a few hundred more: 16,384 leaves more than 4x headroom and, with
/// [`FD_RESERVE`], fits a 20,000 `ulimit -n`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Default header read timeout (also the keep-alive idle timeout, see the module docs). Agents
/// send a lease renewal more often than this, so their pooled connection stays open.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// File descriptors kept for everything but API connections: the store, containerd, the
/// in-process agent's listeners and its outbound connections.
pub const FD_RESERVE: u64 = 3_072;

/// Connection settings of [`crate::serve_with`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most connections open at once; beyond it the longest-idle one is closed, or the new one
    /// when none is idle.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, counted from when it is ready
    /// for one (so also how long it may sit idle between requests).
    pub header_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// The connections open, with the idle ones in the order they became idle.
#[derive(Default)]
struct Registry {
    /// ticket (increasing as connections become idle) → connection.
    idle: BTreeMap<u64, Arc<Conn>>,
    next_ticket: u64,
}

#[derive(Default)]
struct ConnState {
    in_flight: usize,
    /// Its key in `Registry::idle` while idle.
    ticket: Option<u64>,
}

/// One connection's share of the cap.
struct Conn {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    state: Mutex<ConnState>,
    /// Told when the connection's permit went to a newer connection: close now.
    evicted: Notify,
}

/// The cap and the registry of open connections.
struct Limits {
    permits: Arc<Semaphore>,
    registry: Mutex<Registry>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is one
    // assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Limits {
    /// A permit for a new connection: a free one, else the longest-idle connection's.
    fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        let mut registry = lock(&self.registry);
        let (_, victim) = registry.idle.pop_first()?;
        lock(&victim.state).ticket = None;
        let permit = lock(&victim.permit).take();
        // `notify_one` keeps the wake-up if the connection's task is not waiting right now.
        victim.evicted.notify_one();
        permit
    }

    fn open(&self, permit: OwnedSemaphorePermit) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            permit: Mutex::new(Some(permit)),
            state: Mutex::new(ConnState::default()),
            evicted: Notify::new(),
        });
        self.set_idle(&conn);
        conn
    }

    fn set_idle(&self, conn: &Arc<Conn>) {
        let mut registry = lock(&self.registry);
        let mut state = lock(&conn.state);
        if lock(&conn.permit).is_none() {
            return; // evicted: closing
        }
        let ticket = registry.next_ticket;
        registry.next_ticket += 1;
        state.ticket = Some(ticket);
        registry.idle.insert(ticket, conn.clone());
    }

    fn request_started(&self, conn: &Arc<Conn>) {
        let mut registry = lock(&self.registry);
        let mut state = lock(&conn.state);
        if let Some(ticket) = state.ticket.take() {
            registry.idle.remove(&ticket);
        }
        state.in_flight += 1;
    }

    fn request_ended(&self, conn: &Arc<Conn>) {
        let now_idle = {
            let mut state = lock(&conn.state);
            state.in_flight = state.in_flight.saturating_sub(1);
            state.in_flight == 0
        };
        if now_idle {
            self.set_idle(conn);
        }
    }

    fn closed(&self, conn: &Arc<Conn>) {
        let mut registry = lock(&self.registry);
        if let Some(ticket) = lock(&conn.state).ticket.take() {
            registry.idle.remove(&ticket);
        }
        lock(&conn.permit).take();
    }
}

/// Ends a request's share of its connection when the response body is dropped (hyper drops it
/// once written), so a streaming response counts as busy for as long as it streams.
struct RequestGuard {
    limits: Arc<Limits>,
    conn: Arc<Conn>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.limits.request_ended(&self.conn);
    }
}

struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The cap that fits the process's file descriptor limit, raising the soft limit if need be.
fn fit_fd_limit(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let need = wanted as u64 + FD_RESERVE;
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= need {
        return wanted;
    }
    let raised = limit.maximum.map_or(need, |hard| hard.min(need));
    if raised > soft
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(raised),
                maximum: limit.maximum,
            },
        )
        .is_ok()
    {
        tracing::info!(
            from = soft,
            to = raised,
            "raised the open files limit (ulimit -n)"
        );
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if soft >= need {
        return wanted;
    }
    let fits = soft.saturating_sub(FD_RESERVE).max(64) as usize;
    tracing::warn!(
        wanted,
        fits,
        open_files_limit = soft,
        "the connection cap is lowered to fit the open files limit; raise `ulimit -n` (LimitNOFILE= in a systemd unit)"
    );
    fits.min(wanted)
}

/// Serves `router` until `stopping` turns true, then stops accepting, lets connections finish
/// their requests (idle ones close at once) and returns when all have, or after `grace`.
pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    config: ServeConfig,
    mut stopping: watch::Receiver<bool>,
    grace: Duration,
) {
    let max = fit_fd_limit(config.max_connections.max(1));
    let limits = Arc::new(Limits {
        permits: Arc::new(Semaphore::new(max)),
        registry: Mutex::new(Registry::default()),
    });
    // Every connection task holds a sender; `recv` returns `None` once all have ended.
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    let mut refused: u64 = 0;
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: wait a little instead of spinning; the cap keeps this
                // rare. Errors of one connection (reset before accept) need no wait.
                if !matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let Some(permit) = limits.admit() else {
            refused += 1;
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections = max,
                    refused,
                    "connection cap reached and every connection is busy: closing new ones"
                );
                last_warning = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = limits.open(permit);
        tokio::spawn(serve_connection(
            stream,
            router.clone(),
            limits.clone(),
            conn,
            config.header_timeout,
            stopping.clone(),
            alive.clone(),
        ));
    }
    drop(alive);
    if tokio::time::timeout(grace, all_ended.recv()).await.is_err() {
        // Connection tasks still running end with the runtime; nothing here waits for them.
        tracing::info!("shutdown grace period over; not waiting for remaining requests");
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: Arc<Limits>,
    conn: Arc<Conn>,
    header_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let service = {
        let limits = limits.clone();
        let conn = conn.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            limits.request_started(&conn);
            let guard = RequestGuard {
                limits: limits.clone(),
                conn: conn.clone(),
            };
            let mut router = router.clone();
            async move {
                let response = match router.call(Request::from(req.map(Body::new))).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|inner| GuardedBody {
                    inner,
                    _guard: guard,
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                break;
            }
            () = conn.evicted.notified() => {
                tracing::debug!("idle connection closed to make room for a new one");
                break;
            }
            _ = stopping.wait_for(|s| *s), if !shutting_down => {
                // Idle connections close now, busy ones after their response.
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
    limits.closed(&conn);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            permits: Arc::new(Semaphore::new(max)),
            registry: Mutex::new(Registry::default()),
        }
    }

    #[test]
    fn over_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_stay() {
        let l = limits(2);
        let a = l.open(l.admit().unwrap());
        let b = l.open(l.admit().unwrap());
        l.request_started(&a);
        // b is idle: it is closed for c.
        let c = l.open(l.admit().unwrap());
        assert!(lock(&b.permit).is_none());
        // a is busy and c idle: c goes for d.
        let d = l.open(l.admit().unwrap());
        assert!(lock(&c.permit).is_none());
        l.request_started(&d);
        // Both busy: the next connection is refused.
        assert!(l.admit().is_none());
        // a's response ends: a is idle again and can make room.
        l.request_ended(&a);
        assert!(l.admit().is_some());
        assert!(lock(&a.permit).is_none());
        assert!(lock(&d.permit).is_some());
        // A closed connection gives its permit back.
        l.closed(&d);
        assert!(l.admit().is_some());
        assert!(l.registry.lock().unwrap().idle.is_empty());
    }
}
