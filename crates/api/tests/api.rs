//! The API end to end: the real server on a loopback port with a temp SQLite store, driven by the
//! real `hivemind-client` (and by raw HTTP for bodies the typed client cannot send).

use std::time::{Duration, Instant};

use futures::StreamExt;
use hivemind_api::{router, serve, ApiConfig};
use hivemind_client::wire::{
    ChangeEvent, ChangeOp, DeployRequest, ErrorBody, EventFilter, ReplicaFilter,
};
use hivemind_client::{Client, ClientError, Event};
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{
    EventType, ExitRecord, Kind, Meta, NodeReport, ObservedReplica, Replica, ReplicaState,
};
use tokio::sync::oneshot;

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

fn put_replica(store: &Store, r: &Replica) -> u64 {
    store
        .txn(vec![Op::put(Kind::Replica, r.id.clone(), r, Expect::Any)])
        .unwrap()
}

#[tokio::test]
async fn deploy_list_redeploy_scale_and_delete() {
    let s = TestServer::start().await;
    s.client.healthz().await.unwrap();
    let out = s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    assert_eq!(out.app.services, ["web", "db", "agent"]);
    assert_eq!(out.revision, s.store.revision());

    let apps = s.client.apps().await.unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(s.client.app("shop").await.unwrap().source, SHOP);
    let names: Vec<_> = s
        .client
        .services(Some("shop"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["agent", "db", "web"]);

    // Re-deploy a changed file: web changes, db goes (with its replicas), agent stays.
    put_replica(
        &s.store,
        &Replica {
            service: "db".into(),
            ..replica("db-aaaaa", "n1")
        },
    );
    let v2 = SHOP
        .replace("busybox:1", "busybox:9")
        .replace("  db:\n    image: busybox:2\n", "");
    let out = s.client.deploy(&deploy_req(&v2)).await.unwrap();
    assert_eq!(out.app.services, ["web", "agent"]);
    assert_eq!(
        s.client.service("shop", "web").await.unwrap().spec.image,
        "busybox:9"
    );
    assert!(s
        .client
        .service("shop", "db")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(s
        .store
        .get::<Replica>(Kind::Replica, "db-aaaaa")
        .unwrap()
        .is_none());

    // Scale by bare name, then by app/name.
    let web = s.client.scale(None, "web", 3).await.unwrap();
    assert_eq!(web.spec.replicas, 3);
    let web = s.client.scale(None, "shop/web", 4).await.unwrap();
    assert_eq!(web.spec.replicas, 4);

    // Stale revisions: 409, nothing written.
    let rev = s.store.revision();
    let err = s
        .client
        .scale_at("shop", "web", 5, Some(web.meta.revision - 1))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(err.fix().is_some());
    let mut stale = deploy_req(SHOP);
    stale.revision = Some(1);
    assert!(s.client.deploy(&stale).await.unwrap_err().is_conflict());
    assert_eq!(s.store.revision(), rev);

    // A bare name in two apps is ambiguous.
    let mut other = deploy_req(SHOP);
    other.name = Some("blog".into());
    s.client.deploy(&other).await.unwrap();
    match s.client.scale(None, "web", 2).await.unwrap_err() {
        ClientError::AmbiguousService { apps, .. } => assert_eq!(apps, ["blog", "shop"]),
        e => panic!("{e}"),
    }

    // Namespaces are separate.
    let prod = s.client.clone().with_namespace("prod");
    assert!(prod.apps().await.unwrap().is_empty());
    assert!(prod.app("shop").await.unwrap_err().is_not_found());

    let gone = s.client.delete_app("blog").await.unwrap();
    assert_eq!(gone.name, "blog");
    assert!(s.client.services(Some("blog")).await.unwrap().is_empty());
    assert!(s
        .client
        .delete_app("blog")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn tokens_are_required_except_for_healthz() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let no_token = http
        .get(format!("{}/api/v1/apps", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    let body: ErrorBody = no_token.json().await.unwrap();
    assert_eq!(body.error.code, "unauthorized");

    for bad in ["", "test-token", "test-token-01234567890", "Basic abc"] {
        let err = Client::new(s.base.clone(), bad).apps().await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{bad:?}");
    }
    // Unknown routes say 404, even inside /api/v1 (after authentication).
    let (status, body) = s.raw(reqwest::Method::GET, "/api/v1/nope", None).await;
    assert_eq!(
        (status, body.unwrap().error.code.as_str()),
        (404, "not_found")
    );
    assert!(s.client.app("nope").await.unwrap_err().is_not_found());
    assert!(s
        .client
        .service("nope", "web")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn malformed_requests_name_the_field_and_write_nothing() {
    use reqwest::Method;
    let s = TestServer::start().await;
    s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    let rev = s.store.revision();

    let scale = "/api/v1/services/shop/web/scale";
    let good = serde_json::to_string(SHOP).unwrap();
    let body = |json: String| Some(json.into_bytes());
    // (method, path, body, expected status, expected field)
    type Case = (Method, String, Option<Vec<u8>>, u16, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (Method::POST, "/api/v1/apps".into(), body("{".into()), 400, Some("body")),
        (Method::POST, "/api/v1/apps".into(), body("[]".into()), 400, Some("body")),
        (Method::POST, "/api/v1/apps".into(), Some(vec![b'{', 0xff, b'}']), 400, Some("body")),
        (Method::POST, "/api/v1/apps".into(), body("{}".into()), 400, Some("compose")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": 5}"#.into()), 400, Some("compose")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "env": {{"A": 1}}}}"#)), 400, Some("env.A")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "compse": ""}}"#)), 400, Some("compse")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "revision": -1}}"#)), 400, Some("revision")),
        (Method::POST, "/api/v1/apps?namespace=Bad_NS".into(), body(format!(r#"{{"compose": {good}}}"#)), 400, Some("namespace")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "services: ["}"#.into()), 422, Some("compose")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "name: x\nservices: {web: {build: .}}"}"#.into()), 422, Some("services.web.build")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "services: {web: {image: a}}"}"#.into()), 422, Some("name")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "name": "Shop_2"}}"#)), 422, Some("name")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "name: x\nservices: {web: {image: a, env_file: a.env}}"}"#.into()), 422, Some("services.web.env_file")),
        (Method::POST, scale.into(), body(r#"{"replicas": -1}"#.into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": 99999999999}"#.into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": "3"}"#.into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body("{}".into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": 1000000}"#.into()), 422, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": 2, "revision": "x"}"#.into()), 400, Some("revision")),
        (Method::POST, "/api/v1/services/shop/agent/scale".into(), body(r#"{"replicas": 2}"#.into()), 422, Some("replicas")),
        (Method::POST, "/api/v1/services/shop/nope/scale".into(), body(r#"{"replicas": 2}"#.into()), 404, None),
        (Method::GET, "/api/v1/events?since=abc".into(), None, 400, Some("since")),
        (Method::GET, "/api/v1/events?type=urgent".into(), None, 400, Some("type")),
        (Method::GET, "/api/v1/events?limit=0".into(), None, 400, Some("limit")),
        (Method::GET, "/api/v1/events?limit=ten".into(), None, 400, Some("limit")),
        (Method::GET, "/api/v1/events?replica=Web_1".into(), None, 400, Some("replica")),
        (Method::GET, "/api/v1/events?service=a%2Fb".into(), None, 400, Some("service")),
        (Method::GET, "/api/v1/nodes/n1/assignment?timeout_ms=-5".into(), None, 400, Some("timeout_ms")),
        (Method::GET, "/api/v1/nodes/n1/assignment?after=1.5".into(), None, 400, Some("after")),
        (Method::PUT, "/api/v1/nodes/n1/report".into(), body(r#"{"node": "n2", "address": "a", "generation": 1, "replicas": []}"#.into()), 400, Some("node")),
        (Method::PUT, "/api/v1/nodes/n1/report".into(), body(r#"{"node": "n1", "address": "a", "generation": 1, "replicas": {}}"#.into()), 400, Some("replicas")),
        (Method::PUT, "/api/v1/nodes/n1/report".into(), body(r#"{"node": "n1", "address": "a", "generation": 1, "replicas": [{"id": "x", "node": "n1", "state": "dancing"}]}"#.into()), 400, Some("replicas[0].state")),
        (Method::POST, "/api/v1/apps".into(), Some(vec![b' '; 5 * 1024 * 1024]), 413, None),
    ];
    assert!(cases.len() >= 15);
    for (method, path, body, status, field) in cases {
        let (got, err) = s.raw(method.clone(), &path, body).await;
        let err = err.unwrap_or_else(|| panic!("{method} {path}: no error body"));
        assert_eq!(got, status, "{method} {path}: {err:?}");
        assert_eq!(
            err.error.field.as_deref(),
            field,
            "{method} {path}: {err:?}"
        );
        if let Some(field) = field {
            assert!(
                err.error.message.contains(field),
                "{method} {path}: {err:?}"
            );
        }
        assert!(err.error.fix.is_some(), "{method} {path}: {err:?}");
        assert_eq!(
            s.store.revision(),
            rev,
            "{method} {path} wrote to the store"
        );
    }
}

#[tokio::test]
async fn assignment_long_poll_wakes_on_the_nodes_replicas_and_times_out_otherwise() {
    let s = TestServer::start().await;
    let first = s
        .client
        .assignment("n1", None, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(first.replicas.is_empty());

    // Nothing for n1: the poll is held until its timeout.
    let t = Instant::now();
    let a = s
        .client
        .assignment("n1", Some(first.generation), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
    assert!(a.replicas.is_empty());

    // A replica for n1 written during the poll wakes it promptly; one for n2 does not.
    let poll = {
        let client = s.client.clone();
        let after = a.generation;
        tokio::spawn(async move {
            client
                .assignment("n1", Some(after), Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    put_replica(&s.store, &replica("web-22222", "n2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!poll.is_finished(), "a write for n2 must not wake n1");
    let t = Instant::now();
    let written = put_replica(&s.store, &replica("web-11111", "n1"));
    let a = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(a.generation, written);
    let ids: Vec<_> = a.replicas.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["web-11111"]);
}

#[tokio::test]
async fn reports_show_up_in_nodes_and_replica_views() {
    let s = TestServer::start().await;
    put_replica(&s.store, &replica("web-11111", "n1"));
    let report = NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        generation: s.store.revision(),
        replicas: vec![ObservedReplica {
            id: "web-11111".into(),
            node: "n1".into(),
            state: ReplicaState::Running,
            pid: Some(42),
            exit_code: None,
            restarts: 0,
            message: String::new(),
            started_at: Some(1),
            ip: None,
            exits: Vec::new(),
            failure: None,
            meta: Meta::default(),
        }],
    };
    s.client.report(&report).await.unwrap();
    let nodes = s.client.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].address, "10.0.0.1");
    let filter = ReplicaFilter {
        node: Some("n1".into()),
        ..Default::default()
    };
    let views = s.client.replicas(&filter).await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].status.as_ref().unwrap().pid, Some(42));
    let none = ReplicaFilter {
        node: Some("n9".into()),
        ..Default::default()
    };
    assert!(s.client.replicas(&none).await.unwrap().is_empty());
}

/// A report with one exit of `web-11111`, as an agent sends it.
fn exit_report(generation: u64) -> NodeReport {
    NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        generation,
        replicas: vec![ObservedReplica {
            id: "web-11111".into(),
            node: "n1".into(),
            state: ReplicaState::Exited,
            pid: None,
            exit_code: Some(3),
            restarts: 0,
            message: "exited with code 3".into(),
            started_at: None,
            ip: None,
            exits: vec![ExitRecord {
                exit_code: 3,
                at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                oom: false,
                restarts: 0,
                restart_delay_ms: None,
                adopted: false,
                last_lines: vec!["hello".into()],
            }],
            failure: None,
            meta: Meta::default(),
        }],
    }
}

#[tokio::test]
async fn exits_become_recorded_events_once() {
    let s = TestServer::start().await;
    put_replica(&s.store, &replica("web-11111", "n1"));
    let report = exit_report(s.store.revision());
    s.client.report(&report).await.unwrap();
    // A retried report records nothing new.
    s.client.report(&report).await.unwrap();
    let all = s
        .client
        .recorded_events(&EventFilter::default())
        .await
        .unwrap();
    let exits: Vec<_> = all.iter().filter(|e| e.reason == "Exited").collect();
    assert_eq!(exits.len(), 1, "{all:?}");
    assert_eq!(exits[0].exit_code, Some(3));
    assert_eq!(exits[0].last_lines, ["hello"]);
    assert!(all
        .iter()
        .any(|e| e.reason == "Ready" && e.object.name == "n1"));

    let only = EventFilter {
        replica: Some("web-11111".into()),
        event_type: Some(EventType::Warning),
        limit: Some(5),
        ..Default::default()
    };
    let got = s.client.recorded_events(&only).await.unwrap();
    assert_eq!(got.len(), 1);
    let none = EventFilter {
        replica: Some("web-99999".into()),
        ..Default::default()
    };
    assert!(s.client.recorded_events(&none).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_without_the_stream_header_are_the_recorded_list() {
    let s = TestServer::start().await;
    let get = |accept: Option<&'static str>, query: &'static str| {
        let mut req = s
            .http
            .get(format!("{}/api/v1/events{query}", s.base))
            .bearer_auth(TOKEN);
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        req.send()
    };
    let plain = get(None, "").await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(plain.text().await.unwrap(), "[]");
    for (accept, query) in [
        (Some("text/event-stream"), ""),
        (Some("application/json, text/event-stream"), ""),
        (None, "?since=0"),
    ] {
        let resp = get(accept, query).await.unwrap();
        assert_eq!(resp.status(), 200);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            kind.starts_with("text/event-stream"),
            "{accept:?} {query}: {kind}"
        );
    }
}

async fn next_change<S>(events: &mut S) -> ChangeEvent
where
    S: futures::Stream<Item = Result<Event, ClientError>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        Ok(Some(Ok(Event::Change(c)))) => c,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn events_deliver_the_backlog_then_live_changes() {
    let s = TestServer::start().await;
    let first = put_replica(&s.store, &replica("web-11111", "n1"));
    put_replica(&s.store, &replica("web-22222", "n1"));
    let mut events = Box::pin(s.client.events(Some(first - 1)).await.unwrap());
    let a = next_change(&mut events).await;
    let b = next_change(&mut events).await;
    assert_eq!((a.key.as_str(), b.key.as_str()), ("web-11111", "web-22222"));
    assert_eq!(b.revision, first + 1);

    s.store
        .txn(vec![Op::delete(Kind::Replica, "web-11111", Expect::Any)])
        .unwrap();
    s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    let c = next_change(&mut events).await;
    assert_eq!((c.op, c.key.as_str()), (ChangeOp::Delete, "web-11111"));
    // One deploy is one transaction: every change carries the same revision.
    let deploy: Vec<_> = [
        next_change(&mut events).await,
        next_change(&mut events).await,
        next_change(&mut events).await,
        next_change(&mut events).await,
    ]
    .into_iter()
    .collect();
    assert!(deploy.iter().all(|c| c.revision == deploy[0].revision));
    assert!(deploy.iter().any(|c| c.kind == Kind::App));
    assert_eq!(deploy.iter().filter(|c| c.kind == Kind::Service).count(), 3);
}

#[tokio::test]
async fn events_reset_when_history_was_compacted() {
    let s = TestServer::start().await;
    put_replica(&s.store, &replica("web-11111", "n1"));
    let rev = put_replica(&s.store, &replica("web-22222", "n1"));
    s.store.compact(rev).unwrap();
    let mut events = Box::pin(s.client.events(Some(0)).await.unwrap());
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Ok(Event::Reset))), "{first:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends after a reset");
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

#[tokio::test]
async fn odd_bodies_never_cause_a_server_error() {
    use reqwest::Method;
    let s = TestServer::start().await;
    s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    let rev = s.store.revision();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!(
        r#"{{"compose": {}"x"{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let bodies: Vec<Vec<u8>> = [
        "",
        "null",
        "0",
        "\"\"",
        "true",
        "{}",
        "{\"a\":",
        "{\"compose\": null}",
        "{\"compose\": \"\\u0000\"}",
        "{\"compose\": \"\\ud800\"}",
        "{\"replicas\": 1e400}",
        "{\"replicas\": 18446744073709551616}",
        "{\"env\": []}",
        "{\"compose\": \"a: *x\"}",
        "{\"compose\": \"services: {web: {image: a, deploy: {replicas: -1}}}\", \"name\": \"a\"}",
        &deep,
        &deep_obj,
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .chain([vec![0xff, 0xfe, 0x00], vec![b'{'; 100_000]])
    .collect();
    let routes = [
        (Method::POST, "/api/v1/apps"),
        (Method::POST, "/api/v1/services/shop/web/scale"),
        (Method::PUT, "/api/v1/nodes/n1/report"),
    ];
    for (method, path) in routes {
        for body in &bodies {
            let (status, err) = s.raw(method.clone(), path, Some(body.clone())).await;
            let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
            assert!(
                (400..500).contains(&status),
                "{method} {path} {shown:?}: {status}"
            );
            assert!(err.is_some(), "{method} {path} {shown:?}: no error body");
        }
    }
    assert_eq!(s.store.revision(), rev);
}

#[tokio::test]
async fn logs_and_exec_are_proxied_only_to_reachable_agents() {
    let s = TestServer::start().await;
    let (status, _) = s
        .raw(
            reqwest::Method::GET,
            "/api/v1/replicas/web-zzzzz/logs",
            None,
        )
        .await;
    assert_eq!(status, 404);
    put_replica(&s.store, &replica("web-11111", "n1"));
    let mut report = NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        generation: s.store.revision(),
        replicas: Vec::new(),
    };
    s.client.report(&report).await.unwrap();
    let (status, body) = s
        .raw(
            reqwest::Method::GET,
            "/api/v1/replicas/web-11111/logs",
            None,
        )
        .await;
    assert_eq!(status, 503);
    let error = body.unwrap().error;
    assert_eq!(error.code, "unavailable");
    assert!(
        error.message.contains("no agent endpoint"),
        "{}",
        error.message
    );

    // A node whose agent does not answer: 503 saying so, for logs and exec alike.
    report.agent_url = Some("http://127.0.0.1:1".into());
    s.client.report(&report).await.unwrap();
    assert_eq!(
        s.client.nodes().await.unwrap()[0].agent_url.as_deref(),
        Some("http://127.0.0.1:1")
    );
    let (status, body) = s
        .raw(
            reqwest::Method::GET,
            "/api/v1/replicas/web-11111/logs?follow=true&tail=5",
            None,
        )
        .await;
    assert_eq!(status, 503);
    assert!(body
        .unwrap()
        .error
        .message
        .contains("cannot reach the agent"));
    let (status, _) = s
        .raw(
            reqwest::Method::POST,
            "/api/v1/replicas/web-11111/exec",
            Some(br#"{"cmd":["true"]}"#.to_vec()),
        )
        .await;
    assert_eq!(status, 503);
    let (status, _) = s
        .raw(
            reqwest::Method::GET,
            "/api/v1/replicas/web-11111/logs?follow=maybe",
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = s
        .raw(
            reqwest::Method::GET,
            "/api/v1/replicas/web-11111/logs?since=yesterday",
            None,
        )
        .await;
    assert_eq!(status, 400);
    let message = body.map(|b| b.error.message).unwrap_or_default();
    assert!(
        message.contains("since") && message.contains("yesterday"),
        "{message}"
    );
}
