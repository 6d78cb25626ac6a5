//! The routing mesh's node-local proxy: every published port of every service listens on this
//! node and forwards to the service's ready replicas, wherever they run (SPEC §6).
//!
//! [`Ingress::apply`] takes the node's whole desired set of [`Route`]s each time and converges
//! the listeners to it: new ports are bound, removed ports stop accepting (connections already
//! accepted finish on their own), and changed routes are swapped in place, so requests and
//! connections in flight keep the backend they have. A port that cannot be bound is reported
//! and retried by the next `apply`.
//!
//! Three ways to forward, one module each: `tcp` (L4: a byte pipe per connection, optional PROXY
//! protocol v1), `udp` (per-client sessions with an idle timeout) and `http` (hyper: routing by
//! Host and path prefix, `X-Forwarded-*` headers). Backends are taken round-robin.
//!
//! This module does not decide which replicas are ready or which port maps where; it is handed
//! the result. It touches no firewall rules (VIPs are nftables DNAT, elsewhere).

mod http;
mod tcp;
mod udp;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

/// Configuration of a node's ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// The address published ports listen on, normally `0.0.0.0`.
    pub bind_ip: IpAddr,
}

/// Transport protocol of a published port (the Compose port's own type).
pub use crate::Proto;

/// One published port and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub published: u16,
    pub protocol: Proto,
    pub mode: RouteMode,
    /// Ready replicas as `ip:target_port`; in HTTP mode the rules carry their own backends.
    pub backends: Vec<SocketAddr>,
    /// Send a PROXY protocol v1 header to backends first (L4 TCP only), so they see the client.
    pub proxy_protocol: bool,
}

/// How a TCP port is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMode {
    /// Bytes or datagrams, untouched.
    L4,
    /// HTTP/1.1, routed per request; used when a service has `x-hivemind.ingress`.
    Http { rules: Vec<HttpRule> },
}

/// Requests for `host` (any host when `None`) under `path_prefix` go to `backends`. Several
/// services can share one published port this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    pub host: Option<String>,
    pub path_prefix: String,
    pub backends: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {protocol} port {port}; another process (or service) uses it")]
    Bind {
        port: u16,
        protocol: Proto,
        #[source]
        source: io::Error,
    },
    #[error("port {port}/udp cannot route http; http ingress needs a tcp port")]
    HttpOverUdp { port: u16 },
    #[error("port {port}/{protocol} is published twice; only the first route is used")]
    Duplicate { port: u16, protocol: Proto },
}

/// Backends taken in turn. Each connection or request starts one further along.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl RoundRobin {
    fn new(addrs: Vec<SocketAddr>) -> RoundRobin {
        RoundRobin {
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        self.addrs.contains(&addr)
    }

    /// Every backend once, starting at the next one in turn: the caller tries them in this
    /// order until one answers.
    pub(crate) fn order(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let len = self.addrs.len();
        (0..len).map(move |i| self.addrs[(start + i) % len])
    }
}

/// An HTTP rule ready for matching: host lowercased, prefix normalized.
#[derive(Debug)]
pub(crate) struct LiveRule {
    host: Option<String>,
    /// Without a trailing slash; empty matches every path.
    prefix: String,
    backends: RoundRobin,
}

/// A route as the forwarding code reads it; replaced whole by `apply`.
#[derive(Debug)]
pub(crate) struct LiveRoute {
    route: Route,
    backends: RoundRobin,
    rules: Vec<LiveRule>,
}

impl LiveRoute {
    fn new(route: Route) -> LiveRoute {
        let rules = match &route.mode {
            RouteMode::L4 => Vec::new(),
            RouteMode::Http { rules } => rules
                .iter()
                .map(|rule| LiveRule {
                    host: rule.host.as_deref().map(normalize_host),
                    prefix: rule.path_prefix.trim_end_matches('/').to_owned(),
                    backends: RoundRobin::new(rule.backends.clone()),
                })
                .collect(),
        };
        LiveRoute {
            backends: RoundRobin::new(route.backends.clone()),
            route,
            rules,
        }
    }

    pub(crate) fn is_http(&self) -> bool {
        matches!(self.route.mode, RouteMode::Http { .. })
    }

