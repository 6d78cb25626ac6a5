//! The API end to end: the real server on a loopback port with a temp SQLite store, driven by the
//! real `hivemind-client` (and by raw HTTP for bodies the typed client cannot send).

use std::time::{Duration, Instant};

use futures::StreamExt;
use hivemind_api::{router, serve, ApiConfig};
use hivemind_client::wire::{DeployRequest, ErrorBody};
use hivemind_client::Client;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Meta, Replica};
use tokio::sync::oneshot;

/// Deploy, scale, delete, tokens, malformed and odd bodies.
#[path = "api/requests.rs"]
mod requests;

/// Assignments, reports, and the logs and exec proxy.
#[path = "api/nodes.rs"]
mod nodes;

/// Recorded events and the change stream.
#[path = "api/events.rs"]
mod events;

/// Join tokens, node credentials, what each principal may do, what agents are shown.
#[path = "api/identities.rs"]
mod identities;

/// Misuse that must not wedge the server: floods, hung agents, requests over the caps.
#[path = "api/misuse.rs"]
mod misuse;

/// Secrets and configs: values only to their node, never in an answer.
#[path = "api/secrets.rs"]
mod secrets;

/// Hostile values in every parameter and path segment of every route.
#[path = "api/hostile.rs"]
mod hostile;

const TOKEN: &str = "test-token-0123456789";

const SHOP: &str = "name: shop
services:
  web:
    image: busybox:1
    deploy: {replicas: 2}
  db:
    image: busybox:2
  agent:
    image: busybox:3
    deploy: {mode: global}
";

/// A server on 127.0.0.1:0 that stops when dropped.
struct TestServer {
    store: Store,
    client: Client,
    base: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(
            store.clone(),
            ApiConfig {
                tokens: vec!["other-token".into(), TOKEN.into()],
                ..Default::default()
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));
        TestServer {
            store,
            client: Client::new(base.clone(), TOKEN),
            base,
            http: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        }
    }

    /// A raw request with the token; returns the status and the error body, if any.
    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Option<ErrorBody>) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).ok())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn deploy_req(compose: &str) -> DeployRequest {
    DeployRequest {
        compose: compose.to_string(),
        ..Default::default()
    }
}

fn replica(id: &str, node: &str) -> Replica {
    Replica {
        id: id.into(),
        namespace: "default".into(),
        app: "shop".into(),
        service: "web".into(),
        node: node.into(),
        spec: Default::default(),
        revision_hash: String::new(),
        meta: Meta::default(),
    }
}

async fn put_replica(store: &Store, r: &Replica) -> u64 {
    store
        .txn(vec![Op::put(Kind::Replica, r.id.clone(), r, Expect::Any)])
        .await
        .unwrap()
}
#[tokio::test]
async fn openapi_document_lists_the_paths() {
    let s = TestServer::start().await;
    let resp = s
        .http
        .get(format!("{}/api/v1/openapi.json", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/api/v1/apps",
        "/api/v1/apps/{name}",
        "/api/v1/services",
        "/api/v1/services/{app}/{name}",
        "/api/v1/services/{app}/{name}/scale",
        "/api/v1/replicas",
        "/api/v1/nodes",
        "/api/v1/nodes/{node}/assignment",
        "/api/v1/nodes/{node}/report",
        "/api/v1/events",
        "/api/v1/tokens",
        "/api/v1/tokens/{token}",
        "/api/v1/nodes/{node}/lease",
        "/api/v1/nodes/{node}",
        "/api/v1/nodes/{node}/join",
        "/api/v1/secrets",
        "/api/v1/secrets/{secret}",
        "/api/v1/configs",
        "/api/v1/configs/{config}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    // One route, two views: the recorded list (JSON) and the change stream (SSE).
    let content = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"];
    for kind in ["application/json", "text/event-stream"] {
        assert!(content.get(kind).is_some(), "{kind} missing: {content}");
    }
    let params = doc["paths"]["/api/v1/events"]["get"]["parameters"].to_string();
    for name in ["since", "app", "service", "replica", "type", "limit"] {
        assert!(
            params.contains(&format!("\"{name}\"")),
            "{name} missing: {params}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for t in [
        "DeployRequest",
        "DeployResponse",
        "ScaleRequest",
        "ErrorBody",
        "ReplicaView",
        "TokenCreated",
        "JoinResponse",
    ] {
        assert!(schemas.contains_key(t), "{t}");
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_for_open_streams_and_polls() {
    let mut s = TestServer::start().await;
    let mut events = Box::pin(s.client.events(None).await.unwrap());
    let a = s
        .client
        .assignment("n1", None, Duration::from_secs(1))
        .await
        .unwrap();
    let poll = {
        let client = s.client.clone();
        tokio::spawn(async move {
            client
                .assignment("n1", Some(a.generation), Duration::from_secs(60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    s.stop.take().unwrap().send(()).unwrap();
    let served = s.served.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("serve returns within the grace period")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(6));
    // The open stream ends (or fails) instead of hanging.
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    // The poll is answered at once, as on a timeout.
    tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll ends on shutdown")
        .unwrap()
        .unwrap();
}
