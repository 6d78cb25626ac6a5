//! System tests of the ingress proxy on loopback: backends are small servers in the test that
//! answer their own name; clients are hyper and plain sockets. No root needed.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hivemind_dataplane::ingress::{
    HttpRule, Ingress, IngressConfig, IngressError, Proto, Route, RouteMode,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn ingress() -> Ingress {
    Ingress::new(IngressConfig { bind_ip: LOOPBACK })
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An address nothing listens on.
fn dead_addr() -> SocketAddr {
    SocketAddr::new(LOOPBACK, free_port())
}

/// An HTTP backend answering `NAME xff=.. proto=.. fhost=.. host=.. path=..`; `/slow` waits 1 s.
async fn http_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                hyper::service::service_fn(move |request: Request<Incoming>| async move {
                    if request.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let body = format!(
                        "{name} xff={} proto={} fhost={} host={} path={}",
                        header("x-forwarded-for"),
                        header("x-forwarded-proto"),
                        header("x-forwarded-host"),
                        header("host"),
                        request.uri().path()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// A TCP backend that reads until EOF (the client's half-close), then answers
/// `NAME:` + what it read and closes.
async fn tcp_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                stream.read_to_end(&mut received).await.unwrap();
                let mut answer = format!("{name}:").into_bytes();
                answer.extend(received);
                stream.write_all(&answer).await.unwrap();
            });
        }
    });
    addr
}

/// One GET over a fresh connection.
async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn http_route(port: u16, rules: Vec<HttpRule>) -> Route {
    Route {
        published: port,
        protocol: Proto::Tcp,
        mode: RouteMode::Http { rules },
        backends: vec![],
        proxy_protocol: false,
    }
}

fn rule(host: Option<&str>, prefix: &str, backends: Vec<SocketAddr>) -> HttpRule {
    HttpRule {
        host: host.map(str::to_owned),
        path_prefix: prefix.into(),
        backends,
    }
}

fn l4_route(port: u16, protocol: Proto, backends: Vec<SocketAddr>) -> Route {
    Route {
        published: port,
        protocol,
        mode: RouteMode::L4,
        backends,
        proxy_protocol: false,
    }
}

fn proxy(port: u16) -> SocketAddr {
    SocketAddr::new(LOOPBACK, port)
}

