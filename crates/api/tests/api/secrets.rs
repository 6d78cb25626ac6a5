//! Secrets and configs over the API (issue 10): no answer carries a value; a node gets the
//! values of its own replicas only, in full and in delta answers; admin-only routes; a secret
//! in use cannot be removed.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hivemind_client::wire::{DeployRequest, FileValues, TokenCreateRequest};
use hivemind_client::{Client, ClientError};
use hivemind_types::secret::{FileKind, FileValue};
use hivemind_types::{Kind, Replica, Service, TokenRole};

use super::{put_replica, replica, TestServer};

const PASSWORD: &str = "pw-Zq8vLx3rT1";
const CLUSTER: &str = "cluster-Jm4nB7wQ2e";

const APP: &str = "name: shop
services:
  db:
    image: busybox:1
    secrets: [db_password, tls]
  web:
    image: busybox:1
secrets:
  db_password: {file: ./pw.txt}
  tls: {external: true}
";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn status(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api {
            status, message, ..
        }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A node credential for `node`.
async fn node_client(s: &TestServer, node: &str) -> Client {
    let join = s
        .client
        .create_token(&TokenCreateRequest {
            role: TokenRole::Node,
            ttl_seconds: Some(3600),
        })
        .await
        .unwrap()
        .token;
    let joined = Client::new(s.base.clone(), join).join(node).await.unwrap();
    Client::new(s.base.clone(), joined.credential)
}

/// A replica of `shop/db` on `node`, with the service's spec as the control plane copies it.
async fn db_replica(s: &TestServer, id: &str, node: &str) -> Replica {
    let service: Service = s
        .store
        .get(Kind::Service, "default/shop/db")
        .await
        .unwrap()
        .unwrap();
    let mut r = replica(id, node);
    r.service = "db".into();
    r.revision_hash = service.spec.revision_hash();
    r.spec = service.spec;
    r
}

fn value_of(files: &[FileValue], key: &str) -> Option<String> {
    files.iter().find(|f| f.key == key).map(|f| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&f.data)
                .unwrap(),
        )
        .unwrap()
    })
}

/// Every GET answer an admin can read about the app, as raw text.
async fn every_answer(s: &TestServer) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "/api/v1/apps",
        "/api/v1/apps/shop",
        "/api/v1/services",
        "/api/v1/services/shop/db",
        "/api/v1/replicas",
        "/api/v1/secrets",
        "/api/v1/secrets/tls",
        "/api/v1/secrets/db_password?app=shop",
        "/api/v1/configs",
        "/api/v1/events",
        "/api/v1/nodes/n1/assignment",
        "/api/v1/nodes/n2/assignment",
    ] {
        let resp = s
            .http
            .get(format!("{}{path}", s.base))
            .bearer_auth(super::TOKEN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        out.push(format!("{path}: {}", resp.text().await.unwrap()));
    }
    // The change stream from the start: every write, the secrets' too if they were in it.
    let mut stream = Box::pin(s.client.events(Some(0)).await.unwrap());
    while let Ok(Some(event)) = tokio::time::timeout(
        Duration::from_millis(300),
        futures::StreamExt::next(&mut stream),
    )
    .await
    {
        out.push(format!("event: {event:?}"));
    }
    out
}

