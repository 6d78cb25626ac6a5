//! The zone: the services the server gives names to, compiled into an index that answers a
//! question (name, type) with records. Pure and synchronous: no sockets, no clock, so the whole
//! naming scheme is table-tested here.
//!
//! Names, for a service `web` of app `shop` in namespace `default` under domain `hivemind`:
//!
//! | name | answers |
//! |---|---|
//! | `web.shop.default.hivemind` | A: the VIP, or the ready replicas when the service has no VIP |
//! | `tasks.web.shop.default.hivemind` | A: every ready replica, shuffled per answer |
//! | `_80._tcp.web.shop.default.hivemind` | SRV: port 80 on `web.shop.default.hivemind.` |
//! | `hivemind` | SOA (the zone apex) |
//!
//! Aliases are further service names in the same app and answer exactly like the service's own
//! name.
//!
//! Each answer depends on who asks (the query's source address, looked up in the zone's client
//! table): a replica sees the services of its own app only if they share a network with it
//! (Compose networks); other services of its app are NXDOMAIN, as if they did not exist. Names
//! of other apps always resolve: whether they can be reached is the firewall's business. A
//! source that is no known replica (the host, a test client) sees every full name.
//!
//! Short names. A known replica of app `shop` may also ask for names outside the domain, as
//! Docker's embedded DNS lets it:
//!
//! | asked | answers like |
//! |---|---|
//! | `web`, `tasks.web`, `_80._tcp.web` | the same + `.shop.default.hivemind` |
//! | `web.shop`, `tasks.web.shop` | the same + `.default.hivemind` (ends in the asker's own app) |
//!
//! The records carry the name as asked. A short name is ours only when its completion is a
//! name a service owns and the asker may see (so `shop` alone, or `db` from a replica that
//! shares no network with `db`, is not); the first completion in the order above wins. Such a
//! name answers NODATA for types it has no records of (AAAA) rather than going upstream: a
//! resolver asking A and AAAA at once (musl) gives up on the name if either is NXDOMAIN. Every
//! other name outside the domain (`example.com`, `web` of another app, any name from an
//! unknown source) goes upstream exactly as before, whose answer (usually NXDOMAIN for a
//! single label) the client gets. So a service name of the asker's own app shadows an
//! upstream name that is spelled the same (`web.shop` when `.shop` is a real top-level
//! domain), as a search list would; nothing else is shadowed.
//!
//! Resolvers that use the search list still get there first: the agent writes
//! `search shop.default.hivemind default.hivemind hivemind` into each container's
//! `resolv.conf`, with `options ndots:3` (with the default of 1, `web.shop` would first be
//! asked as an absolute name, and `.shop` is a real top-level domain on the internet). The
//! short forms above serve those that send a dotted name as is (busybox `nslookup tasks.web`)
//! or skip the list. The client table holds every replica attached on this node (from its
//! attachment on, before it is a ready endpoint) and every ready endpoint of the assignment.
//!
//! Every name that exists only as a parent of others (`shop.default.hivemind`,
//! `_tcp.web.shop.default.hivemind`) answers NODATA rather than NXDOMAIN, as RFC 8020 requires;
//! anything else under the domain is NXDOMAIN.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use rand::seq::SliceRandom;

/// Time to live of every record the zone answers with, and of negative answers (SOA minimum).
/// Short on purpose: replica sets and VIPs change with every rollout, and a client must not keep
/// a stale set for long.
pub const RECORD_TTL: u32 = 5;

/// The whole naming state of a node, replaced at once with a new generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsZone {
    /// Generation of the assignment this zone was computed from; reported back as applied.
    pub generation: u64,
    pub services: Vec<DnsService>,
    /// Who each replica address is, so that an answer can depend on who asks.
    pub clients: BTreeMap<Ipv4Addr, DnsClient>,
}

impl DnsZone {
    /// Adds (or replaces) the entries of replicas attached on this node, so that they are
    /// known from their first query rather than once they are ready endpoints. The node's own
    /// attachments win: an address is only ever attached to one replica here.
    pub fn add_clients(&mut self, clients: impl IntoIterator<Item = (Ipv4Addr, DnsClient)>) {
        self.clients.extend(clients);
    }
}

/// A replica as a DNS client: its app and the app networks it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsClient {
    pub namespace: String,
    pub app: String,
    /// Network names within the app; empty means `default`.
    pub networks: Vec<String>,
}

