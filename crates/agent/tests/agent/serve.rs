//! The agent endpoint (`hivemind_agent::serve`) under hostile requests: replica ids that are not
//! ids never reach the file system (`..`, `%2Fetc` used to read any directory's `*.log` files
//! and answer as an existence oracle), and every query parameter and path segment given a
//! hostile value gets a 4xx with an error body, never a 5xx or a connection closed without an
//! answer. Requests are written as raw HTTP, so that the bytes on the wire are exactly the
//! table's.

use std::net::SocketAddr;
use std::path::Path;

use hivemind_agent::serve::{serve, ServeConfig};
use tokio::sync::watch;

use super::TestEnv;

const TOKEN: &str = "agent-test-token";
/// A replica with logs on this node.
const PRESENT: &str = "web-bcdfg";
const RECORD: &str = "2026-11-27T07:43:22.123456789Z stdout F hello from web\n";

/// Values a prober sends, as they appear in the URL (percent-encoded where a client would).
fn hostile() -> Vec<String> {
    let mut values: Vec<String> = [
        "1e30",
        "1e19",
        "-1",
        "NaN",
        "18446744073709551616",
        "%C3%A9",
        "5%C3%A9",
        "..",
        "..%2F",
        "%2E%2E%2F",
        "..%2F..%2Fsecret",
        "%2Fetc",
        "%00",
        "%FF",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    values.push("a".repeat(10 * 1024));
    values
}

struct Agent {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

/// The endpoint over `env`'s runtime, its log dir holding `PRESENT`'s log, and beside the log
/// dir a directory `secret` with a `*.log` file that must never be served.
async fn start(env: &TestEnv) -> Agent {
    let config = env.config();
    write_log(&config.log_dir.join(PRESENT));
    write_log(&config.log_dir.parent().unwrap().join("secret"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let serve_config = ServeConfig {
        token: TOKEN.to_string(),
        runtime: config,
    };
    tokio::spawn(serve(listener, serve_config, env.runtime.clone(), stopped));
    Agent { addr, _stop: stop }
}

fn write_log(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("0000000001.log"), RECORD).unwrap();
}

impl Agent {
    /// Sends one raw request; returns the status and the body (empty when the connection closed
    /// without an answer, status 0).
    async fn send(&self, method: &str, target: &str, body: &str) -> (u16, String) {
        hivemind_test_support::http::raw_request(self.addr, TOKEN, method, target, body).await
    }

    async fn logs(&self, id: &str, query: &str) -> (u16, String) {
        self.send("GET", &format!("/v1/replicas/{id}/logs?{query}"), "")
            .await
    }

    async fn exec(&self, id: &str) -> (u16, String) {
        self.send(
            "POST",
            &format!("/v1/replicas/{id}/exec"),
            r#"{"cmd": ["true"]}"#,
        )
        .await
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The `error.message` of an error body; panics (naming `what`) when there is none.
fn message(what: &str, status: u16, body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!(
            "{what}: {status} without a JSON error body ({e}): {:?}",
            short(body)
        )
    });
    value["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error.message in {}", short(body)))
        .to_string()
}

#[tokio::test]
async fn replica_ids_with_dots_or_slashes_are_refused_before_the_log_dir_is_read() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let agent = start(&env).await;
    // The log dir's sibling `secret` was readable as `..%2Fsecret` and the host's `/etc` probed
    // as `%2Fetc` (a 404 or not told whether it exists).
    for id in [
        "..%2Fsecret",
        "%2E%2E%2Fsecret",
        "..",
        "%2Fetc",
        "%2Fetc%2Fpasswd",
    ] {
        for (route, (status, body)) in [
            ("logs", agent.logs(id, "").await),
            ("exec", agent.exec(id).await),
        ] {
            assert_eq!(status, 400, "{route} {id}: {body}");
            let message = message(id, status, &body);
            assert!(
                message.starts_with("id: ") && message.contains("is not a replica id"),
                "{route} {id}: {message}"
            );
            assert!(!body.contains("hello from web"), "{route} {id}: {body}");
        }
    }
    // A well-formed id: 404 when the node has no such replica, its records when it has.
    let (status, body) = agent.logs("web-zzzzz", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(message("web-zzzzz", status, &body).contains("has no logs on this node"));
    let (status, body) = agent.exec("web-zzzzz").await;
    assert_eq!(status, 404, "{body}");
    assert!(message("web-zzzzz", status, &body).contains("has no container on this node"));
    let (status, body) = agent.logs(PRESENT, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("stdout F hello from web"), "{body}");
}

#[tokio::test]
async fn tail_18446744073709551615_on_the_agent_endpoint_reads_everything() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let agent = start(&env).await;
    let (status, body) = agent.logs(PRESENT, "tail=18446744073709551615").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from web"), "{body}");
}

#[tokio::test]
async fn hostile_values_in_every_parameter_and_segment_get_a_4xx_with_an_error_body() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let agent = start(&env).await;
    let mut checked = 0;
    for value in hostile() {
        let what = short(&value);
        // The `{id}` segment of both routes.
        for (route, (status, body)) in [
            ("logs id", agent.logs(&value, "").await),
            ("exec id", agent.exec(&value).await),
        ] {
            assert!(
                (400..500).contains(&status),
                "{route}={what}: {status} {body:?}"
            );
            message(&format!("{route}={what}"), status, &body);
            checked += 1;
        }
        // Every query parameter of the logs route, on a replica that has logs.
        for param in ["follow", "tail", "since", "stream", "cursor"] {
            let (status, body) = agent.logs(PRESENT, &format!("{param}={value}")).await;
            assert!(
                (400..500).contains(&status),
                "{param}={what}: {status} {}",
                short(&body)
            );
            let message = message(&format!("{param}={what}"), status, &body);
            assert!(message.contains(param), "{param}={what}: {message}");
            checked += 1;
        }
    }
    println!("{checked} hostile requests, each answered with a 4xx and an error body");
    // The endpoint still serves.
    let (status, body) = agent.logs(PRESENT, "tail=1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from web"), "{body}");
}
