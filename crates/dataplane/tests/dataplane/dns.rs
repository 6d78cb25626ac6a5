//! System tests of the node DNS server on loopback: real sockets, a real client (hickory-proto
//! messages over UDP and TCP), a fake upstream resolver. No root and no bridge needed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hivemind_dataplane::dns::{DnsClient, DnsConfig, DnsServer, DnsService, DnsZone, RECORD_TTL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn zone(generation: u64, vip: Ipv4Addr) -> DnsZone {
    DnsZone {
        generation,
        services: vec![
            DnsService {
                namespace: "default".into(),
                app: "shop".into(),
                name: "web".into(),
                vip: Some(vip),
                aliases: vec!["frontend".into()],
                networks: vec!["front".into()],
                replicas: vec![Ipv4Addr::new(10, 42, 0, 2), Ipv4Addr::new(10, 42, 0, 3)],
                ports: vec![("tcp".into(), 80)],
            },
            DnsService {
                namespace: "default".into(),
                app: "shop".into(),
                name: "db".into(),
                vip: None,
                aliases: vec![],
                networks: vec!["back".into()],
                replicas: vec![Ipv4Addr::new(10, 42, 0, 7)],
                ports: vec![("tcp".into(), 5432)],
            },
        ],
        clients: BTreeMap::new(),
    }
}

async fn start(upstreams: Vec<SocketAddr>) -> DnsServer {
    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams,
        domain: "hivemind".into(),
    };
    DnsServer::start(config, zone(1, Ipv4Addr::new(10, 43, 0, 5)))
        .await
        .expect("dns server starts")
}

fn question(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    let message = question(name, qtype);
    socket.send(&message.to_vec().unwrap()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let answer = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(answer.id(), message.id());
    answer
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = question(name, qtype).to_vec().unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buffer = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buffer).await.unwrap();
    Message::from_vec(&buffer).unwrap()
}

/// The answer section's data as sorted strings.
fn data(answer: &Message) -> Vec<String> {
    let mut data: Vec<String> = answer
        .answers()
        .iter()
        .map(|r| r.data().to_string())
        .collect();
    data.sort();
    data
}