/// One service's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsService {
    pub namespace: String,
    pub app: String,
    pub name: String,
    /// The service's virtual IP; without one its name resolves to the ready replicas.
    pub vip: Option<Ipv4Addr>,
    /// Further names of the service inside its app (Compose network aliases).
    pub aliases: Vec<String>,
    /// The app networks the service is on; empty means `default`.
    pub networks: Vec<String>,
    /// Addresses of the ready replicas only: a replica that fails its health check leaves DNS.
    pub replicas: Vec<Ipv4Addr>,
    /// `("tcp" | "udp", port)`, each giving an SRV record `_PORT._PROTO.NAME...`.
    pub ports: Vec<(String, u16)>,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    /// Records for the answer section and, for SRV, the targets' addresses as additionals.
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of the asked type.
    NoData,
    /// No such name in our zone.
    NxDomain,
    /// Not under our domain: the question goes to the upstream resolvers.
    NotOurs,
}

/// The records one name owns. Each record carries the index of the service it came from, so
/// that an answer can leave out the services the client may not see.
#[derive(Debug, Default)]
struct NameRecords {
    a: Vec<(Ipv4Addr, usize)>,
    /// Replica sets are shuffled on every answer so clients that take the first address spread.
    shuffle: bool,
    srv: Vec<(SRV, usize)>,
    /// The services that make the name exist; empty for names every service shares (the
    /// apex, `APP.NAMESPACE`), which everyone sees.
    owners: Vec<usize>,
}

/// Where a service (or a client) sits: app and networks, for visibility checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    namespace: String,
    app: String,
    /// Sorted, never empty (`default` when none was given).
    networks: Vec<String>,
}

impl Scope {
    fn new(namespace: &str, app: &str, networks: &[String]) -> Scope {
        let mut networks = networks.to_vec();
        if networks.is_empty() {
            networks.push(crate::DEFAULT_NETWORK.to_string());
        }
        networks.sort();
        networks.dedup();
        Scope {
            namespace: namespace.to_string(),
            app: app.to_string(),
            networks,
        }
    }

    /// Whether a client at `self` may see `service`: always across apps, within its app only
    /// through a shared network.
    fn sees(&self, service: &Scope) -> bool {
        (self.namespace != service.namespace || self.app != service.app)
            || self.networks.iter().any(|n| service.networks.contains(n))
    }
}

/// A zone compiled for lookups; built once per `set_zone`, read by every query.
#[derive(Debug)]
pub(crate) struct ZoneIndex {
    generation: u64,
    origin: LowerName,
    soa: Record,
    names: HashMap<LowerName, NameRecords>,
    /// Indexed by the numbers the records carry.
    services: Vec<Scope>,
    clients: HashMap<Ipv4Addr, Client>,
}

/// A known replica as the index keeps it: where it sits, and what its short names complete to.
#[derive(Debug)]
struct Client {
    scope: Scope,
    /// `APP.NAMESPACE.` + origin: `web` stands for `web.APP.NAMESPACE.hivemind.`.
    app_domain: Option<Name>,
    /// `NAMESPACE.` + origin, for short names ending in the client's own app (`web.APP`).
    namespace_domain: Option<Name>,
    /// The app as a lowercase label, to recognise those names.
    app_label: Vec<u8>,
}

impl Client {
    fn new(origin: &Name, client: &DnsClient) -> Client {
        let domain = |relative: &str| {
            Name::from_ascii(relative)
                .and_then(|name| name.append_domain(origin))
                .ok()
                .map(|name| name.to_lowercase())
        };
        Client {
            scope: Scope::new(&client.namespace, &client.app, &client.networks),
            app_domain: domain(&format!("{}.{}", client.app, client.namespace)),
            namespace_domain: domain(&client.namespace),
            app_label: client.app.to_ascii_lowercase().into_bytes(),
        }
    }
}

