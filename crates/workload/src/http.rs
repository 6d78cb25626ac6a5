//! A minimal HTTP/1.1 over TCP: reading requests and writing plain-text responses for `serve`,
//! and URL parsing plus a one-shot `GET` (`Connection: close`) for `loop`. Enough for tests; no
//! chunked encoding, no TLS.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request or response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and discarded) or response body kept.
const MAX_BODY: usize = 1024 * 1024;

/// A parsed request head; the body is read and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Path without the query string.
    pub(crate) path: String,
    pub(crate) query: String,
    /// Headers in arrival order, names as sent.
    pub(crate) headers: Vec<(String, String)>,
    /// Whether the client wants the connection kept open afterwards.
    pub(crate) keep_alive: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` in the query string.
    pub(crate) fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// Splits a complete head (`\r\n`-separated, without the blank line) into a request.
pub(crate) fn parse_request_head(head: &str) -> Result<Request, String> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(format!("bad request line {line:?}"));
    }
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| format!("bad header {l:?}"))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        keep_alive: version == "HTTP/1.1",
    };
    match req.header("connection").map(str::to_ascii_lowercase) {
        Some(c) if c == "close" => req.keep_alive = false,
        Some(c) if c == "keep-alive" => req.keep_alive = true,
        _ => {}
    }
    Ok(req)
}

/// Reads bytes up to and including the blank line that ends a head. `Ok(None)` on a clean EOF
/// before any byte; whatever was read past the head is returned as the second element.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            buf.truncate(end);
            let head = String::from_utf8(buf).map_err(|_| invalid("head is not UTF-8"))?;
            return Ok(Some((head, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("head too large"));
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed mid-head"))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one request and skips its `Content-Length` body. `Ok(None)` when the client closed.
/// Pipelined requests are not supported: bytes after the body are dropped.
pub(crate) async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Request>> {
    let Some((head, rest)) = read_head(r).await? else {
        return Ok(None);
    };
    let mut req = parse_request_head(&head).map_err(invalid)?;
    if req.header("transfer-encoding").is_some() {
        req.keep_alive = false; // the body cannot be skipped reliably: answer and close
    }
    let len: usize = match req.header("content-length") {
        Some(v) => v.parse().map_err(|_| invalid("bad content-length"))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(invalid("body too large"));
    }
    let mut remaining = len.saturating_sub(rest.len());
    let mut sink = [0u8; 4096];
    while remaining > 0 {
        let n = r.read(&mut sink[..remaining.min(4096)]).await?;
        if n == 0 {
            return Err(invalid("connection closed mid-body"));
        }
        remaining -= n;
    }
    Ok(Some(req))
}

/// Writes a `text/plain` response with a length, so the connection can be reused.
pub(crate) async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    body: &str,
    keep_alive: bool,
) -> std::io::Result<()> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let msg = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    w.write_all(msg.as_bytes()).await?;
    w.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// An `http://` URL split for a raw request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Host name or IP literal, without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path plus query, at least `/`.
    pub(crate) path: String,
    /// What goes in the `Host` header (as written in the URL).
    pub(crate) authority: String,
}

pub(crate) fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
        None => 80,
    };
    Ok(Url {
        host: host.to_string(),
        port,
        path,
        authority: authority.to_string(),
    })
}

/// Sends `GET` with `Connection: close` on `stream` and reads the whole answer:
/// `(status, body)`. The body ends at `Content-Length` or at EOF.
pub(crate) async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    url: &Url,
) -> std::io::Result<(u16, Vec<u8>)> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hm-workload\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    stream.write_all(req.as_bytes()).await?;
    let (head, mut body) = read_head(stream)
        .await?
        .ok_or_else(|| invalid("connection closed before a response"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| invalid("bad status line"))?;
    let length = head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let limit = length.unwrap_or(MAX_BODY).min(MAX_BODY);
    let mut chunk = [0u8; 4096];
    while body.len() < limit {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if length.is_some() {
                return Err(invalid("connection closed mid-body"));
            }
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(limit);
    Ok((status, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        let r = parse_request_head(
            "GET /slow?ms=20&x=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/slow");
        assert_eq!(r.query_param("ms"), Some("20"));
        assert_eq!(r.query_param("y"), None);
        assert_eq!(r.header("x-forwarded-for"), Some("10.0.0.1"));
        assert!(r.keep_alive);
        let r = parse_request_head("GET / HTTP/1.0").unwrap();
        assert!(!r.keep_alive);
        let r = parse_request_head("GET / HTTP/1.1\r\nConnection: Close").unwrap();
        assert!(!r.keep_alive);
        for bad in [
            "",
            "GET /",
            "GET / SPDY/3",
            "GET / HTTP/1.1 x",
            "GET / HTTP/1.1\r\nnocolon",
        ] {
            assert!(parse_request_head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_urls() {
        let u = parse_url("http://web.default.svc:8080/a/b?c=d").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("web.default.svc", 8080, "/a/b?c=d")
        );
        assert_eq!(u.authority, "web.default.svc:8080");
        let u = parse_url("http://10.0.0.1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 80, "/")
        );
        let u = parse_url("http://[::1]:81?q").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 81, "/?q")
        );
        let u = parse_url("http://[fe80::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::1", 80));
        for bad in [
            "https://a/",
            "a/b",
            "http://",
            "http://:80/",
            "http://a:x/",
            "http://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reads_a_request_and_skips_its_body() {
        rt().block_on(async {
            let raw = b"POST /fail HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
            let mut r: &[u8] = raw;
            let req = read_request(&mut r).await.unwrap().unwrap();
            assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/fail"));
            assert!(r.is_empty());
            let mut empty: &[u8] = b"";
            assert!(read_request(&mut empty).await.unwrap().is_none());
            let mut cut: &[u8] = b"GET / HTTP/1.1\r\nHost";
            assert!(read_request(&mut cut).await.is_err());
        });
    }

    #[test]
    fn client_reads_what_the_server_writes() {
        rt().block_on(async {
            let (mut client, mut server) = tokio::io::duplex(64 * 1024);
            let url = parse_url("http://x:1/y").unwrap();
            let srv = tokio::spawn(async move {
                let req = read_request(&mut server).await.unwrap().unwrap();
                assert_eq!(req.header("host"), Some("x:1"));
                assert!(!req.keep_alive);
                write_response(&mut server, 503, "down\n", false)
                    .await
                    .unwrap();
            });
            let (status, body) = get(&mut client, &url).await.unwrap();
            assert_eq!((status, body.as_slice()), (503, &b"down\n"[..]));
            srv.await.unwrap();
        });
    }
}