#[tokio::test]
async fn answers_a_tasks_srv_and_nxdomain_for_the_zone() {
    let server = start(vec![]).await;
    let addr = server.local_addrs()[0];

    let web = ask_udp(addr, "web.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(web.response_code(), ResponseCode::NoError);
    assert!(web.authoritative());
    assert_eq!(data(&web), ["10.43.0.5"]);
    assert!(web.answers().iter().all(|r| r.ttl() == RECORD_TTL));

    let alias = ask_udp(addr, "frontend.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&alias), ["10.43.0.5"]);

    let tasks = ask_udp(addr, "tasks.web.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&tasks), ["10.42.0.2", "10.42.0.3"]);

    let db = ask_udp(addr, "db.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(
        data(&db),
        ["10.42.0.7"],
        "no VIP: the name gives the replicas"
    );

    let srv = ask_udp(addr, "_80._tcp.web.shop.default.hivemind.", RecordType::SRV).await;
    assert_eq!(data(&srv), ["0 100 80 web.shop.default.hivemind."]);
    assert_eq!(
        srv.additionals().len(),
        1,
        "the target's address comes along"
    );

    let missing = ask_udp(addr, "nope.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(missing.response_code(), ResponseCode::NXDomain);
    assert!(missing.authoritative());
    assert!(missing.answers().is_empty());
    assert_eq!(missing.name_servers()[0].record_type(), RecordType::SOA);

    let nodata = ask_udp(addr, "web.shop.default.hivemind.", RecordType::AAAA).await;
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.answers().is_empty());

    let over_tcp = ask_tcp(addr, "web.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&over_tcp), ["10.43.0.5"]);

    server.stop().await;
}

#[tokio::test]
async fn a_zone_swap_is_visible_to_the_next_query() {
    let server = start(vec![]).await;
    let addr = server.local_addrs()[0];
    assert_eq!(server.zone_generation(), 1);

    server.set_zone(zone(2, Ipv4Addr::new(10, 43, 0, 99)));
    assert_eq!(server.zone_generation(), 2);
    let web = ask_udp(addr, "web.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&web), ["10.43.0.99"]);

    server.set_zone(DnsZone {
        generation: 3,
        services: vec![],
        clients: BTreeMap::new(),
    });
    let gone = ask_udp(addr, "web.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(gone.response_code(), ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn answers_depend_on_the_asking_replicas_networks() {
    let server = start(vec![]).await;
    let addr = server.local_addrs()[0];
    // Unknown source (this test, like the host): every name.
    let db = ask_udp(addr, "db.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&db), ["10.42.0.7"]);

    // The same source as a replica of shop on `front` only: `db` (on back) does not exist.
    let mut zone = zone(2, Ipv4Addr::new(10, 43, 0, 5));
    zone.clients.insert(
        Ipv4Addr::LOCALHOST,
        DnsClient {
            namespace: "default".into(),
            app: "shop".into(),
            networks: vec!["front".into()],
        },
    );
    server.set_zone(zone);
    let db = ask_udp(addr, "db.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(db.response_code(), ResponseCode::NXDomain);
    let web = ask_tcp(addr, "frontend.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&web), ["10.43.0.5"], "an alias on a shared network");
    server.stop().await;
}

/// A tiny upstream resolver: answers every question with `answer_ip`, after `delay`.
async fn fake_upstream(answer_ip: Ipv4Addr) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let Ok(question) = Message::from_vec(&buffer[..len]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(question.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_available(true)
                .add_queries(question.queries().to_vec());
            let name = question.queries()[0].name().clone();
            answer.add_answer(Record::from_rdata(name, 300, RData::A(A(answer_ip))));
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn other_names_are_forwarded_upstream() {
    // The first upstream swallows questions; the forwarder must move on to the second.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream = fake_upstream(Ipv4Addr::new(192, 0, 2, 1)).await;
    let server = start(vec![silent.local_addr().unwrap(), upstream]).await;
    let addr = server.local_addrs()[0];

    let answer = ask_udp(addr, "example.com.", RecordType::A).await;
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert!(!answer.authoritative());
    assert!(answer.recursion_available());
    assert_eq!(data(&answer), ["192.0.2.1"]);

    // Names under our domain are never forwarded, even when the zone does not know them.
    let ours = ask_udp(addr, "example.hivemind.", RecordType::A).await;
    assert_eq!(ours.response_code(), ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn a_replica_asks_short_names_and_everything_else_goes_upstream() {
    let upstream = fake_upstream(Ipv4Addr::new(192, 0, 2, 1)).await;
    let server = start(vec![upstream]).await;
    let addr = server.local_addrs()[0];
    // Unknown source: a short name is not ours, upstream answers it.
    let web = ask_udp(addr, "web.", RecordType::A).await;
    assert!(!web.authoritative());
    assert_eq!(data(&web), ["192.0.2.1"]);

    // The same source as a replica of shop on `front`.
    let mut zone = zone(2, Ipv4Addr::new(10, 43, 0, 5));
    zone.clients.insert(
        Ipv4Addr::LOCALHOST,
        DnsClient {
            namespace: "default".into(),
            app: "shop".into(),
            networks: vec!["front".into()],
        },
    );
    server.set_zone(zone);
    let expected: &[(&str, &[&str])] = &[
        ("web.", &["10.43.0.5"]),
        ("tasks.web.", &["10.42.0.2", "10.42.0.3"]),
        ("Web.Shop.", &["10.43.0.5"]),
        ("tasks.frontend.shop.", &["10.42.0.2", "10.42.0.3"]),
    ];
    for (name, ips) in expected {
        for answer in [
            ask_udp(addr, name, RecordType::A).await,
            ask_tcp(addr, name, RecordType::A).await,
        ] {
            assert_eq!(answer.response_code(), ResponseCode::NoError, "{name}");
            assert!(answer.authoritative(), "{name}");
            assert_eq!(data(&answer), *ips, "{name}");
            let owner = Name::from_ascii(name).unwrap();
            assert!(
                answer.answers().iter().all(|r| *r.name() == owner),
                "{name}"
            );
        }
    }
    let nodata = ask_udp(addr, "web.", RecordType::AAAA).await;
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.authoritative() && nodata.answers().is_empty());
    // `db` shares no network with the asker, `example.com` is no service: upstream's.
    for name in ["db.", "tasks.db.shop.", "example.com.", "web.example.com."] {
        let answer = ask_udp(addr, name, RecordType::A).await;
        assert!(!answer.authoritative(), "{name}");
        assert_eq!(data(&answer), ["192.0.2.1"], "{name}");
    }
    server.stop().await;
}

#[tokio::test]
async fn no_upstreams_gives_servfail() {
    let server = start(vec![]).await;
    let answer = ask_udp(server.local_addrs()[0], "example.com.", RecordType::A).await;
    assert_eq!(answer.response_code(), ResponseCode::ServFail);
    server.stop().await;
}

#[tokio::test]
async fn malformed_packets_do_not_hurt_the_server() {
    let server = start(vec![]).await;
    let addr = server.local_addrs()[0];
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let valid = question("web.shop.default.hivemind.", RecordType::A)
        .to_vec()
        .unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0; 12],
        vec![0xff; 12],
        vec![0xab; 600],
        valid[..valid.len() - 3].to_vec(),
        // A header that claims 65535 questions.
        [&valid[..4], &[0xff, 0xff], &valid[6..]].concat(),
    ];
    for packet in &garbage {
        socket.send_to(packet, addr).await.unwrap();
    }
    // Two questions in one message: FORMERR, not a crash.
    let mut two = question("web.shop.default.hivemind.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("db.shop.default.hivemind.").unwrap(),
        RecordType::A,
    ));
    socket.connect(addr).await.unwrap();
    socket.send(&two.to_vec().unwrap()).await.unwrap();

    let web = ask_udp(addr, "web.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&web), ["10.43.0.5"], "still answering after garbage");
    let over_tcp = ask_tcp(addr, "web.shop.default.hivemind.", RecordType::A).await;
    assert_eq!(data(&over_tcp), ["10.43.0.5"]);
    server.stop().await;
}

#[tokio::test]
async fn bind_conflict_is_a_typed_error() {
    let server = start(vec![]).await;
    let taken = server.local_addrs()[0];
    let config = DnsConfig {
        listen: vec![taken],
        upstreams: vec![],
        domain: "hivemind".into(),
    };
    let error = DnsServer::start(config, DnsZone::default())
        .await
        .expect_err("port in use");
    assert!(error.to_string().contains(&taken.to_string()), "{error}");
    server.stop().await;
}

/// Measures queries per second on loopback (printed, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_queries_per_second() {
    let server = start(vec![]).await;
    let addr = server.local_addrs()[0];
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 1_000;
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                socket.connect(addr).await.unwrap();
                let bytes = question("tasks.web.shop.default.hivemind.", RecordType::A)
                    .to_vec()
                    .unwrap();
                let mut buffer = vec![0u8; 1500];
                let mut answered = 0usize;
                for _ in 0..PER_CLIENT {
                    socket.send(&bytes).await.unwrap();
                    let reply =
                        tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buffer));
                    if let Ok(Ok(_)) = reply.await {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "dns: {answered} of {} queries answered in {elapsed:.2?} over {CLIENTS} clients: {:.0} q/s",
        CLIENTS * PER_CLIENT,
        answered as f64 / elapsed.as_secs_f64()
    );
    server.stop().await;
}