    pub(crate) fn proxy_protocol(&self) -> bool {
        self.route.proxy_protocol
    }

    pub(crate) fn backends(&self) -> &RoundRobin {
        &self.backends
    }

    /// The backends for a request: rules for exactly this host win over host-less rules, then
    /// the longest matching path prefix wins. Prefixes match whole path segments: `/api`
    /// matches `/api` and `/api/v1`, not `/apiary`. An L4 route (a connection accepted just
    /// before the route changed mode) sends everything to its backends.
    pub(crate) fn select(&self, host: Option<&str>, path: &str) -> Option<&RoundRobin> {
        if !self.is_http() {
            return Some(&self.backends);
        }
        let host = host.map(normalize_host);
        self.rules
            .iter()
            .filter(|rule| rule.host.is_none() || rule.host == host)
            .filter(|rule| prefix_matches(&rule.prefix, path))
            .max_by_key(|rule| (rule.host.is_some(), rule.prefix.len()))
            .map(|rule| &rule.backends)
    }
}

/// `Shop.Example.com:8080` → `shop.example.com`; IPv6 literals keep their brackets.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.');
    let without_port = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// Resolves once the listener is told to close, or its `Listener` is gone.
pub(crate) async fn closing(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|closed| *closed).await;
}

/// One bound port and its accept (or datagram) loop.
struct Listener {
    live: Arc<ArcSwap<LiveRoute>>,
    closing: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Stops accepting and waits until the socket is closed, so the port is free on return.
    async fn close(self) {
        let _ = self.closing.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "ingress listener task failed");
        }
    }
}

/// The node's published ports. Cheap to share behind an `Arc`; `apply` calls are serialized.
pub struct Ingress {
    config: IngressConfig,
    client: http::HttpClient,
    /// A tokio mutex on purpose: `apply` holds it across binds and listener shutdowns so two
    /// applies cannot interleave. Forwarding never touches it.
    listeners: Mutex<HashMap<(u16, Proto), Listener>>,
}