#[tokio::test]
async fn values_reach_their_node_only_and_no_answer_carries_one() {
    let s = TestServer::start().await;
    let created = s
        .client
        .create_file(FileKind::Secret, "tls", CLUSTER.as_bytes())
        .await
        .unwrap();
    assert_eq!(created.size, CLUSTER.len() as u64);
    assert_eq!(created.digest.len(), 12);
    let (code, message) = status(
        s.client
            .create_file(FileKind::Secret, "tls", b"again")
            .await,
    );
    assert_eq!(code, 409, "{message}");

    let deployed = s
        .client
        .deploy(&DeployRequest {
            compose: APP.into(),
            secrets: FileValues(BTreeMap::from([("db_password".into(), b64(PASSWORD))])),
            ..Default::default()
        })
        .await
        .unwrap();
    let response = serde_json::to_string(&deployed).unwrap();
    assert!(!response.contains(PASSWORD) && !response.contains(&b64(PASSWORD)));

    let n1 = node_client(&s, "n1").await;
    let n2 = node_client(&s, "n2").await;
    let r1 = db_replica(&s, "db-aaaaa", "n1").await;
    put_replica(&s.store, &r1).await;

    // n1 gets both values for its replica; the admin reading n1's assignment gets none, nor
    // does n2 for its own (it runs nothing that mounts them).
    let mine = n1
        .assignment("n1", None, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        value_of(&mine.files, "default/shop/db_password").as_deref(),
        Some(PASSWORD)
    );
    assert_eq!(value_of(&mine.files, "tls").as_deref(), Some(CLUSTER));
    let admin_view = s
        .client
        .assignment("n1", None, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(admin_view.replicas.len(), 1);
    assert!(admin_view.files.is_empty());
    assert!(n2
        .assignment("n2", None, Duration::from_secs(1))
        .await
        .unwrap()
        .files
        .is_empty());
    // n2 may not read n1's assignment, nor any secret route.
    assert_eq!(
        status(n2.assignment("n1", None, Duration::from_secs(1)).await).0,
        403
    );
    assert_eq!(status(n1.files(FileKind::Secret).await).0, 403);
    assert_eq!(status(n1.file(FileKind::Secret, "tls", None).await).0, 403);
    assert_eq!(
        status(n1.create_file(FileKind::Secret, "x", b"y").await).0,
        403
    );
    assert_eq!(
        status(n1.delete_file(FileKind::Secret, "tls", None).await).0,
        403
    );

    // A delta answer carries the values of the replicas it carries; merged, they add up.
    let r2 = db_replica(&s, "db-bbbbb", "n1").await;
    put_replica(&s.store, &r2).await;
    let mut merged = Some(mine.clone());
    n1.assignment_since("n1", &mut merged, Duration::from_secs(5))
        .await
        .unwrap();
    let merged = merged.unwrap();
    assert_eq!(merged.replicas.len(), 2);
    assert_eq!(
        value_of(&merged.files, "default/shop/db_password").as_deref(),
        Some(PASSWORD)
    );

    // Nothing an admin reads holds a value.
    for answer in every_answer(&s).await {
        for v in [PASSWORD, CLUSTER] {
            assert!(
                !answer.contains(v) && !answer.contains(&b64(v)),
                "{v} in {answer}"
            );
        }
    }
    let inspect = s
        .client
        .file(FileKind::Secret, "db_password", Some("shop"))
        .await
        .unwrap();
    assert_eq!(inspect.users, ["default/shop/db"]);
    assert_eq!(inspect.app.as_deref(), Some("default/shop"));

    // In use: refused, naming the service; after the app goes, removed.
    let (code, message) = status(s.client.delete_file(FileKind::Secret, "tls", None).await);
    assert_eq!(code, 409);
    assert!(message.contains("default/shop/db"), "{message}");
    s.client.delete_app("shop").await.unwrap();
    s.client
        .delete_file(FileKind::Secret, "tls", None)
        .await
        .unwrap();
    assert!(s.client.files(FileKind::Secret).await.unwrap().is_empty());
    assert_eq!(
        status(s.client.file(FileKind::Secret, "tls", None).await).0,
        404
    );
}

#[tokio::test]
async fn bad_secret_requests_name_the_field() {
    let s = TestServer::start().await;
    for (body, field) in [
        (r#"{"name": "a/b", "data": ""}"#, "name"),
        (r#"{"name": "ok", "data": "%%%"}"#, "data"),
        (r#"{"name": "ok"}"#, "data"),
        (r#"{"name": "ok", "data": "", "value": "x"}"#, "value"),
    ] {
        let (code, err) = s
            .raw(
                reqwest::Method::POST,
                "/api/v1/secrets",
                Some(body.as_bytes().to_vec()),
            )
            .await;
        assert!(code == 400 || code == 422, "{body}: {code}");
        let err = err.unwrap_or_else(|| panic!("{body}: no error body"));
        assert_eq!(err.error.field.as_deref(), Some(field), "{body}: {err:?}");
    }
    let too_big = serde_json::json!({"name": "big", "data": b64(&"x".repeat(600 * 1024))});
    let (code, _) = s
        .raw(
            reqwest::Method::POST,
            "/api/v1/configs",
            Some(too_big.to_string().into_bytes()),
        )
        .await;
    assert_eq!(code, 422);
}