#[tokio::test]
async fn http_requests_spread_over_all_backends() {
    let backends = vec![
        http_backend("a").await,
        http_backend("b").await,
        http_backend("c").await,
    ];
    let ingress = ingress();
    let port = free_port();
    let errors = ingress
        .apply(vec![http_route(port, vec![rule(None, "/", backends)])])
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let (status, body) = get(proxy(port), "shop.example.com", "/").await;
        assert_eq!(status, StatusCode::OK);
        seen.insert(body.split(' ').next().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    ingress.shutdown().await;
}

#[tokio::test]
async fn http_routes_by_host_then_path_and_sets_forwarded_headers() {
    let shop = http_backend("shop").await;
    let api = http_backend("api").await;
    let other = http_backend("other").await;
    let ingress = ingress();
    let port = free_port();
    let rules = vec![
        rule(Some("shop.example.com"), "/", vec![shop]),
        rule(Some("shop.example.com"), "/api", vec![api]),
        rule(Some("other.example.com"), "/", vec![other]),
    ];
    assert!(ingress
        .apply(vec![http_route(port, rules)])
        .await
        .is_empty());

    let (_, body) = get(proxy(port), "Shop.Example.com:8080", "/cart").await;
    assert!(body.starts_with("shop "), "{body}");
    let (_, body) = get(proxy(port), "shop.example.com", "/api/orders").await;
    assert!(body.starts_with("api "), "{body}");
    let (_, body) = get(proxy(port), "shop.example.com", "/apiary").await;
    assert!(body.starts_with("shop "), "{body}");
    let (_, body) = get(proxy(port), "other.example.com", "/api").await;
    assert!(body.starts_with("other "), "{body}");
    let (status, _) = get(proxy(port), "unknown.example.com", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // What the backend sees: the client's address, how and for which host it came, the
    // original Host header and path.
    let (_, body) = get(proxy(port), "shop.example.com:8080", "/cart").await;
    assert_eq!(
        body,
        "shop xff=127.0.0.1 proto=http fhost=shop.example.com:8080 host=shop.example.com:8080 path=/cart"
    );
    ingress.shutdown().await;
}

#[tokio::test]
async fn a_backend_swap_lets_the_request_in_flight_finish() {
    let old = http_backend("old").await;
    let new = http_backend("new").await;
    let ingress = std::sync::Arc::new(ingress());
    let port = free_port();
    let route = |backend| http_route(port, vec![rule(None, "/", vec![backend])]);
    assert!(ingress.apply(vec![route(old)]).await.is_empty());

    let slow = tokio::spawn(get(proxy(port), "x", "/slow"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ingress.apply(vec![route(new)]).await.is_empty());
    let (_, body) = get(proxy(port), "x", "/").await;
    assert!(body.starts_with("new "), "{body}");

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("old "), "{body}");
    ingress.shutdown().await;
}

#[tokio::test]
async fn dead_backends_are_skipped_and_none_alive_gives_502() {
    let alive = http_backend("alive").await;
    let tcp_alive = tcp_backend("alive").await;
    let ingress = ingress();
    let (http_port, tcp_port, dead_port) = (free_port(), free_port(), free_port());
    let errors = ingress
        .apply(vec![
            http_route(
                http_port,
                vec![rule(None, "/", vec![dead_addr(), alive, dead_addr()])],
            ),
            l4_route(tcp_port, Proto::Tcp, vec![dead_addr(), tcp_alive]),
            http_route(dead_port, vec![rule(None, "/", vec![dead_addr()])]),
        ])
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    for _ in 0..6 {
        let (status, body) = get(proxy(http_port), "x", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("alive "), "{body}");

        let mut stream = TcpStream::connect(proxy(tcp_port)).await.unwrap();
        stream.write_all(b"hi").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "alive:hi");
    }
    let (status, body) = get(proxy(dead_port), "x", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "no backend answered\n");
    ingress.shutdown().await;
}

#[tokio::test]
async fn tcp_half_close_and_proxy_protocol() {
    // The backend reads the PROXY line, then echoes after the client's half-close.
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let backend = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        reader.get_mut().write_all(&rest).await.unwrap();
        line
    });
    let ingress = ingress();
    let port = free_port();
    let mut route = l4_route(port, Proto::Tcp, vec![backend]);
    route.proxy_protocol = true;
    assert!(ingress.apply(vec![route]).await.is_empty());

    let mut stream = TcpStream::connect(proxy(port)).await.unwrap();
    let client = stream.local_addr().unwrap();
    let payload = vec![7u8; 256 * 1024];
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    let line = server.await.unwrap();
    assert_eq!(
        line,
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r\n",
            client.port()
        )
    );
    ingress.shutdown().await;
}

#[tokio::test]
async fn a_removed_port_stops_accepting_but_open_connections_finish() {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let ingress = ingress();
    let port = free_port();
    assert!(ingress
        .apply(vec![l4_route(port, Proto::Tcp, vec![backend])])
        .await
        .is_empty());
    let mut open = TcpStream::connect(proxy(port)).await.unwrap();
    open.write_all(b"one").await.unwrap();
    let mut buffer = [0u8; 3];
    open.read_exact(&mut buffer).await.unwrap();

    assert!(ingress.apply(vec![]).await.is_empty());
    assert!(
        TcpStream::connect(proxy(port)).await.is_err(),
        "the port must be closed"
    );
    open.write_all(b"two").await.unwrap();
    open.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"two");

    // The port can be opened again at once.
    assert!(ingress
        .apply(vec![l4_route(port, Proto::Tcp, vec![backend])])
        .await
        .is_empty());
    ingress.shutdown().await;
}

