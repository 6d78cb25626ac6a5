//! Misuse that must never wedge the server, each found by a probe of a running cluster: idle
//! connection floods, a hung agent, `since` past the head, requests over the admission caps.

use std::time::{Duration, Instant};

use hivemind_api::{router, serve_with, AgentTimeout, ApiConfig, ServeConfig};
use hivemind_client::wire::ErrorBody;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Meta, Node, NodeProblem, NodeReport, NodeState};
use tokio::sync::oneshot;

use super::{put_replica, replica, TOKEN};

/// A server with its own serve settings and agent timeout; stops when `_stop` drops.
struct Server {
    store: Store,
    base: String,
    addr: std::net::SocketAddr,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(config: ServeConfig, agent_timeout: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        store.clone(),
        ApiConfig {
            tokens: vec![TOKEN.into()],
            ..Default::default()
        },
    )
    .layer(axum::Extension(AgentTimeout(agent_timeout)));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(listener, app, config, async {
        let _ = stopped.await;
    }));
    Server {
        store,
        base: format!("http://{addr}"),
        addr,
        http: reqwest::Client::new(),
        _stop: stop,
        _dir: dir,
    }
}

impl Server {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Option<ErrorBody>) {
        let resp = req.bearer_auth(TOKEN).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).ok())
    }

    async fn get(&self, path: &str) -> (u16, Option<ErrorBody>) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }
}

