//! The typed client of Hivemind's REST API (SPEC §5), used by the CLI and by agents.
//!
//! **Agents reach the server only through this crate**, never through the store. It knows URLs,
//! methods and the wire types in [`wire`]; it knows nothing of how the server stores things. A
//! non-2xx answer becomes [`ClientError::Api`] carrying the server's code, message, field and fix.

mod error;
pub mod exec;
mod files;
pub mod logs;
mod remote;
mod sse;
pub mod volumes;
pub mod wire;

use std::time::Duration;

use futures::{Stream, StreamExt};
use hivemind_types::{App, Assignment, Node, NodeReport, Service};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::ClientError;
pub use remote::{AgentClient, LogTarget, AGENT_CONNECT_TIMEOUT, AGENT_RESPONSE_TIMEOUT};
use wire::{
    event_name, ChangeEvent, DeployRequest, DeployResponse, ErrorBody, ErrorDetail, EventFilter,
    JoinResponse, ReplicaFilter, ReplicaView, ScaleRequest, TokenCreateRequest, TokenCreated,
    TokenView,
};

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// One item of [`Client::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Change(ChangeEvent),
    /// The server could not continue without a gap; the stream ends after this. Re-list, then
    /// watch again from the current revision.
    Reset,
}

/// A handle to one server, cheap to clone (connections are pooled and shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Without a trailing slash, e.g. `http://127.0.0.1:8080`.
    base: String,
    token: String,
    namespace: String,
}

