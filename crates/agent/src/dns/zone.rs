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
//! name. Short forms (`web`, `web.shop`, `tasks.web`) are completed by the containers' resolver
//! through the search list `shop.default.hivemind default.hivemind hivemind` the agent writes into
//! each container's `resolv.conf`; this server only answers fully qualified names. That file
//! must also say `options ndots:3`: with the default of 1, `web.shop` would first be asked as
//! an absolute name (and `.shop` is a real top-level domain on the internet).
//!
//! Every name that exists only as a parent of others (`shop.default.hivemind`,
//! `_tcp.web.shop.default.hivemind`) answers NODATA rather than NXDOMAIN, as RFC 8020 requires;
//! anything else under the domain is NXDOMAIN.

use std::collections::HashMap;
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

/// The records one name owns.
#[derive(Debug, Default)]
struct NameRecords {
    a: Vec<Ipv4Addr>,
    /// Replica sets are shuffled on every answer so clients that take the first address spread.
    shuffle: bool,
    srv: Vec<SRV>,
}

/// A zone compiled for lookups; built once per `set_zone`, read by every query.
#[derive(Debug)]
pub(crate) struct ZoneIndex {
    generation: u64,
    origin: LowerName,
    soa: Record,
    names: HashMap<LowerName, NameRecords>,
}

impl ZoneIndex {
    /// Compiles `zone` under `origin` (e.g. `hivemind.`). Services whose names are not valid
    /// DNS names are skipped with a warning rather than failing the whole zone.
    pub(crate) fn build(origin: &Name, zone: &DnsZone) -> ZoneIndex {
        let origin_lower = LowerName::new(origin);
        let mut names: HashMap<LowerName, NameRecords> = HashMap::new();
        names.insert(origin_lower.clone(), NameRecords::default());

        for service in &zone.services {
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
                insert(&mut names, &origin_lower, &fqdn, |records| {
                    records.a.extend(&addresses);
                    records.shuffle |= service.vip.is_none();
                });
                if let Some(tasks) = prefixed(&fqdn, "tasks") {
                    insert(&mut names, &origin_lower, &tasks, |records| {
                        records.a.extend(&service.replicas);
                        records.shuffle = true;
                    });
                }
                for (proto, port) in &service.ports {
                    let srv_name = prefixed(&fqdn, &format!("_{}", proto.to_ascii_lowercase()))
                        .and_then(|name| prefixed(&name, &format!("_{port}")));
                    let Some(srv_name) = srv_name else { continue };
                    let srv = SRV::new(0, 100, *port, canonical.clone());
                    insert(&mut names, &origin_lower, &srv_name, |records| {
                        if !records.srv.contains(&srv) {
                            records.srv.push(srv);
                        }
                    });
                }
            }
        }
        for records in names.values_mut() {
            records.a.sort_unstable();
            records.a.dedup();
        }

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
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The SOA record that goes into the authority section of negative answers.
    pub(crate) fn soa(&self) -> &Record {
        &self.soa
    }