impl ZoneIndex {
    /// Compiles `zone` under `origin` (e.g. `hivemind.`). Services whose names are not valid
    /// DNS names are skipped with a warning rather than failing the whole zone.
    pub(crate) fn build(origin: &Name, zone: &DnsZone) -> ZoneIndex {
        let origin_lower = LowerName::new(origin);
        let mut names: HashMap<LowerName, NameRecords> = HashMap::new();
        names.insert(origin_lower.clone(), NameRecords::default());
        let services: Vec<Scope> = zone
            .services
            .iter()
            .map(|s| Scope::new(&s.namespace, &s.app, &s.networks))
            .collect();
        // `APP.NAMESPACE.` + origin and above are shared by every service of the app.
        let shared_depth = origin_lower.num_labels() + 2;
        let mut cx = Insert {
            names: &mut names,
            origin: &origin_lower,
            shared_depth,
            owner: 0,
        };

        for (owner, service) in zone.services.iter().enumerate() {
            cx.owner = owner;
            let Some(canonical) = service_name(origin, service, &service.name) else {
                continue;
            };
            let addresses = match service.vip {
                Some(vip) => vec![vip],
                None => service.replicas.clone(),
            };
            let mut labels = vec![service.name.as_str()];
            labels.extend(service.aliases.iter().map(String::as_str));
            for label in labels {
                let Some(fqdn) = service_name(origin, service, label) else {
                    continue;
                };
                cx.insert(&fqdn, |records| {
                    records.a.extend(addresses.iter().map(|ip| (*ip, owner)));
                    records.shuffle |= service.vip.is_none();
                });
                if let Some(tasks) = prefixed(&fqdn, "tasks") {
                    cx.insert(&tasks, |records| {
                        records
                            .a
                            .extend(service.replicas.iter().map(|ip| (*ip, owner)));
                        records.shuffle = true;
                    });
                }
                for (proto, port) in &service.ports {
                    let srv_name = prefixed(&fqdn, &format!("_{}", proto.to_ascii_lowercase()))
                        .and_then(|name| prefixed(&name, &format!("_{port}")));
                    let Some(srv_name) = srv_name else { continue };
                    let srv = SRV::new(0, 100, *port, canonical.clone());
                    cx.insert(&srv_name, |records| {
                        if !records.srv.contains(&(srv.clone(), owner)) {
                            records.srv.push((srv, owner));
                        }
                    });
                }
            }
        }
        for records in names.values_mut() {
            records.a.sort_unstable();
            records.a.dedup();
            records.owners.sort_unstable();
            records.owners.dedup();
        }
        let clients = zone
            .clients
            .iter()
            .map(|(ip, c)| (*ip, Client::new(origin, c)))
            .collect();

        let soa = Record::from_rdata(
            origin.clone(),
            RECORD_TTL,
            RData::SOA(SOA::new(
                prefixed(origin, "ns").unwrap_or_else(|| origin.clone()),
                prefixed(origin, "hostmaster").unwrap_or_else(|| origin.clone()),
                // The serial is informational here (no zone transfers); the low bits suffice.
                zone.generation as u32,
                60,
                60,
                3600,
                RECORD_TTL,
            )),
        );
        ZoneIndex {
            generation: zone.generation,
            origin: origin_lower,
            soa,
            names,
            services,
            clients,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The SOA record that goes into the authority section of negative answers.
    pub(crate) fn soa(&self) -> &Record {
        &self.soa
    }

    /// Answers the question `(name, qtype)` asked from `client`, the query's source address.
    pub(crate) fn lookup(
        &self,
        name: &LowerName,
        qtype: RecordType,
        client: Option<Ipv4Addr>,
    ) -> Lookup {
        let client = client.and_then(|ip| self.clients.get(&ip));
        let view = client.map(|c| &c.scope);
        if self.origin.zone_of(name) {
            let Some(records) = self.names.get(name) else {
                return Lookup::NxDomain;
            };
            if !records.owners.is_empty() && !records.owners.iter().any(|o| self.visible(view, o)) {
                return Lookup::NxDomain;
            }
            return self.answer(name, name, records, qtype, view);
        }
        match client.and_then(|c| self.complete(name, c)) {
            Some((full, records)) => self.answer(name, &full, records, qtype, view),
            None => Lookup::NotOurs,
        }
    }

    /// Whether the service numbered `owner` is visible from `view` (everything is to an
    /// unknown asker).
    fn visible(&self, view: Option<&Scope>, owner: &usize) -> bool {
        match (view, self.services.get(*owner)) {
            (Some(client), Some(service)) => client.sees(service),
            _ => true,
        }
    }

    /// The full name (and its records) that `client`'s short name stands for, if any: see the
    /// module documentation for the forms and their order.
    fn complete(&self, name: &LowerName, client: &Client) -> Option<(LowerName, &NameRecords)> {
        let short = Name::from(name);
        let ends_in_app = short.num_labels() >= 2
            && short.iter().next_back() == Some(client.app_label.as_slice());
        let domains = [
            client.app_domain.as_ref(),
            client.namespace_domain.as_ref().filter(|_| ends_in_app),
        ];
        domains.into_iter().flatten().find_map(|domain| {
            let full = LowerName::new(&short.clone().append_domain(domain).ok()?);
            let records = self.names.get(&full)?;
            // Shared names (the apex, `APP.NAMESPACE`) have no owner: `shop` alone stays
            // upstream's.
            records
                .owners
                .iter()
                .any(|o| self.visible(Some(&client.scope), o))
                .then_some((full, records))
        })
    }

    /// The records of `full` for `qtype`, owned by `asked` (the name as the client spelled it).
    fn answer(
        &self,
        asked: &LowerName,
        full: &LowerName,
        records: &NameRecords,
        qtype: RecordType,
        view: Option<&Scope>,
    ) -> Lookup {
        let visible = |owner: &usize| self.visible(view, owner);
        let owner = Name::from(asked);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let any = qtype == RecordType::ANY;
        if *full == self.origin && (any || qtype == RecordType::SOA) {
            answers.push(self.soa.clone());
        }
        if any || qtype == RecordType::A {
            let mut addresses: Vec<Ipv4Addr> = records
                .a
                .iter()
                .filter(|(_, owner)| visible(owner))
                .map(|(ip, _)| *ip)
                .collect();
            addresses.dedup();
            if records.shuffle {
                addresses.shuffle(&mut rand::thread_rng());
            }
            answers.extend(addresses.into_iter().map(|ip| a_record(&owner, ip)));
        }
        if any || qtype == RecordType::SRV {
            for (srv, _) in records.srv.iter().filter(|(_, o)| visible(o)) {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    RECORD_TTL,
                    RData::SRV(srv.clone()),
                ));
                if let Some(target) = self.names.get(&LowerName::new(srv.target())) {
                    let mut ips: Vec<Ipv4Addr> = target
                        .a
                        .iter()
                        .filter(|(_, o)| visible(o))
                        .map(|(ip, _)| *ip)
                        .collect();
                    ips.dedup();
                    additionals.extend(ips.into_iter().map(|ip| a_record(srv.target(), ip)));
                }
            }
        }
        if answers.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Records {
                answers,
                additionals,
            }
        }
    }
}