impl Client {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            // Building fails only when the TLS backend or system configuration cannot load; this
            // client is built without TLS, so that leaves nothing to report.
            .unwrap_or_default();
        Client {
            http,
            base: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            namespace: "default".to_string(),
        }
    }

    /// The same client, acting in `namespace` instead of `default`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Client {
        self.namespace = namespace.into();
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The bearer token this client presents.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The same client, presenting `token` instead (a node switching from its join token to
    /// the credential the join returned).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = token.into();
        self
    }

    /// `GET /healthz`: Ok when the server answers.
    pub async fn healthz(&self) -> Result<()> {
        let url = format!("{}/healthz", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        check(resp, &url).await.map(drop)
    }

    /// Creates or updates an app from a Compose file.
    pub async fn deploy(&self, req: &DeployRequest) -> Result<DeployResponse> {
        self.call(reqwest::Method::POST, "/apps", &[], Some(req))
            .await
    }

    pub async fn apps(&self) -> Result<Vec<App>> {
        self.get("/apps", &[]).await
    }

    pub async fn app(&self, name: &str) -> Result<App> {
        self.get(&format!("/apps/{}", seg(name)), &[]).await
    }

    /// Deletes the app, its services and their replicas; agents then remove the containers.
    pub async fn delete_app(&self, name: &str) -> Result<App> {
        let path = format!("/apps/{}", seg(name));
        self.call(reqwest::Method::DELETE, &path, &[], None::<&()>)
            .await
    }

    /// Services of one app, or of every app in the namespace.
    pub async fn services(&self, app: Option<&str>) -> Result<Vec<Service>> {
        let query: Vec<(&str, &str)> = app.map(|a| ("app", a)).into_iter().collect();
        self.get("/services", &query).await
    }

    pub async fn service(&self, app: &str, name: &str) -> Result<Service> {
        self.get(&format!("/services/{}/{}", seg(app), seg(name)), &[])
            .await
    }

    /// Resolves `app/name` or a bare `name`. A bare name must be unique in the namespace;
    /// otherwise the error lists the apps that have it.
    pub async fn find_service(&self, name: &str) -> Result<Service> {
        if let Some((app, name)) = name.split_once('/') {
            return self.service(app, name).await;
        }
        let mut found: Vec<Service> = self.get("/services", &[("name", name)]).await?;
        match found.len() {
            0 => Err(ClientError::Api {
                status: 404,
                code: "not_found".to_string(),
                message: format!("no service named {name} in namespace {}", self.namespace),
                field: None,
                fix: Some("list the services with `hivemind services`".to_string()),
            }),
            1 => Ok(found.remove(0)),
            _ => Err(ClientError::AmbiguousService {
                name: name.to_string(),
                apps: found.into_iter().map(|s| s.app).collect(),
            }),
        }
    }

    /// Sets a service's replica count. With `app` absent, `name` may be `app/name` or a bare
    /// name that is unique in the namespace.
    pub async fn scale(&self, app: Option<&str>, name: &str, replicas: u32) -> Result<Service> {
        let (app, name) = match app {
            Some(app) => (app.to_string(), name.to_string()),
            None => {
                let s = self.find_service(name).await?;
                (s.app, s.name)
            }
        };
        self.scale_at(&app, &name, replicas, None).await
    }

    /// Sets a service's replica count if the service is still at `revision` (when given).
    pub async fn scale_at(
        &self,
        app: &str,
        name: &str,
        replicas: u32,
        revision: Option<u64>,
    ) -> Result<Service> {
        let path = format!("/services/{}/{}/scale", seg(app), seg(name));
        let body = ScaleRequest { replicas, revision };
        self.call(reqwest::Method::POST, &path, &[], Some(&body))
            .await
    }

    /// Stops (`stopped: true`) or starts again one service of `app`, or every service of it
    /// when `service` is `None` (`hivemind stop/start`). Returns the services as they are now.
    pub async fn set_stopped(
        &self,
        app: &str,
        service: Option<&str>,
        stopped: bool,
    ) -> Result<Vec<Service>> {
        let verb = if stopped { "stop" } else { "start" };
        let path = match service {
            Some(name) => format!("/services/{}/{}/{verb}", seg(app), seg(name)),
            None => format!("/apps/{}/{verb}", seg(app)),
        };
        self.call::<_, ()>(reqwest::Method::POST, &path, &[], None)
            .await
    }

    /// Replicas joined with their last reported status.
    pub async fn replicas(&self, filter: &ReplicaFilter) -> Result<Vec<ReplicaView>> {
        let mut query = Vec::new();
        for (k, v) in [
            ("app", &filter.app),
            ("service", &filter.service),
            ("node", &filter.node),
        ] {
            if let Some(v) = v {
                query.push((k, v.as_str()));
            }
        }
        self.get("/replicas", &query).await
    }

    /// Recorded events (exits, OOM kills, back-offs, failed starts, nodes), oldest first. Not
    /// to be confused with [`Client::events`], the change stream of the same route.
    pub async fn recorded_events(
        &self,
        filter: &EventFilter,
    ) -> Result<Vec<hivemind_types::Event>> {
        let limit = filter.limit.map(|l| l.to_string());
        let mut query = Vec::new();
        for (k, v) in [
            ("app", filter.app.as_deref()),
            ("service", filter.service.as_deref()),
            ("replica", filter.replica.as_deref()),
            ("type", filter.event_type.map(|t| t.as_str())),
            ("limit", limit.as_deref()),
        ] {
            if let Some(v) = v {
                query.push((k, v));
            }
        }
        self.get("/events", &query).await
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        self.get("/nodes", &[]).await
    }

    /// The node's complete desired set. With `after`, the server holds the request until a
    /// change touches the node's replicas or `timeout` passes (a long poll); agents pass the
    /// generation they last applied.
    pub async fn assignment(
        &self,
        node: &str,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Assignment> {
        let url = self.url(&format!("/nodes/{}/assignment", seg(node)));
        let after_s = after.map(|a| a.to_string());
        let timeout_s = timeout.as_millis().to_string();
        let mut query = vec![("timeout_ms", timeout_s.as_str())];
        if let Some(a) = &after_s {
            query.push(("after", a));
        }
        // Give the server time to answer its own timeout before ours fires.
        let req = self
            .authed(self.http.get(&url))
            .query(&query)
            .timeout(timeout + Duration::from_secs(10));
        let resp = self.send(req, &url).await?;
        decode(check(resp, &url).await?, &url).await
    }

    /// The node's assignment after generation `after` as the server sends it, long-polled:
    /// what changed since then (`delta: true`, merged with `Assignment::apply`) when the
    /// server's history reaches back that far, else whole; without `after`, whole at once.
    /// Decoded as `T`, so that a caller needing only part of it (the simulator, one process
    /// standing for a thousand nodes) skips the rest.
    pub async fn assignment_delta<T: DeserializeOwned>(
        &self,
        node: &str,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<T> {
        let url = self.url(&format!("/nodes/{}/assignment", seg(node)));
        let mut query = vec![("timeout_ms", timeout.as_millis().to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
            query.push(("delta", "true".to_string()));
        }
        let req = self
            .authed(self.http.get(&url))
            .query(&query)
            .timeout(timeout + Duration::from_secs(10));
        let resp = self.send(req, &url).await?;
        decode(check(resp, &url).await?, &url).await
    }

    /// Brings `base` (the node's last whole assignment, or none yet) to the next one,
    /// long-polled as a delta and merged in place: without a base, the whole assignment at
    /// once. On an error `base` is left as it was.
    pub async fn assignment_since(
        &self,
        node: &str,
        base: &mut Option<Assignment>,
        timeout: Duration,
    ) -> Result<()> {
        let next = self
            .assignment_delta(node, base.as_ref().map(|b| b.generation), timeout)
            .await?;
        match base {
            Some(whole) => whole.apply(next),
            None => *base = Some(next),
        }
        Ok(())
    }

    /// Reports what the agent observed on its node.
    pub async fn report(&self, report: &NodeReport) -> Result<()> {
        let url = self.url(&format!("/nodes/{}/report", seg(&report.node)));
        let req = self.authed(self.http.put(&url)).json(report);
        check(self.send(req, &url).await?, &url).await.map(drop)
    }

    /// Renews `node`'s lease: the cheap heartbeat, which the server keeps in memory. Fails
    /// with 404 until the node has registered with its first [`Client::report`].
    pub async fn renew_lease(&self, node: &str) -> Result<()> {
        let url = self.url(&format!("/nodes/{}/lease", seg(node)));
        let req = self.authed(self.http.put(&url));
        check(self.send(req, &url).await?, &url).await.map(drop)
    }

    /// Joins `node` with this client's join token (or the admin token): returns the node's own
    /// credential, to use for everything the node does from then on, and its agent secret.
    pub async fn join(&self, node: &str) -> Result<JoinResponse> {
        let path = format!("/nodes/{}/join", seg(node));
        self.call(reqwest::Method::POST, &path, &[], None::<&()>)
            .await
    }

    /// Removes `node` and revokes its credential.
    pub async fn delete_node(&self, node: &str) -> Result<()> {
        let url = self.url(&format!("/nodes/{}", seg(node)));
        let req = self.authed(self.http.delete(&url));
        check(self.send(req, &url).await?, &url).await.map(drop)
    }

    /// Mints a token; its secret is in the answer and nowhere else, ever.
    pub async fn create_token(&self, req: &TokenCreateRequest) -> Result<TokenCreated> {
        self.call(reqwest::Method::POST, "/tokens", &[], Some(req))
            .await
    }

    /// Join tokens and node credentials, without secrets.
    pub async fn tokens(&self) -> Result<Vec<TokenView>> {
        self.get("/tokens", &[]).await
    }

    /// Revokes a token (a join token, or a node credential by `n-NODE`).
    pub async fn delete_token(&self, id: &str) -> Result<TokenView> {
        let path = format!("/tokens/{}", seg(id));
        self.call(reqwest::Method::DELETE, &path, &[], None::<&()>)
            .await
    }

    /// Changes after revision `since` (or from now), then live ones, until the server ends the
    /// stream. A [`Event::Reset`] means the watcher must re-list.
    pub async fn events(
        &self,
        since: Option<u64>,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + 'static> {
        let url = self.url("/events");
        let mut req = self
            .authed(self.http.get(&url))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(since) = since {
            req = req.query(&[("since", since)]);
        }
        let resp = check(self.send(req, &url).await?, &url).await?;
        let bytes = resp.bytes_stream();
        let state = (bytes, sse::SseParser::default(), Vec::<Event>::new(), url);
        Ok(futures::stream::unfold(
            state,
            |(mut bytes, mut parser, mut ready, url)| async move {
                loop {
                    if !ready.is_empty() {
                        let event = ready.remove(0);
                        return Some((Ok(event), (bytes, parser, ready, url)));
                    }
                    match bytes.next().await? {
                        Ok(chunk) => {
                            for frame in parser.push(&chunk) {
                                match to_event(frame, &url) {
                                    Some(Ok(event)) => ready.push(event),
                                    Some(Err(e)) => {
                                        return Some((Err(e), (bytes, parser, ready, url)))
                                    }
                                    None => {}
                                }
                            }
                        }
                        Err(source) => {
                            let err = ClientError::Transport {
                                url: url.clone(),
                                source,
                            };
                            return Some((Err(err), (bytes, parser, ready, url)));
                        }
                    }
                }
            },
        ))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        self.call(reqwest::Method::GET, path, query, None::<&()>)
            .await
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T> {
        let url = self.url(path);
        let mut req = self.authed(self.http.request(method, &url)).query(query);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = self.send(req, &url).await?;
        decode(check(resp, &url).await?, &url).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.bearer_auth(&self.token)
            .query(&[("namespace", self.namespace.as_str())])
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })
    }
}

/// Turns a non-2xx response into `ClientError::Api`, keeping the server's words.
async fn check(resp: reqwest::Response, url: &str) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let detail = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => body.error,
        // Something other than Hivemind answered (a proxy, or a route this server lacks).
        Err(_) => ErrorDetail {
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            message: format!("{url} answered {status}: {}", text.trim()),
            field: None,
            fix: None,
        },
    };
    Err(ClientError::from_detail(status.as_u16(), detail))
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response, url: &str) -> Result<T> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
        url: url.to_string(),
        source,
    })
}

