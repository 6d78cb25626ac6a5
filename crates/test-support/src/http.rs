//! A raw HTTP/1.1 request over TCP, for tests that must send what an HTTP client would not
//! (paths with `..` or `%00`, which a client normalizes or refuses).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `method target` with a bearer `token` and a JSON `body` to `addr` and returns the
/// status (0 when the connection closed without an answer) and the body. Panics when no answer
/// comes within 10 s: a hostile request must never stall the server.
pub async fn raw_request(
    addr: SocketAddr,
    token: &str,
    method: &str,
    target: &str,
    body: &str,
) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let shown: String = target.chars().take(100).collect();
    assert!(read.is_ok(), "{method} {shown}: no answer in 10 s");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
