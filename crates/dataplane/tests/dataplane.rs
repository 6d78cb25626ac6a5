//! System tests of the data plane: container networking against the real kernel (root), the
//! node DNS server and the ingress proxy on loopback.

/// Bridge, namespaces, veths, nftables.
#[path = "dataplane/net.rs"]
mod net;

/// The node DNS server: real sockets, a fake upstream.
#[path = "dataplane/dns.rs"]
mod dns;

/// The ingress proxy: TCP, UDP and HTTP routes.
#[path = "dataplane/ingress.rs"]
mod ingress;