    /// Answers the question `(name, qtype)`.
    pub(crate) fn lookup(&self, name: &LowerName, qtype: RecordType) -> Lookup {
        if !self.origin.zone_of(name) {
            return Lookup::NotOurs;
        }
        let Some(records) = self.names.get(name) else {
            return Lookup::NxDomain;
        };
        let owner = Name::from(name);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let any = qtype == RecordType::ANY;
        if *name == self.origin && (any || qtype == RecordType::SOA) {
            answers.push(self.soa.clone());
        }
        if any || qtype == RecordType::A {
            let mut addresses = records.a.clone();
            if records.shuffle {
                addresses.shuffle(&mut rand::thread_rng());
            }
            answers.extend(addresses.into_iter().map(|ip| a_record(&owner, ip)));
        }
        if any || qtype == RecordType::SRV {
            for srv in &records.srv {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    RECORD_TTL,
                    RData::SRV(srv.clone()),
                ));
                if let Some(target) = self.names.get(&LowerName::new(srv.target())) {
                    additionals.extend(target.a.iter().map(|ip| a_record(srv.target(), *ip)));
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

/// Adds records to `name` and makes every name between it and the origin exist (empty
/// non-terminals), so that they answer NODATA instead of NXDOMAIN.
fn insert(
    names: &mut HashMap<LowerName, NameRecords>,
    origin: &LowerName,
    name: &Name,
    add: impl FnOnce(&mut NameRecords),
) {
    let name = LowerName::new(name);
    add(names.entry(name.clone()).or_default());
    let mut parent = name.base_name();
    while parent.num_labels() > origin.num_labels() {
        names.entry(parent.clone()).or_default();
        parent = parent.base_name();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("hivemind.").unwrap()
    }

    fn zone() -> DnsZone {
        DnsZone {
            generation: 7,
            services: vec![
                DnsService {
                    namespace: "default".into(),
                    app: "shop".into(),
                    name: "web".into(),
                    vip: Some(Ipv4Addr::new(10, 43, 0, 5)),
                    aliases: vec!["www".into()],
                    replicas: vec![Ipv4Addr::new(10, 42, 0, 2), Ipv4Addr::new(10, 42, 0, 3)],
                    ports: vec![("tcp".into(), 80), ("udp".into(), 53)],
                },
                DnsService {
                    namespace: "default".into(),
                    app: "shop".into(),
                    name: "db".into(),
                    vip: None,
                    aliases: vec![],
                    replicas: vec![Ipv4Addr::new(10, 42, 0, 9)],
                    ports: vec![],
                },
                DnsService {
                    namespace: "default".into(),
                    app: "shop".into(),
                    name: "cold".into(),
                    vip: None,
                    aliases: vec![],
                    replicas: vec![],
                    ports: vec![],
                },
                DnsService {
                    namespace: "default".into(),
                    app: "shop".into(),
                    name: "bad name!".into(),
                    ..DnsService::default()
                },
            ],
        }
    }

    fn ask(index: &ZoneIndex, name: &str, qtype: RecordType) -> Lookup {
        index.lookup(&LowerName::new(&Name::from_ascii(name).unwrap()), qtype)
    }

    /// The answer as comparable text: sorted `type data` strings, or the negative kind.
    fn render(lookup: Lookup) -> Vec<String> {
        match lookup {
            Lookup::Records {
                answers,
                additionals,
            } => {
                let mut lines: Vec<String> = answers
                    .iter()
                    .map(|r| format!("{} {}", r.record_type(), r.data()))
                    .collect();
                lines.sort();
                let mut extra: Vec<String> = additionals
                    .iter()
                    .map(|r| format!("+{} {} {}", r.name(), r.record_type(), r.data()))
                    .collect();
                extra.sort();
                lines.extend(extra);
                lines
            }
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn questions_and_answers() {
        let index = ZoneIndex::build(&origin(), &zone());
        let table: &[(&str, RecordType, &[&str])] = &[
            (
                "web.shop.default.hivemind.",
                RecordType::A,
                &["A 10.43.0.5"],
            ),
            (
                "WEB.Shop.DEFAULT.hivemind.",
                RecordType::A,
                &["A 10.43.0.5"],
            ),
            (
                "www.shop.default.hivemind.",
                RecordType::A,
                &["A 10.43.0.5"],
            ),
            (
                "tasks.web.shop.default.hivemind.",
                RecordType::A,
                &["A 10.42.0.2", "A 10.42.0.3"],
            ),
            (
                "tasks.www.shop.default.hivemind.",
                RecordType::A,
                &["A 10.42.0.2", "A 10.42.0.3"],
            ),
            ("db.shop.default.hivemind.", RecordType::A, &["A 10.42.0.9"]),
            ("cold.shop.default.hivemind.", RecordType::A, &["NoData"]),
            (
                "tasks.cold.shop.default.hivemind.",
                RecordType::A,
                &["NoData"],
            ),
            ("web.shop.default.hivemind.", RecordType::AAAA, &["NoData"]),
            (
                "_80._tcp.web.shop.default.hivemind.",
                RecordType::SRV,
                &[
                    "SRV 0 100 80 web.shop.default.hivemind.",
                    "+web.shop.default.hivemind. A 10.43.0.5",
                ],
            ),
            (
                "_53._udp.www.shop.default.hivemind.",
                RecordType::SRV,
                &[
                    "SRV 0 100 53 web.shop.default.hivemind.",
                    "+web.shop.default.hivemind. A 10.43.0.5",
                ],
            ),
            (
                "_80._udp.web.shop.default.hivemind.",
                RecordType::SRV,
                &["NxDomain"],
            ),
            (
                "_tcp.web.shop.default.hivemind.",
                RecordType::SRV,
                &["NoData"],
            ),
            ("shop.default.hivemind.", RecordType::A, &["NoData"]),
            ("default.hivemind.", RecordType::A, &["NoData"]),
            ("hivemind.", RecordType::A, &["NoData"]),
            (
                "hivemind.",
                RecordType::SOA,
                &["SOA ns.hivemind. hostmaster.hivemind. 7 60 60 3600 5"],
            ),
            ("api.shop.default.hivemind.", RecordType::A, &["NxDomain"]),
            ("web.other.default.hivemind.", RecordType::A, &["NxDomain"]),
            ("x.web.shop.default.hivemind.", RecordType::A, &["NxDomain"]),
            ("example.com.", RecordType::A, &["NotOurs"]),
            ("hivemind.example.com.", RecordType::A, &["NotOurs"]),
            (
                "web.shop.default.hivemind.",
                RecordType::ANY,
                &["A 10.43.0.5"],
            ),
        ];
        for (name, qtype, expected) in table {
            assert_eq!(
                render(ask(&index, name, *qtype)),
                expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{name} {qtype}"
            );
        }
    }

    #[test]
    fn records_carry_the_short_ttl_and_the_generation() {
        let index = ZoneIndex::build(&origin(), &zone());
        assert_eq!(index.generation(), 7);
        let Lookup::Records { answers, .. } =
            ask(&index, "tasks.web.shop.default.hivemind.", RecordType::A)
        else {
            panic!("expected records");
        };
        assert!(answers.iter().all(|r| r.ttl() == RECORD_TTL));
        assert_eq!(index.soa().ttl(), RECORD_TTL);
    }

    #[test]
    fn tasks_are_shuffled_across_answers() {
        let mut zone = zone();
        zone.services[0].replicas = (2..12).map(|i| Ipv4Addr::new(10, 42, 0, i)).collect();
        let index = ZoneIndex::build(&origin(), &zone);
        let firsts: std::collections::HashSet<String> = (0..200)
            .map(
                |_| match ask(&index, "tasks.web.shop.default.hivemind.", RecordType::A) {
                    Lookup::Records { answers, .. } => answers[0].data().to_string(),
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert!(firsts.len() > 1, "replica order never changed");
    }

    #[test]
    fn a_shared_alias_answers_with_both_services() {
        let mut zone = zone();
        zone.services[1].aliases = vec!["www".into()];
        let index = ZoneIndex::build(&origin(), &zone);
        assert_eq!(
            render(ask(&index, "www.shop.default.hivemind.", RecordType::A)),
            vec!["A 10.42.0.9", "A 10.43.0.5"]
        );
    }

    #[test]
    fn another_domain_is_honoured() {
        let origin = Name::from_ascii("cluster.local.").unwrap();
        let index = ZoneIndex::build(&origin, &zone());
        assert_eq!(
            render(ask(
                &index,
                "web.shop.default.cluster.local.",
                RecordType::A
            )),
            vec!["A 10.43.0.5"]
        );
        assert_eq!(
            render(ask(&index, "web.shop.default.hivemind.", RecordType::A)),
            vec!["NotOurs"]
        );
    }
}
