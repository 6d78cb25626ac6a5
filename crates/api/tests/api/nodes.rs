//! The agent's side: the assignment long poll, node reports, and the logs and exec proxy to
//! the endpoint a node reported.

use std::time::{Duration, Instant};

use hivemind_client::wire::ReplicaFilter;
use hivemind_types::{Meta, NodeReport, ObservedReplica, ReplicaState};

use super::{put_replica, replica, TestServer};

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
    put_replica(&s.store, &replica("web-22222", "n2")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!poll.is_finished(), "a write for n2 must not wake n1");
    let t = Instant::now();
    let written = put_replica(&s.store, &replica("web-11111", "n1")).await;
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
    put_replica(&s.store, &replica("web-11111", "n1")).await;
    let report = NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        problems: Vec::new(),
        generation: s.store.revision().await.unwrap(),
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
            health: None,
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
    put_replica(&s.store, &replica("web-11111", "n1")).await;
    let mut report = NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        problems: Vec::new(),
        generation: s.store.revision().await.unwrap(),
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

#[tokio::test]
async fn node_rm_removes_the_nodes_replica_statuses() {
    let s = TestServer::start().await;
    put_replica(&s.store, &replica("web-11111", "n1")).await;
    put_replica(&s.store, &replica("web-22222", "n2")).await;
    let status = |id: &str, node: &str| ObservedReplica {
        id: id.into(),
        node: node.into(),
        state: ReplicaState::Running,
        pid: Some(7),
        exit_code: None,
        restarts: 0,
        message: String::new(),
        started_at: None,
        ip: None,
        exits: Vec::new(),
        failure: None,
        health: None,
        meta: Meta::default(),
    };
    for (node, id) in [("n1", "web-11111"), ("n2", "web-22222")] {
        let report = NodeReport {
            node: node.into(),
            address: "10.0.0.1".into(),
            agent_url: None,
            problems: Vec::new(),
            generation: 0,
            replicas: vec![status(id, node)],
        };
        s.client.report(&report).await.unwrap();
    }
    s.client.delete_node("n1").await.unwrap();
    let stored: Vec<ObservedReplica> = s
        .store
        .list(hivemind_types::Kind::ReplicaStatus, "")
        .await
        .unwrap();
    let ids: Vec<_> = stored.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["web-22222"], "n2's status stays, n1's goes");
    // The replica itself stays for the service controller to replace.
    let views = s.client.replicas(&ReplicaFilter::default()).await.unwrap();
    let n1: Vec<_> = views.iter().filter(|v| v.replica.node == "n1").collect();
    assert_eq!(n1.len(), 1);
    assert!(n1[0].status.is_none(), "{n1:?}");
}