fn a_record(owner: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(owner.clone(), RECORD_TTL, RData::A(A(ip)))
}

/// `LABEL.APP.NAMESPACE.` + origin, or `None` (with a warning) when that is no valid name.
fn service_name(origin: &Name, service: &DnsService, label: &str) -> Option<Name> {
    let relative = format!("{label}.{}.{}", service.app, service.namespace);
    match Name::from_ascii(&relative).and_then(|name| name.append_domain(origin)) {
        Ok(name) => Some(name.to_lowercase()),
        Err(error) => {
            tracing::warn!(
                namespace = %service.namespace,
                app = %service.app,
                service = %service.name,
                name = %relative,
                %error,
                "service name is not a valid dns name; it gets no records"
            );
            None
        }
    }
}

/// `label.name`, or `None` when the result would be too long for DNS.
fn prefixed(name: &Name, label: &str) -> Option<Name> {
    Name::from_ascii(label)
        .and_then(|prefix| prefix.append_domain(name))
        .ok()
        .map(|name| name.to_lowercase())
}

/// Adds records for one service (`owner`) while a zone is built.
struct Insert<'a> {
    names: &'a mut HashMap<LowerName, NameRecords>,
    origin: &'a LowerName,
    /// Names with at most this many labels are shared by all services of an app.
    shared_depth: u8,
    owner: usize,
}

impl Insert<'_> {
    /// Adds records to `name` and makes every name between it and the origin exist (empty
    /// non-terminals), so that they answer NODATA instead of NXDOMAIN. The name and its
    /// parents below the app level are owned by the service: who may not see the service
    /// gets NXDOMAIN for them too (`_tcp.web...` would otherwise betray `web`).
    fn insert(&mut self, name: &Name, add: impl FnOnce(&mut NameRecords)) {
        let name = LowerName::new(name);
        let records = self.names.entry(name.clone()).or_default();
        add(records);
        records.owners.push(self.owner);
        let mut parent = name.base_name();
        while parent.num_labels() > self.origin.num_labels() {
            let records = self.names.entry(parent.clone()).or_default();
            if parent.num_labels() > self.shared_depth {
                records.owners.push(self.owner);
            }
            parent = parent.base_name();
        }
    }
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
