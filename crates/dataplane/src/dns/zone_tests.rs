//! Table tests of the zone: names, answers, TTLs, shuffling, aliases, and each client's view.

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
                networks: vec![],
                replicas: vec![Ipv4Addr::new(10, 42, 0, 2), Ipv4Addr::new(10, 42, 0, 3)],
                ports: vec![("tcp".into(), 80), ("udp".into(), 53)],
            },
            DnsService {
                namespace: "default".into(),
                app: "shop".into(),
                name: "db".into(),
                vip: None,
                aliases: vec![],
                networks: vec![],
                replicas: vec![Ipv4Addr::new(10, 42, 0, 9)],
                ports: vec![],
            },
            DnsService {
                namespace: "default".into(),
                app: "shop".into(),
                name: "cold".into(),
                vip: None,
                aliases: vec![],
                networks: vec![],
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
        clients: BTreeMap::new(),
    }
}

fn ask(index: &ZoneIndex, name: &str, qtype: RecordType) -> Lookup {
    ask_from(index, None, name, qtype)
}

fn ask_from(index: &ZoneIndex, client: Option<&str>, name: &str, qtype: RecordType) -> Lookup {
    let client = client.map(|c| c.parse().unwrap());
    index.lookup(
        &LowerName::new(&Name::from_ascii(name).unwrap()),
        qtype,
        client,
    )
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

/// App `shop` with `web` on front, `api` on front and back (alias `svc` there), `db` on back;
/// app `blog` with `web` on default. Every replica is a known client.
fn networked_zone() -> DnsZone {
    let service =
        |app: &str, name: &str, vip: u8, replica: u8, networks: &[&str], aliases: &[&str]| {
            DnsService {
                namespace: "default".into(),
                app: app.into(),
                name: name.into(),
                vip: Some(Ipv4Addr::new(10, 43, 0, vip)),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                networks: networks.iter().map(|n| n.to_string()).collect(),
                replicas: vec![Ipv4Addr::new(10, 42, 0, replica)],
                ports: vec![("tcp".into(), 80)],
            }
        };
    let services = vec![
        service("shop", "web", 2, 2, &["front"], &[]),
        service("shop", "api", 3, 3, &["back", "front"], &["svc"]),
        service("shop", "db", 4, 4, &["back"], &["database"]),
        service("blog", "web", 5, 5, &[], &[]),
    ];
    let clients = services
        .iter()
        .map(|s| {
            (
                s.replicas[0],
                DnsClient {
                    namespace: s.namespace.clone(),
                    app: s.app.clone(),
                    networks: s.networks.clone(),
                },
            )
        })
        .collect();
    DnsZone {
        generation: 1,
        services,
        clients,
    }
}

#[test]
fn each_client_sees_its_networks_other_apps_and_nothing_else() {
    let index = ZoneIndex::build(&origin(), &networked_zone());
    let (web, api, db, blog) = (
        Some("10.42.0.2"),
        Some("10.42.0.3"),
        Some("10.42.0.4"),
        Some("10.42.0.5"),
    );
    let a = RecordType::A;
    let table: &[(Option<&str>, &str, RecordType, &[&str])] = &[
        // Same network.
        (web, "api.shop.default.hivemind.", a, &["A 10.43.0.3"]),
        (db, "api.shop.default.hivemind.", a, &["A 10.43.0.3"]),
        (api, "web.shop.default.hivemind.", a, &["A 10.43.0.2"]),
        (api, "db.shop.default.hivemind.", a, &["A 10.43.0.4"]),
        // Aliases resolve like the name.
        (db, "svc.shop.default.hivemind.", a, &["A 10.43.0.3"]),
        (api, "database.shop.default.hivemind.", a, &["A 10.43.0.4"]),
        (
            api,
            "tasks.database.shop.default.hivemind.",
            a,
            &["A 10.42.0.4"],
        ),
        // No shared network: as if the service did not exist, with all its names.
        (web, "db.shop.default.hivemind.", a, &["NxDomain"]),
        (web, "database.shop.default.hivemind.", a, &["NxDomain"]),
        (web, "tasks.db.shop.default.hivemind.", a, &["NxDomain"]),
        (
            web,
            "_80._tcp.db.shop.default.hivemind.",
            RecordType::SRV,
            &["NxDomain"],
        ),
        (
            web,
            "_tcp.db.shop.default.hivemind.",
            RecordType::SRV,
            &["NxDomain"],
        ),
        (db, "web.shop.default.hivemind.", a, &["NxDomain"]),
        // The app's own level stays: it is shared by every service.
        (web, "shop.default.hivemind.", a, &["NoData"]),
        // Another app resolves whatever its networks (reachability is the firewall's).
        (db, "web.blog.default.hivemind.", a, &["A 10.43.0.5"]),
        (blog, "db.shop.default.hivemind.", a, &["A 10.43.0.4"]),
        // Blog's own service on `default`, its client on `default` (no networks given).
        (blog, "web.blog.default.hivemind.", a, &["A 10.43.0.5"]),
        // Unknown source addresses (the host, tests) see everything.
        (None, "db.shop.default.hivemind.", a, &["A 10.43.0.4"]),
        (
            Some("10.42.0.99"),
            "db.shop.default.hivemind.",
            a,
            &["A 10.43.0.4"],
        ),
        (
            api,
            "_80._tcp.svc.shop.default.hivemind.",
            RecordType::SRV,
            &[
                "SRV 0 100 80 api.shop.default.hivemind.",
                "+api.shop.default.hivemind. A 10.43.0.3",
            ],
        ),
    ];
    for (client, name, qtype, expected) in table {
        assert_eq!(
            render(ask_from(&index, *client, name, *qtype)),
            expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{name} {qtype} from {client:?}"
        );
    }
}

#[test]
fn a_shared_alias_answers_with_the_visible_services_only() {
    let mut zone = networked_zone();
    // `store` is an alias of web (front) and db (back).
    zone.services[0].aliases = vec!["store".into()];
    zone.services[2].aliases = vec!["store".into()];
    let index = ZoneIndex::build(&origin(), &zone);
    let name = "store.shop.default.hivemind.";
    assert_eq!(
        render(ask_from(&index, Some("10.42.0.2"), name, RecordType::A)),
        ["A 10.43.0.2"]
    );
    assert_eq!(
        render(ask_from(&index, Some("10.42.0.4"), name, RecordType::A)),
        ["A 10.43.0.4"]
    );
    assert_eq!(
        render(ask_from(&index, Some("10.42.0.3"), name, RecordType::A)),
        ["A 10.43.0.2", "A 10.43.0.4"]
    );
}

/// `networked_zone` plus app `blog`'s own `api`, so that a short name means different
/// services to different apps, and a service named `shop` in `shop`.
fn short_name_zone() -> DnsZone {
    let mut zone = networked_zone();
    let mut blog_api = zone.services[3].clone();
    blog_api.name = "api".into();
    blog_api.vip = Some(Ipv4Addr::new(10, 43, 0, 6));
    blog_api.replicas = vec![Ipv4Addr::new(10, 42, 0, 6)];
    zone.services.push(blog_api);
    zone.services.push(DnsService {
        namespace: "default".into(),
        app: "shop".into(),
        name: "shop".into(),
        vip: None,
        aliases: vec![],
        networks: vec!["front".into()],
        replicas: vec![Ipv4Addr::new(10, 42, 0, 8)],
        ports: vec![],
    });
    zone
}

#[test]
fn short_names_answer_like_the_full_names_of_the_askers_app() {
    let index = ZoneIndex::build(&origin(), &short_name_zone());
    let (web, api, db, blog) = (
        Some("10.42.0.2"),
        Some("10.42.0.3"),
        Some("10.42.0.4"),
        Some("10.42.0.5"),
    );
    let (a, srv) = (RecordType::A, RecordType::SRV);
    let table: &[(Option<&str>, &str, RecordType, &[&str])] = &[
        // Bare service name: the VIP; the asker's app decides which `api`.
        (web, "api.", a, &["A 10.43.0.3"]),
        (blog, "api.", a, &["A 10.43.0.6"]),
        (api, "web.", a, &["A 10.43.0.2"]),
        // `tasks.`: the replicas.
        (web, "tasks.api.", a, &["A 10.42.0.3"]),
        (blog, "tasks.api.", a, &["A 10.42.0.6"]),
        // App-qualified, with and without `tasks.`.
        (web, "api.shop.", a, &["A 10.43.0.3"]),
        (web, "tasks.api.shop.", a, &["A 10.42.0.3"]),
        (blog, "web.blog.", a, &["A 10.43.0.5"]),
        // Aliases, like the full names.
        (db, "svc.", a, &["A 10.43.0.3"]),
        (db, "tasks.svc.shop.", a, &["A 10.42.0.3"]),
        // Case-insensitive, with or without the trailing dot.
        (web, "API.", a, &["A 10.43.0.3"]),
        (web, "Tasks.Api.SHOP.", a, &["A 10.42.0.3"]),
        (web, "api", a, &["A 10.43.0.3"]),
        (web, "tasks.api.shop", a, &["A 10.42.0.3"]),
        // SRV, its target the canonical full name.
        (
            web,
            "_80._tcp.api.",
            srv,
            &[
                "SRV 0 100 80 api.shop.default.hivemind.",
                "+api.shop.default.hivemind. A 10.43.0.3",
            ],
        ),
        (
            web,
            "_80._tcp.api.shop.",
            srv,
            &[
                "SRV 0 100 80 api.shop.default.hivemind.",
                "+api.shop.default.hivemind. A 10.43.0.3",
            ],
        ),
        // A name that exists without the asked type is NODATA, not upstream's: a resolver
        // asking A and AAAA at once must not get NXDOMAIN for one of them.
        (web, "api.", RecordType::AAAA, &["NoData"]),
        (web, "_tcp.api.", srv, &["NoData"]),
        // Another app's service is no short name; its app-qualified form is upstream's too
        // (the search list still completes it).
        (blog, "db.", a, &["NotOurs"]),
        (web, "web.blog.", a, &["NotOurs"]),
        (web, "tasks.web.blog.", a, &["NotOurs"]),
        // A service of the asker's app on no shared network: as if it did not exist.
        (web, "db.", a, &["NotOurs"]),
        (web, "tasks.db.shop.", a, &["NotOurs"]),
        // Names no service owns stay upstream's: the namespace, anything else (the app alone:
        // see the regression test below; here `shop` is also a service).
        (web, "default.", a, &["NotOurs"]),
        (web, "default.shop.", a, &["NotOurs"]),
        (web, "nothere.", a, &["NotOurs"]),
        (web, "x.api.", a, &["NotOurs"]),
        (web, "example.com.", a, &["NotOurs"]),
        (web, "api.example.com.", a, &["NotOurs"]),
        // The service `shop`: `tasks.shop` is its replicas (the app level comes first); `shop`
        // alone is the service, `shop.shop` too.
        (web, "shop.", a, &["A 10.42.0.8"]),
        (web, "shop.shop.", a, &["A 10.42.0.8"]),
        (web, "tasks.shop.", a, &["A 10.42.0.8"]),
        // Unknown askers (the host, other addresses): full names only, as before.
        (None, "api.", a, &["NotOurs"]),
        (None, "tasks.api.shop.", a, &["NotOurs"]),
        (Some("10.42.0.99"), "api.", a, &["NotOurs"]),
        (None, "api.shop.default.hivemind.", a, &["A 10.43.0.3"]),
        // Full names are unchanged for known askers.
        (web, "api.shop.default.hivemind.", a, &["A 10.43.0.3"]),
        (web, "db.shop.default.hivemind.", a, &["NxDomain"]),
    ];
    for (client, name, qtype, expected) in table {
        assert_eq!(
            render(ask_from(&index, *client, name, *qtype)),
            expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{name} {qtype} from {client:?}"
        );
    }
}

#[test]
fn short_name_answers_carry_the_name_as_asked() {
    let index = ZoneIndex::build(&origin(), &short_name_zone());
    let Lookup::Records { answers, .. } =
        ask_from(&index, Some("10.42.0.2"), "Tasks.Api.", RecordType::A)
    else {
        panic!("expected records");
    };
    let owners: Vec<String> = answers.iter().map(|r| r.name().to_string()).collect();
    assert_eq!(owners, ["tasks.api."]);
    assert!(answers.iter().all(|r| r.ttl() == RECORD_TTL));
}

#[test]
fn a_bare_shop_from_app_shop_without_such_a_service_is_upstreams() {
    // Regression: `shop` completes to `shop.default.hivemind.` through the app-qualified form;
    // that name exists (NODATA) but no service owns it, so it must not shadow upstream.
    let index = ZoneIndex::build(&origin(), &networked_zone());
    assert_eq!(
        render(ask_from(&index, Some("10.42.0.2"), "shop.", RecordType::A)),
        ["NotOurs"]
    );
}

#[test]
fn attached_replicas_are_clients_before_they_are_endpoints() {
    let mut zone = networked_zone();
    let shop = |networks: &[&str]| DnsClient {
        namespace: "default".into(),
        app: "shop".into(),
        networks: networks.iter().map(|n| n.to_string()).collect(),
    };
    // 10.42.0.7 is no endpoint yet; 10.42.0.5 was blog's and is now attached to shop.
    zone.add_clients([
        (Ipv4Addr::new(10, 42, 0, 7), shop(&["front"])),
        (Ipv4Addr::new(10, 42, 0, 5), shop(&["back"])),
    ]);
    let index = ZoneIndex::build(&origin(), &zone);
    let ask = |client, name| render(ask_from(&index, Some(client), name, RecordType::A));
    assert_eq!(ask("10.42.0.7", "web."), ["A 10.43.0.2"]);
    assert_eq!(ask("10.42.0.5", "db."), ["A 10.43.0.4"]);
    assert_eq!(
        ask("10.42.0.5", "web."),
        ["NotOurs"],
        "shop's web is on front only"
    );
}
