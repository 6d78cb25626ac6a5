//! TCP ports: the accept loop shared by L4 and HTTP routes, and the L4 byte pipe.
//!
//! Each accepted connection reads the route as it is at that moment: L4 connections are
//! piped to one backend for their whole life (a later backend swap does not touch them), HTTP
//! connections are handed to `http`, which routes each request. Closing the listener stops
//! accepting only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::http::{self, HttpClient};
use super::{LiveRoute, RoundRobin};

/// How long a backend gets to accept a connection before the next one is tried.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepts until `closed` turns true (or its sender goes away).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    live: Arc<ArcSwap<LiveRoute>>,
    client: HttpClient,
    mut closed: watch::Receiver<bool>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = super::closing(&mut closed) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(port, %error, "ingress cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let route = live.load_full();
        if route.is_http() {
            let connection =
                http::serve_connection(stream, peer, live.clone(), client.clone(), closed.clone());
            tokio::spawn(connection);
        } else {
            tokio::spawn(pipe(stream, peer, route));
        }
    }
    tracing::debug!(port, "ingress tcp listener closed");
}

/// Connects to the first backend that accepts, in round-robin order, and pipes both ways
/// until both sides have closed; an EOF from one side is passed on as a half-close.
async fn pipe(mut client: TcpStream, peer: SocketAddr, route: Arc<LiveRoute>) {
    let Some((mut backend, backend_addr)) = connect_any(route.backends()).await else {
        tracing::debug!(%peer, "no ingress backend accepted the connection");
        return;
    };
    if route.proxy_protocol() {
        let header = match client.local_addr() {
            Ok(local) => proxy_v1_header(peer, local),
            Err(_) => "PROXY UNKNOWN\r\n".to_owned(),
        };
        if let Err(error) = backend.write_all(header.as_bytes()).await {
            tracing::debug!(%peer, backend = %backend_addr, %error, "cannot send proxy header");
            return;
        }
    }
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => {
            tracing::trace!(%peer, backend = %backend_addr, up, down, "ingress connection done")
        }
        Err(error) => {
            tracing::debug!(%peer, backend = %backend_addr, %error, "ingress connection ended")
        }
    }
}

/// The first backend, in turn, that accepts a connection; refusing or silent ones are skipped.
pub(crate) async fn connect_any(backends: &RoundRobin) -> Option<(TcpStream, SocketAddr)> {
    for addr in backends.order() {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, addr));
            }
            Ok(Err(error)) => tracing::debug!(backend = %addr, %error, "ingress backend refused"),
            Err(_) => tracing::debug!(backend = %addr, "ingress backend timed out"),
        }
    }
    None
}

/// The PROXY protocol v1 line announcing a connection from `source` to `destination`.
fn proxy_v1_header(source: SocketAddr, destination: SocketAddr) -> String {
    match (source.ip().to_canonical(), destination.ip().to_canonical()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => format!(
            "PROXY TCP4 {src} {dst} {} {}\r\n",
            source.port(),
            destination.port()
        ),
        (IpAddr::V6(src), IpAddr::V6(dst)) => format!(
            "PROXY TCP6 {src} {dst} {} {}\r\n",
            source.port(),
            destination.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers() {
        let table = [
            (
                "192.168.1.5:51000",
                "10.0.0.1:80",
                "PROXY TCP4 192.168.1.5 10.0.0.1 51000 80\r\n",
            ),
            (
                "[2001:db8::1]:4000",
                "[2001:db8::2]:443",
                "PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n",
            ),
            (
                "[::ffff:192.168.1.5]:51000",
                "[::ffff:10.0.0.1]:80",
                "PROXY TCP4 192.168.1.5 10.0.0.1 51000 80\r\n",
            ),
            ("192.168.1.5:1", "[2001:db8::2]:443", "PROXY UNKNOWN\r\n"),
        ];
        for (source, destination, expected) in table {
            let got = proxy_v1_header(source.parse().unwrap(), destination.parse().unwrap());
            assert_eq!(got, expected);
        }
    }
}