#[tokio::test]
async fn a_port_in_use_is_reported_and_the_others_open() {
    let taken = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let backend = http_backend("a").await;
    let ingress = ingress();
    let free = free_port();
    let errors = ingress
        .apply(vec![
            l4_route(taken_port, Proto::Tcp, vec![backend]),
            l4_route(free, Proto::Tcp, vec![backend]),
            Route {
                mode: RouteMode::Http { rules: vec![] },
                ..l4_route(free, Proto::Udp, vec![])
            },
        ])
        .await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|(port, error)| *port == taken_port
        && matches!(error, IngressError::Bind { .. })
        && error.to_string().contains(&taken_port.to_string())));
    assert!(errors
        .iter()
        .any(|(port, error)| *port == free && matches!(error, IngressError::HttpOverUdp { .. })));
    let (status, _) = get(proxy(free), "x", "/").await;
    assert_eq!(status, StatusCode::OK);

    // Once the port is free, the next apply opens it.
    drop(taken);
    let errors = ingress
        .apply(vec![
            l4_route(taken_port, Proto::Tcp, vec![backend]),
            l4_route(free, Proto::Tcp, vec![backend]),
        ])
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    let (status, _) = get(proxy(taken_port), "x", "/").await;
    assert_eq!(status, StatusCode::OK);
    ingress.shutdown().await;
}

/// A UDP backend answering `NAME:` + each datagram.
async fn udp_backend(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let mut answer = format!("{name}:").into_bytes();
            answer.extend_from_slice(&buffer[..len]);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    addr
}

#[tokio::test]
async fn udp_datagrams_are_relayed_per_client_session() {
    let backends = vec![udp_backend("a").await, udp_backend("b").await];
    let ingress = ingress();
    let port = std::net::UdpSocket::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(ingress
        .apply(vec![l4_route(port, Proto::Udp, backends)])
        .await
        .is_empty());

    let mut names = HashSet::new();
    for client in 0..4 {
        let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        socket.connect(proxy(port)).await.unwrap();
        let mut first_name = None;
        for i in 0..3 {
            let payload = format!("c{client}-{i}");
            socket.send(payload.as_bytes()).await.unwrap();
            let mut buffer = [0u8; 64];
            let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer))
                .await
                .expect("a reply through the proxy")
                .unwrap();
            let reply = String::from_utf8_lossy(&buffer[..len]).into_owned();
            let (name, echoed) = reply.split_once(':').unwrap();
            assert_eq!(echoed, payload);
            // A client's session sticks to one backend.
            assert_eq!(*first_name.get_or_insert(name.to_owned()), name);
        }
        names.insert(first_name.unwrap());
    }
    assert_eq!(names.len(), 2, "sessions spread over the backends");

    // After a swap, a client whose backend left is moved to a current one.
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    socket.connect(proxy(port)).await.unwrap();
    socket.send(b"before").await.unwrap();
    let mut buffer = [0u8; 64];
    socket.recv(&mut buffer).await.unwrap();
    let replacement = udp_backend("c").await;
    assert!(ingress
        .apply(vec![l4_route(port, Proto::Udp, vec![replacement])])
        .await
        .is_empty());
    socket.send(b"after").await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer))
        .await
        .expect("a reply from the new backend")
        .unwrap();
    assert_eq!(&buffer[..len], b"c:after");
    ingress.shutdown().await;
}

/// Requests per second and p99 latency of `total` GETs over `connections` keep-alive
/// connections to `addr`.
async fn load(addr: SocketAddr, connections: usize, total: usize) -> (f64, Duration) {
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let mut latencies = Vec::with_capacity(total / connections);
                for _ in 0..total / connections {
                    let request = Request::get("/")
                        .header("host", "bench")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let sent = Instant::now();
                    let response = sender.send_request(request).await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    response.into_body().collect().await.unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    (latencies.len() as f64 / elapsed.as_secs_f64(), p99)
}

/// Measures the HTTP proxy against going direct (printed, never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_http_proxy_against_direct() {
    let backend = http_backend("bench").await;
    let ingress = ingress();
    let port = free_port();
    assert!(ingress
        .apply(vec![http_route(port, vec![rule(None, "/", vec![backend])])])
        .await
        .is_empty());
    let (direct_rps, direct_p99) = load(backend, 8, 2_000).await;
    let (proxy_rps, proxy_p99) = load(proxy(port), 8, 2_000).await;
    println!(
        "http direct: {direct_rps:.0} req/s, p99 {direct_p99:.2?}; \
         through the ingress: {proxy_rps:.0} req/s, p99 {proxy_p99:.2?} \
         (2,000 requests over 8 connections)"
    );
    ingress.shutdown().await;
}
