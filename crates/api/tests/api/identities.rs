//! Identities (issue 9, acceptance 5): join tokens, node credentials limited to their own node,
//! and agents that are never shown the admin token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use hivemind_client::wire::{JoinResponse, TokenCreateRequest};
use hivemind_client::{Client, ClientError};
use hivemind_types::{NodeReport, TokenRole};

use super::{deploy_req, put_replica, replica, TestServer, SHOP, TOKEN};

fn report(node: &str) -> NodeReport {
    NodeReport {
        node: node.into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        generation: 0,
        replicas: Vec::new(),
        problems: Vec::new(),
    }
}

/// The status and error body of a failed call, asserting it failed.
fn refused(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String, String, String) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
            fix,
            ..
        }) => (status, code, message, fix.unwrap_or_default()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn join_token(s: &TestServer) -> String {
    s.client
        .create_token(&TokenCreateRequest {
            role: TokenRole::Node,
            ttl_seconds: Some(3600),
        })
        .await
        .unwrap()
        .token
}

#[tokio::test]
async fn a_node_credential_gets_403_for_other_nodes_and_for_deploy() {
    let s = TestServer::start().await;
    let joiner = Client::new(s.base.clone(), join_token(&s).await);
    // One join token joins any number of nodes, each with its own credential.
    let n1: JoinResponse = joiner.join("n1").await.unwrap();
    let n2: JoinResponse = joiner.join("n2").await.unwrap();
    assert_ne!(n1.credential, n2.credential);
    assert_ne!(n1.agent_secret, n2.agent_secret);
    let n1 = Client::new(s.base.clone(), n1.credential);

    // Its own node: allowed.
    n1.report(&report("n1")).await.unwrap();
    n1.assignment("n1", None, Duration::from_secs(1))
        .await
        .unwrap();

    // Another node's report and assignment: 403 naming the principal and what it may do.
    let (status, code, message, fix) = refused(n1.report(&report("n2")).await);
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(message.contains("node:n1"), "{message}");
    assert!(message.contains("report of node n2"), "{message}");
    assert!(fix.contains("/api/v1/nodes/n1/assignment"), "{fix}");
    let (status, _, message, _) = refused(n1.assignment("n2", None, Duration::from_secs(1)).await);
    assert_eq!(status, 403, "{message}");

    // Deploy and everything else admin-only: 403.
    let (status, _, message, _) = refused(n1.deploy(&deploy_req(SHOP)).await);
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("POST /api/v1/apps"), "{message}");
    assert_eq!(refused(n1.nodes().await).0, 403);
    assert_eq!(refused(n1.apps().await).0, 403);
    assert_eq!(refused(n1.tokens().await).0, 403);
    assert_eq!(refused(n1.join("n3").await).0, 403);
    assert_eq!(refused(n1.delete_node("n2").await).0, 403);
    assert_eq!(refused(n1.scale(Some("shop"), "web", 9).await).0, 403);
    assert!(s.client.apps().await.unwrap().is_empty());

    // A join token joins and does nothing else.
    assert_eq!(refused(joiner.report(&report("n1")).await).0, 403);
    assert_eq!(refused(joiner.deploy(&deploy_req(SHOP)).await).0, 403);
    // And cannot take over a node that has joined, or one registered before identities.
    let (status, _, message, fix) = refused(joiner.join("n1").await);
    assert_eq!(status, 409, "{message}");
    assert!(fix.contains("hivemind node rm n1"), "{fix}");
    s.client.report(&report("old")).await.unwrap();
    assert_eq!(refused(joiner.join("old").await).0, 409);
    // The admin can: that replaces the node's credential.
    let old = s.client.join("n1").await.unwrap();
    assert_eq!(refused(n1.report(&report("n1")).await).0, 401);
    Client::new(s.base.clone(), old.credential)
        .report(&report("n1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_revoked_by_rm() {
    let s = TestServer::start().await;
    let created = s
        .client
        .create_token(&TokenCreateRequest {
            role: TokenRole::Node,
            ttl_seconds: None,
        })
        .await
        .unwrap();
    assert!(created.token.starts_with(&format!("hm1.{}.", created.id)));
    assert_eq!(created.expires_at, None);
    let joiner = Client::new(s.base.clone(), created.token.clone());
    let joined = joiner.join("n1").await.unwrap();
    let node = Client::new(s.base.clone(), joined.credential.clone());
    node.report(&report("n1")).await.unwrap();

    let listed = s.client.tokens().await.unwrap();
    let ids: Vec<_> = listed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [created.id.as_str(), "n-n1"]);
    assert_eq!(listed[1].node.as_deref(), Some("n1"));
    assert_eq!(listed[1].issued_by, format!("join:{}", created.id));
    let (_, body) = s.raw(reqwest::Method::GET, "/api/v1/tokens", None).await;
    assert!(body.is_none());
    let text = reqwest::Client::new()
        .get(format!("{}/api/v1/tokens", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [&created.token, &joined.credential] {
        let secret = secret.rsplit_once('.').unwrap().1;
        assert!(!text.contains(secret), "{text}");
    }
    assert!(!text.contains("sha256"), "{text}");

    // Roles other than join tokens are not minted directly; bad TTLs name the field.
    let (status, body) = s
        .raw(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(br#"{"role":"node-credential"}"#.to_vec()),
        )
        .await;
    assert_eq!(
        (status, body.unwrap().error.field.as_deref()),
        (400, Some("role"))
    );
    let (status, body) = s
        .raw(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(br#"{"role":"node","ttl_seconds":1e30}"#.to_vec()),
        )
        .await;
    assert_eq!(status, 400, "{body:?}");

    // `node rm` removes the node and its credential at once; `token rm` revokes a join token.
    s.client.delete_node("n1").await.unwrap();
    assert!(s.client.nodes().await.unwrap().is_empty());
    assert_eq!(refused(node.report(&report("n1")).await).0, 401);
    assert_eq!(refused(s.client.delete_node("n1").await).0, 404);
    s.client.delete_token(&created.id).await.unwrap();
    assert_eq!(refused(joiner.join("n2").await).0, 401);
    assert_eq!(refused(s.client.delete_token(&created.id).await).0, 404);
    assert!(s.client.tokens().await.unwrap().is_empty());
}

#[tokio::test]
async fn expired_join_tokens_are_refused() {
    let s = TestServer::start().await;
    let created = s
        .client
        .create_token(&TokenCreateRequest {
            role: TokenRole::Node,
            ttl_seconds: Some(1),
        })
        .await
        .unwrap();
    let joiner = Client::new(s.base.clone(), created.token);
    joiner.join("n1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(refused(joiner.join("n2").await).0, 401);
}

/// A stand-in agent endpoint that records the `Authorization` header of every request.
async fn recording_agent() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let record = record.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .to_string();
            record.lock().unwrap().push(auth);
            ""
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn agents_are_called_with_their_own_secret_never_the_admin_token() {
    let s = TestServer::start().await;
    s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    let joiner = Client::new(s.base.clone(), join_token(&s).await);
    let (url1, seen1) = recording_agent().await;
    let (url2, seen2) = recording_agent().await;
    let mut secrets = Vec::new();
    for (node, url) in [("n1", &url1), ("n2", &url2)] {
        let joined = joiner.join(node).await.unwrap();
        secrets.push(joined.agent_secret.clone());
        let client = Client::new(s.base.clone(), joined.credential);
        let mut r = report(node);
        r.agent_url = Some(url.clone());
        client.report(&r).await.unwrap();
        put_replica(&s.store, &replica(&format!("web-{node}"), node)).await;
    }
    for id in ["web-n1", "web-n2"] {
        let (status, body) = s
            .raw(
                reqwest::Method::GET,
                &format!("/api/v1/replicas/{id}/logs"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body:?}");
        let _ = s
            .raw(
                reqwest::Method::POST,
                &format!("/api/v1/replicas/{id}/exec"),
                Some(br#"{"cmd":["true"]}"#.to_vec()),
            )
            .await;
    }
    let (status, _) = s
        .raw(reqwest::Method::GET, "/api/v1/services/shop/web/logs", None)
        .await;
    assert_eq!(status, 200);
    for (seen, secret) in [(&seen1, &secrets[0]), (&seen2, &secrets[1])] {
        let seen = seen.lock().unwrap().clone();
        assert!(seen.len() >= 3, "{seen:?}");
        for auth in &seen {
            assert_eq!(auth, &format!("Bearer {secret}"));
            assert!(!auth.contains(TOKEN) && !auth.contains("other-token"));
        }
    }
}
