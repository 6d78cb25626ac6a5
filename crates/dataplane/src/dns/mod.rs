//! The node's DNS server: answers containers' questions about services (SPEC §6, §7).
//!
//! It listens on the bridge gateway (UDP and TCP port 53; tests use loopback on a free port),
//! answers every name under its domain (`hivemind`) authoritatively from a [`DnsZone`], and
//! forwards every other name to the host's resolvers. The zone is handed over whole, with a
//! generation, and swapped atomically: a query sees the old zone or the new one, never a mix.
//! The naming scheme is documented in [`zone`]. Parsing and wire encoding are hickory's; this
//! module never panics on what a client sends (bad questions get FORMERR or NOTIMP).
//!
//! Who asks matters: the zone's client table maps replica addresses to their app networks, and a
//! replica only sees its own app's services that share a network with it ([`zone`]). A known
//! replica may also ask short names (`web`, `tasks.web`, `web.APP`), answered like the full
//! names of its own app; every other name outside the domain is forwarded. Queries from other
//! addresses (the host itself, tests on loopback) see every full name and no short one.
//!
//! It must not decide what a name means beyond the zone it is given: which replicas are ready
//! and which VIP a service has are the server's and the health prober's business.

mod forward;
mod zone;

pub use zone::{DnsClient, DnsService, DnsZone, RECORD_TTL};

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, Record};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};

use forward::Forwarder;
use zone::{Lookup, ZoneIndex};

/// How long an idle TCP client connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest UDP answer we send, whatever a client's EDNS says it accepts.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Configuration of one node's DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Where to answer, each on UDP and TCP: the bridge gateway `:53` in production. A port 0
    /// picks one free port for both protocols (see [`DnsServer::local_addrs`]).
    pub listen: Vec<SocketAddr>,
    /// Where names outside `domain` go; see [`upstreams_from_resolv_conf`].
    pub upstreams: Vec<SocketAddr>,
    /// The cluster's DNS domain, `hivemind`.
    pub domain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for dns on {protocol} {addr}; is another dns server using the port?")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("dns domain {domain:?} is not a valid domain name")]
    Domain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("the dns server has nowhere to listen; give it at least one address")]
    NoListenAddress,
}

/// The nameservers of a `resolv.conf` text, as upstreams: port 53, in file order, loopback
/// (and unspecified) addresses left out because from the bridge they would point at the
/// container itself, or at a host-local stub like systemd-resolved's `127.0.0.53`. On such hosts
/// read `/run/systemd/resolve/resolv.conf` instead (see [`host_upstreams`]).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|address| address.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The host's upstream resolvers: `/etc/resolv.conf`, or systemd-resolved's list of real
/// servers when the former only names the local stub.
pub fn host_upstreams() -> Vec<SocketAddr> {
    ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| upstreams_from_resolv_conf(&text))
        .find(|upstreams| !upstreams.is_empty())
        .unwrap_or_default()
}

/// A running DNS server. Dropping it stops answering at once; [`DnsServer::stop`] lets the
/// queries in flight be answered first.
pub struct DnsServer {
    zone: Arc<ArcSwap<ZoneIndex>>,
    origin: Name,
    local_addrs: Vec<SocketAddr>,
    server: ServerFuture<Handler>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("origin", &self.origin)
            .field("local_addrs", &self.local_addrs)
            .field("generation", &self.zone_generation())
            .finish()
    }
}

impl DnsServer {
    /// Binds every listen address on UDP and TCP and starts answering from `zone`.
    pub async fn start(config: DnsConfig, zone: DnsZone) -> Result<DnsServer, DnsError> {
        if config.listen.is_empty() {
            return Err(DnsError::NoListenAddress);
        }
        let origin = Name::from_ascii(config.domain.trim_end_matches('.'))
            .and_then(|name| name.append_domain(&Name::root()))
            .map(|name| name.to_lowercase())
            .map_err(|source| DnsError::Domain {
                domain: config.domain.clone(),
                source,
            })?;
        let index = Arc::new(ArcSwap::from_pointee(ZoneIndex::build(&origin, &zone)));
        let handler = Handler {
            zone: index.clone(),
            forwarder: Forwarder::new(config.upstreams.clone()),
        };
        let mut server = ServerFuture::new(handler);
        let mut local_addrs = Vec::new();
        for addr in &config.listen {
            let (udp, tcp) = bind_pair(*addr).await?;
            local_addrs.push(udp.local_addr().map_err(|source| DnsError::Bind {
                addr: *addr,
                protocol: "udp",
                source,
            })?);
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT);
        }
        tracing::info!(
            listen = ?local_addrs,
            upstreams = ?config.upstreams,
            domain = %origin,
            generation = zone.generation,
            "dns server started"
        );
        Ok(DnsServer {
            zone: index,
            origin,
            local_addrs,
            server,
        })
    }

    /// The addresses actually bound (UDP and TCP share each), with port 0 resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Replaces the whole zone; the next query sees the new one.
    pub fn set_zone(&self, zone: DnsZone) {
        let index = ZoneIndex::build(&self.origin, &zone);
        tracing::debug!(
            generation = zone.generation,
            services = zone.services.len(),
            "dns zone set"
        );
        self.zone.store(Arc::new(index));
    }

    /// Generation of the zone being served.
    pub fn zone_generation(&self) -> u64 {
        self.zone.load().generation()
    }

    /// Stops listening and waits for queries in flight to be answered.
    pub async fn stop(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::warn!(%error, "dns server stopped with an error");
        }
        tracing::info!(listen = ?self.local_addrs, "dns server stopped");
    }
}

