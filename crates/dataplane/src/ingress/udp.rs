//! UDP ports: one session per client address, each with its own socket towards one backend,
//! so replies can be told apart and sent back to the right client from the published port.
//!
//! A session ends after [`IDLE_TIMEOUT`] without traffic either way, or when its backend
//! reports the port unreachable. Closing the listener ends every session (UDP has no
//! connection a client could be in the middle of).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::LiveRoute;

/// How long a session lives without a datagram either way.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sessions beyond this many are refused (each holds a socket).
const MAX_SESSIONS: usize = 4096;

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// One client's session.
struct Session {
    id: u64,
    backend: SocketAddr,
    socket: Arc<UdpSocket>,
    /// Milliseconds since the loop started at the last datagram either way.
    last_active: Arc<AtomicU64>,
    replies: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Relays datagrams until `closed` turns true (or its sender goes away).
pub(crate) async fn datagram_loop(
    socket: UdpSocket,
    live: Arc<ArcSwap<LiveRoute>>,
    mut closed: watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let port = socket.local_addr().map(|a| a.port()).unwrap_or_default();
    let epoch = Instant::now();
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut next_id = 0u64;
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = tokio::select! {
            _ = super::closing(&mut closed) => break,
            Some((client, id)) = ended_rx.recv() => {
                if sessions.get(&client).is_some_and(|s| s.id == id) {
                    sessions.remove(&client);
                }
                continue;
            }
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // An ICMP error for an earlier reply, or a transient failure.
                    tracing::trace!(port, %error, "ingress udp receive failed");
                    continue;
                }
            },
        };
        // A session whose backend left the route starts over on a current backend.
        let route = live.load_full();
        if sessions
            .get(&client)
            .is_some_and(|session| !route.backends().contains(session.backend))
        {
            sessions.remove(&client);
        }
        if !sessions.contains_key(&client) {
            if sessions.len() >= MAX_SESSIONS {
                tracing::warn!(port, %client, "too many udp sessions; datagram dropped");
                continue;
            }
            let Some(backend) = route.backends().order().next() else {
                tracing::debug!(port, %client, "no udp backend; datagram dropped");
                continue;
            };
            next_id += 1;
            match open_session(next_id, client, backend, &socket, epoch, ended_tx.clone()).await {
                Ok(session) => {
                    tracing::debug!(port, %client, %backend, "udp session opened");
                    sessions.insert(client, session);
                }
                Err(error) => {
                    tracing::warn!(port, %client, %backend, %error, "cannot open udp session");
                    continue;
                }
            }
        }
        if let Some(session) = sessions.get(&client) {
            session
                .last_active
                .store(millis_since(epoch), Ordering::Relaxed);
            if let Err(error) = session.socket.send(&buffer[..len]).await {
                tracing::debug!(port, %client, %error, "udp datagram not relayed");
            }
        }
    }
    tracing::debug!(
        port,
        sessions = sessions.len(),
        "ingress udp listener closed"
    );
}

async fn open_session(
    id: u64,
    client: SocketAddr,
    backend: SocketAddr,
    listener: &Arc<UdpSocket>,
    epoch: Instant,
    ended: mpsc::UnboundedSender<(SocketAddr, u64)>,
) -> std::io::Result<Session> {
    let local: SocketAddr = match backend {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = Arc::new(UdpSocket::bind(local).await?);
    socket.connect(backend).await?;
    let last_active = Arc::new(AtomicU64::new(millis_since(epoch)));
    let replies = tokio::spawn(relay_replies(
        socket.clone(),
        listener.clone(),
        client,
        last_active.clone(),
        epoch,
    ));
    let abort = replies.abort_handle();
    tokio::spawn(async move {
        let _ = replies.await;
        let _ = ended.send((client, id));
    });
    Ok(Session {
        id,
        backend,
        socket,
        last_active,
        replies: abort,
    })
}

/// Sends the backend's datagrams back to the client until the session is idle.
async fn relay_replies(
    backend: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    last_active: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle = millis_since(epoch).saturating_sub(last_active.load(Ordering::Relaxed));
        let Some(left) = IDLE_TIMEOUT.checked_sub(Duration::from_millis(idle)) else {
            break;
        };
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, backend.recv(&mut buffer)).await {
            Ok(Ok(len)) => {
                last_active.store(millis_since(epoch), Ordering::Relaxed);
                if let Err(error) = listener.send_to(&buffer[..len], client).await {
                    tracing::debug!(%client, %error, "udp reply not relayed");
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(%client, %error, "udp backend unreachable; session ended");
                break;
            }
            // Timed out: the client may have been active meanwhile; check again.
            Err(_) => {}
        }
    }
    tracing::debug!(%client, "udp session ended");
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}