impl fmt::Debug for Ingress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingress")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Ingress {
    pub fn new(config: IngressConfig) -> Ingress {
        Ingress {
            config,
            client: http::client(),
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// Converges the listeners to `routes`, the whole desired set. Returns the ports that
    /// could not be served this time, each with why; everything else is applied.
    pub async fn apply(&self, routes: Vec<Route>) -> Vec<(u16, IngressError)> {
        let mut listeners = self.listeners.lock().await;
        let mut errors = Vec::new();
        let mut desired: HashMap<(u16, Proto), Route> = HashMap::new();
        for route in routes {
            let key = (route.published, route.protocol);
            if route.protocol == Proto::Udp && matches!(route.mode, RouteMode::Http { .. }) {
                errors.push((route.published, IngressError::HttpOverUdp { port: key.0 }));
            } else if let Entry::Vacant(slot) = desired.entry(key) {
                slot.insert(route);
            } else {
                let error = IngressError::Duplicate {
                    port: key.0,
                    protocol: key.1,
                };
                errors.push((key.0, error));
            }
        }

        let removed: Vec<(u16, Proto)> = listeners
            .keys()
            .filter(|key| !desired.contains_key(key))
            .copied()
            .collect();
        for key in removed {
            if let Some(listener) = listeners.remove(&key) {
                listener.close().await;
                tracing::info!(port = key.0, protocol = %key.1, "ingress port closed");
            }
        }

        for (key, route) in desired {
            if let Some(listener) = listeners.get(&key) {
                if listener.live.load().route != route {
                    tracing::debug!(port = key.0, protocol = %key.1, "ingress route updated");
                    listener.live.store(Arc::new(LiveRoute::new(route)));
                }
                continue;
            }
            match self.open(route).await {
                Ok(listener) => {
                    tracing::info!(port = key.0, protocol = %key.1, "ingress port opened");
                    listeners.insert(key, listener);
                }
                Err(error) => {
                    tracing::warn!(port = key.0, protocol = %key.1, %error, "ingress port not opened");
                    errors.push((key.0, error));
                }
            }
        }
        errors.sort_by_key(|(port, _)| *port);
        errors
    }

    /// Closes every port. Connections already accepted finish on their own; HTTP connections
    /// finish the request in flight and then close.
    pub async fn shutdown(&self) {
        let mut listeners = self.listeners.lock().await;
        for (_, listener) in listeners.drain() {
            listener.close().await;
        }
    }

    async fn open(&self, route: Route) -> Result<Listener, IngressError> {
        let addr = SocketAddr::new(self.config.bind_ip, route.published);
        let (port, protocol) = (route.published, route.protocol);
        let bind_error = |source| IngressError::Bind {
            port,
            protocol,
            source,
        };
        let (closing, closed) = watch::channel(false);
        let live = Arc::new(ArcSwap::from_pointee(LiveRoute::new(route)));
        let task = match protocol {
            Proto::Tcp => {
                let socket = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_error)?;
                let accept = tcp::accept_loop(socket, live.clone(), self.client.clone(), closed);
                tokio::spawn(accept)
            }
            Proto::Udp => {
                let socket = tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(bind_error)?;
                tokio::spawn(udp::datagram_loop(socket, live.clone(), closed))
            }
        };
        Ok(Listener {
            live,
            closing,
            task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 42, 0, 1], port))
    }

    fn rule(host: Option<&str>, prefix: &str, port: u16) -> HttpRule {
        HttpRule {
            host: host.map(str::to_owned),
            path_prefix: prefix.into(),
            backends: vec![addr(port)],
        }
    }

    #[test]
    fn requests_pick_host_then_longest_prefix() {
        let route = LiveRoute::new(Route {
            published: 80,
            protocol: Proto::Tcp,
            mode: RouteMode::Http {
                rules: vec![
                    rule(None, "/", 1),
                    rule(None, "/api", 2),
                    rule(Some("Shop.Example.com"), "/", 3),
                    rule(Some("shop.example.com"), "/api/", 4),
                    rule(Some("admin.example.com"), "/admin", 5),
                ],
            },
            backends: vec![],
            proxy_protocol: false,
        });
        let table: &[(Option<&str>, &str, Option<u16>)] = &[
            (None, "/", Some(1)),
            (None, "/index.html", Some(1)),
            (None, "/api", Some(2)),
            (None, "/api/v1/x", Some(2)),
            (None, "/apiary", Some(1)),
            (Some("other.example.com"), "/api/v1", Some(2)),
            (Some("shop.example.com"), "/", Some(3)),
            (Some("SHOP.example.COM:8080"), "/cart", Some(3)),
            (Some("shop.example.com."), "/api/orders", Some(4)),
            (Some("shop.example.com"), "/api", Some(4)),
            (Some("admin.example.com"), "/admin/users", Some(5)),
            // A host whose own rules do not match the path falls back to host-less rules.
            (Some("admin.example.com"), "/api", Some(2)),
        ];
        for (host, path, expected) in table {
            let got = route
                .select(*host, path)
                .map(|backends| backends.order().next().unwrap().port());
            assert_eq!(got, *expected, "{host:?} {path}");
        }

        let strict = LiveRoute::new(Route {
            published: 80,
            protocol: Proto::Tcp,
            mode: RouteMode::Http {
                rules: vec![rule(Some("a.example"), "/app", 1)],
            },
            backends: vec![],
            proxy_protocol: false,
        });
        assert!(strict.select(Some("b.example"), "/app").is_none());
        assert!(strict.select(Some("a.example"), "/other").is_none());
        assert!(strict.select(None, "/app").is_none());
    }

    #[test]
    fn hosts_are_normalized() {
        let table = [
            ("Example.COM", "example.com"),
            ("example.com:8080", "example.com"),
            ("example.com.", "example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("10.0.0.1:80", "10.0.0.1"),
        ];
        for (raw, expected) in table {
            assert_eq!(normalize_host(raw), expected, "{raw}");
        }
    }

    #[test]
    fn round_robin_visits_every_backend_from_a_moving_start() {
        let backends = RoundRobin::new(vec![addr(1), addr(2), addr(3)]);
        let firsts: Vec<u16> = (0..6)
            .map(|_| backends.order().next().unwrap().port())
            .collect();
        assert_eq!(firsts, [1, 2, 3, 1, 2, 3]);
        let all: Vec<u16> = backends.order().map(|a| a.port()).collect();
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(RoundRobin::new(vec![]).order().count(), 0);
    }
}