/// Binds UDP and TCP on the same address; with port 0, on the same free port.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let udp_error = |source| DnsError::Bind {
        addr,
        protocol: "udp",
        source,
    };
    let tcp_error = |source| DnsError::Bind {
        addr,
        protocol: "tcp",
        source,
    };
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await.map_err(udp_error)?;
        let tcp = TcpListener::bind(addr).await.map_err(tcp_error)?;
        return Ok((udp, tcp));
    }
    // A free UDP port may be taken on TCP; a few tries make a clash vanishingly unlikely.
    let mut last_error = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await.map_err(udp_error)?;
        let port = udp.local_addr().map_err(udp_error)?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(tcp_error(
        last_error.unwrap_or_else(|| io::Error::other("no free port")),
    ))
}

/// Answers one request: our zone, or the upstreams.
struct Handler {
    zone: Arc<ArcSwap<ZoneIndex>>,
    forwarder: Forwarder,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if request.edns().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(request.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            builder.edns(edns);
        }
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);

        let sent = if request.message_type() != MessageType::Query
            || request.op_code() != OpCode::Query
        {
            header.set_response_code(ResponseCode::NotImp);
            response
                .send_response(builder.build_no_records(header))
                .await
        } else if let Ok(info) = request.request_info() {
            let query = info.query;
            let zone = self.zone.load();
            // Answers depend on who asks (Compose networks); only IPv4 replicas are known.
            let client = match request.src().ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(ip) => ip.to_ipv4_mapped(),
            };
            match zone.lookup(query.name(), query.query_type(), client) {
                Lookup::Records {
                    answers,
                    additionals,
                } => {
                    header.set_authoritative(true);
                    let message = builder.build(header, &answers, [], [], &additionals);
                    response.send_response(message).await
                }
                negative @ (Lookup::NoData | Lookup::NxDomain) => {
                    header.set_authoritative(true);
                    if negative == Lookup::NxDomain {
                        header.set_response_code(ResponseCode::NXDomain);
                    }
                    let soa: [&Record; 1] = [zone.soa()];
                    let message = builder.build(header, [], [], soa, []);
                    response.send_response(message).await
                }
                Lookup::NotOurs => {
                    let over_tcp = request.protocol() == Protocol::Tcp;
                    let query = query.original().clone();
                    match self
                        .forwarder
                        .forward(&query, request.recursion_desired(), over_tcp)
                        .await
                    {
                        Ok(answer) => {
                            header.set_response_code(answer.response_code());
                            header.set_authoritative(answer.authoritative());
                            let message = builder.build(
                                header,
                                answer.answers(),
                                answer.name_servers(),
                                [],
                                answer.additionals(),
                            );
                            response.send_response(message).await
                        }
                        Err(error) => {
                            tracing::warn!(name = %query.name(), %error, "cannot forward dns query");
                            header.set_response_code(ResponseCode::ServFail);
                            response
                                .send_response(builder.build_no_records(header))
                                .await
                        }
                    }
                }
            }
        } else {
            // Not exactly one question: hickory's parser accepts it, we do not.
            header.set_response_code(ResponseCode::FormErr);
            response
                .send_response(builder.build_no_records(header))
                .await
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(src = %request.src(), %error, "cannot send dns answer");
                let mut header = Header::response_from_request(request.header());
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_upstreams() {
        let table: &[(&str, &[&str])] = &[
            (
                "nameserver 1.1.1.1\nnameserver 8.8.8.8\n",
                &["1.1.1.1:53", "8.8.8.8:53"],
            ),
            (
                "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
                &[],
            ),
            (
                "# nameserver 9.9.9.9\n; comment\nnameserver 9.9.9.9 # trailing\n",
                &["9.9.9.9:53"],
            ),
            (
                "nameserver ::1\nnameserver 2001:4860:4860::8888\n",
                &["[2001:4860:4860::8888]:53"],
            ),
            (
                "nameserver\nnameserver not-an-ip\nnameserver 0.0.0.0\n",
                &[],
            ),
            ("  nameserver   10.0.0.1  \n", &["10.0.0.1:53"]),
        ];
        for (text, expected) in table {
            let got: Vec<String> = upstreams_from_resolv_conf(text)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, *expected, "{text:?}");
        }
    }
}