/// Raises this process's open files limit to `want` (the hard one too: the test runs as root
/// on the CI machines); returns what it got.
fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|c| c >= want) {
        return want;
    }
    let wanted = Rlimit {
        current: Some(want),
        maximum: Some(want.max(now.maximum.unwrap_or(0))),
    };
    if setrlimit(Resource::Nofile, wanted).is_err() {
        // Not root: the soft limit can still go up to the hard one.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_20000_do_not_stop_the_api_or_healthz() {
    // The test holds the clients' 20,000 sockets and the server's in one process.
    let limit = raise_nofile(48_000);
    let idle: usize = if limit >= 48_000 {
        20_000
    } else {
        // Without the right to raise the hard limit, flood with what fits (printed).
        ((limit.saturating_sub(1_000)) / 2) as usize
    };
    println!("open files limit {limit}: flooding with {idle} idle connections");
    let cap = idle / 4;
    let s = start(
        ServeConfig {
            max_connections: cap,
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .await;
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        match tokio::net::TcpStream::connect(s.addr).await {
            Ok(c) => held.push(c),
            Err(e) => panic!("connect {} failed: {e}", held.len()),
        }
    }
    // A fresh client (its own connection) is answered at once: an idle connection made room.
    let t = Instant::now();
    let fresh = reqwest::Client::new();
    for _ in 0..20 {
        let resp = fresh
            .get(format!("{}/healthz", s.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("healthz answers under the flood");
        assert_eq!(resp.status(), 200);
        let (status, _) = s
            .send(
                reqwest::Client::new()
                    .get(format!("{}/api/v1/nodes", s.base))
                    .timeout(Duration::from_secs(5)),
            )
            .await;
        assert_eq!(status, 200);
    }
    println!(
        "40 requests under {idle} idle connections in {:?}",
        t.elapsed()
    );
    drop(held);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_when_all_are_busy() {
    let s = start(
        ServeConfig {
            max_connections: 2,
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .await;
    // Two long polls keep both connections busy.
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let url = format!(
                "{}/api/v1/nodes/n1/assignment?after=999&timeout_ms=3000",
                s.base
            );
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "closed at once");
    for poll in polls {
        assert_eq!(poll.await.unwrap().unwrap(), 200, "busy ones are never cut");
    }
    // Once they are done, there is room again.
    assert_eq!(s.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn header_read_timeout_closes_a_connection_that_sends_nothing() {
    use tokio::io::AsyncReadExt;
    let s = start(
        ServeConfig {
            header_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("the server closes the idle connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn hung_agent_hangs_the_proxied_api_call() {
    let s = start(ServeConfig::default(), Duration::from_millis(500)).await;
    // An "agent" that accepts connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = hung.accept().await {
            held.push(c);
        }
    });
    let node = Node {
        name: "n1".into(),
        address: "127.0.0.1".into(),
        state: NodeState::Ready,
        last_seen: 0,
        subnet: None,
        agent_url: Some(hung_url),
        problems: Vec::new(),
        meta: Meta::default(),
    };
    s.store
        .txn(vec![Op::put(Kind::Node, "n1", &node, Expect::Any)])
        .await
        .unwrap();
    put_replica(&s.store, &replica("web-aaaaa", "n1")).await;
    for (path, post) in [
        ("/api/v1/replicas/web-aaaaa/logs", false),
        ("/api/v1/replicas/web-aaaaa/exec", true),
    ] {
        let t = Instant::now();
        let url = format!("{}{path}", s.base);
        let req = if post {
            s.http.post(url).json(&serde_json::json!({"cmd": ["true"]}))
        } else {
            s.http.get(url)
        };
        let (status, body) = s.send(req.timeout(Duration::from_secs(10))).await;
        assert_eq!(status, 504, "{path}: {body:?}");
        let error = body.unwrap().error;
        assert_eq!(error.code, "timeout");
        assert!(error.message.contains("node n1"), "{}", error.message);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn events_since_u64_max_wraps_and_replays_the_whole_log() {
    let s = start(ServeConfig::default(), Duration::from_secs(5)).await;
    put_replica(&s.store, &replica("web-aaaaa", "n1")).await;
    let head = s.store.revision().await.unwrap();
    for since in [
        "18446744073709551615".to_string(),
        "9223372036854775808".to_string(),
        (head + 1).to_string(),
    ] {
        let (status, body) = s.get(&format!("/api/v1/events?since={since}")).await;
        assert_eq!(status, 400, "since={since}");
        assert_eq!(body.unwrap().error.field.as_deref(), Some("since"));
    }
    // The head itself is fine: a stream of what comes next.
    let resp = s
        .http
        .get(format!("{}/api/v1/events?since={head}", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn deploy_publishing_25000_ports_is_refused_and_the_server_keeps_serving() {
    let s = start(ServeConfig::default(), Duration::from_secs(5)).await;
    let compose = "name: shop\nservices:\n  web:\n    image: busybox\n    ports: [\"30000-54999:30000-54999\"]\n";
    let (status, body) = s
        .send(
            s.http
                .post(format!("{}/api/v1/apps", s.base))
                .json(&serde_json::json!({ "compose": compose })),
        )
        .await;
    assert_eq!(status, 422, "{body:?}");
    let error = body.unwrap().error;
    assert_eq!(
        error.field.as_deref(),
        Some("services.web.ports"),
        "{}",
        error.message
    );
    assert!(error.fix.is_some());
    assert!(s.store.keys(Kind::Service, "").await.unwrap().is_empty());
    assert_eq!(s.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn deploy_of_10000_services_is_refused_and_nodes_keep_answering() {
    let s = start(ServeConfig::default(), Duration::from_secs(5)).await;
    let mut compose = String::from("name: big\nservices:\n");
    for i in 0..10_000 {
        compose.push_str(&format!("  s{i}:\n    image: busybox\n"));
    }
    let deploy = {
        let req = s
            .http
            .post(format!("{}/api/v1/apps", s.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "compose": compose }));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    // Meanwhile the node list answers (the bound is generous: timing is measured in benches/).
    while !deploy.is_finished() {
        let t = Instant::now();
        assert_eq!(s.get("/api/v1/nodes").await.0, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(deploy.await.unwrap(), 422);
}

#[tokio::test]
async fn report_with_5000_node_problems_wipes_the_event_history() {
    let s = start(ServeConfig::default(), Duration::from_secs(5)).await;
    let report = NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        generation: 1,
        replicas: Vec::new(),
        problems: (0..5_000)
            .map(|i| NodeProblem {
                reason: "PortUnavailable".into(),
                message: format!("published port {i}/tcp is not served"),
            })
            .collect(),
    };
    let (status, body) = s
        .send(
            s.http
                .put(format!("{}/api/v1/nodes/n1/report", s.base))
                .json(&report),
        )
        .await;
    assert_eq!(status, 422, "{body:?}");
    assert_eq!(body.unwrap().error.field.as_deref(), Some("problems"));
    assert!(s.store.keys(Kind::Event, "").await.unwrap().is_empty());
}
