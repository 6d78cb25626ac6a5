//! HTTP routes: a hyper HTTP/1.1 server per accepted connection and one pooled hyper client
//! shared by all ports.
//!
//! Each request is routed on the route as it is when the request arrives (Host, then longest
//! path prefix; see `LiveRoute::select`), sent to the next backend in turn with
//! `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host`, and hop-by-hop
//! headers removed both ways. A request without a body is retried on the next backend when a
//! backend refuses the connection; one with a body cannot be replayed and gets 502. No rule:
//! 404. Upgrades (WebSocket) are not forwarded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::tcp::CONNECT_TIMEOUT;
use super::LiveRoute;

/// Bodies both ways: the other side's body streamed through, or a short error text.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The pooled client towards backends.
pub(crate) type HttpClient = Client<HttpConnector, ProxyBody>;

/// How long an idle pooled connection to a backend is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client gets to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one hop and must not be passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Serves one client connection until it closes, or until the listener closes (then the
/// request in flight is finished and the connection closed).
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    live: Arc<ArcSwap<LiveRoute>>,
    client: HttpClient,
    mut closed: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request| {
        let route = live.load_full();
        let client = client.clone();
        async move { Ok::<_, Infallible>(forward(request, peer, &route, &client).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = super::closing(&mut closed) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "ingress http connection ended");
    }
}

/// Routes and forwards one request; every failure becomes a response.
async fn forward(
    request: Request<Incoming>,
    peer: SocketAddr,
    route: &LiveRoute,
    client: &HttpClient,
) -> Response<ProxyBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host())
        .map(str::to_owned);
    let Some(backends) = route.select(host.as_deref(), request.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "no route for this host and path\n");
    };

    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    add_forwarded(&mut headers, peer, host.as_deref());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();

    // Only a request without a body can be sent again after a backend refused it.
    let replayable = body.is_end_stream();
    let mut body = Some(body);
    for backend in backends.order() {
        let outgoing = if replayable {
            Empty::new().map_err(|never| match never {}).boxed()
        } else if let Some(body) = body.take() {
            body.boxed()
        } else {
            break;
        };
        let Ok(uri) = Uri::try_from(format!("http://{backend}{path}")) else {
            return text(
                StatusCode::BAD_REQUEST,
                "request target cannot be forwarded\n",
            );
        };
        let mut outgoing = Request::new(outgoing);
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri;
        *outgoing.version_mut() = Version::HTTP_11;
        *outgoing.headers_mut() = headers.clone();
        match client.request(outgoing).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return Response::from_parts(parts, body.boxed());
            }
            Err(error) if error.is_connect() => {
                tracing::debug!(%peer, %backend, %error, "ingress backend refused");
            }
            Err(error) => {
                tracing::debug!(%peer, %backend, %error, "ingress backend failed");
                break;
            }
        }
    }
    text(StatusCode::BAD_GATEWAY, "no backend answered\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // An upgrade cannot be relayed by this proxy; without `Connection` the header is moot.
    headers.remove(header::UPGRADE);
}

/// Appends the client to `X-Forwarded-For` and says how and for which host it came.
fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: Option<&str>) {
    let client = peer.ip().to_canonical().to_string();
    let previous: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let chain = if previous.is_empty() {
        client
    } else {
        format!("{}, {client}", previous.join(", "))
    };
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match host.and_then(|host| HeaderValue::try_from(host).ok()) {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers() {
        let peer: SocketAddr = "[::ffff:192.0.2.7]:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        add_forwarded(&mut headers, peer, Some("shop.example.com:8080"));
        assert_eq!(headers[&X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        assert_eq!(headers[&X_FORWARDED_HOST], "shop.example.com:8080");

        let mut headers = HeaderMap::new();
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        headers.insert(&X_FORWARDED_HOST, HeaderValue::from_static("spoofed"));
        add_forwarded(&mut headers, "198.51.100.1:1".parse().unwrap(), None);
        assert_eq!(
            headers[&X_FORWARDED_FOR],
            "10.0.0.1, 10.0.0.2, 198.51.100.1"
        );
        assert!(!headers.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}