/// The event a frame carries; `None` for event types this client does not know, which newer
/// servers may add and older clients skip.
fn to_event(frame: sse::SseFrame, url: &str) -> Option<Result<Event>> {
    match frame.event.as_deref() {
        Some(event_name::RESET) => Some(Ok(Event::Reset)),
        // Unnamed events are changes too, so a server that omits `event:` still works.
        Some(event_name::CHANGE) | None => Some(
            serde_json::from_str(&frame.data)
                .map(Event::Change)
                .map_err(|source| ClientError::Decode {
                    url: url.to_string(),
                    source,
                }),
        ),
        Some(_) => None,
    }
}

/// What `seg` encodes: everything but unreserved characters (`/` included).
const SEGMENT_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment, so that names can never change the route.
fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT_ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("web-1.a_b"), "web-1.a_b");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn frames_become_events() {
        let frame = sse::SseFrame {
            event: Some("change".into()),
            data: r#"{"revision":3,"kind":"app","key":"default/a","op":"put","value":{}}"#.into(),
            id: Some("3".into()),
        };
        match to_event(frame, "u").unwrap().unwrap() {
            Event::Change(c) => {
                assert_eq!(c.revision, 3);
                assert_eq!(c.op, wire::ChangeOp::Put);
            }
            other => panic!("{other:?}"),
        }
        let reset = sse::SseFrame {
            event: Some("reset".into()),
            data: String::new(),
            id: None,
        };
        assert_eq!(to_event(reset, "u").unwrap().unwrap(), Event::Reset);
        let future = sse::SseFrame {
            event: Some("something-new".into()),
            data: "{}".into(),
            id: None,
        };
        assert!(to_event(future, "u").is_none());
    }
}
