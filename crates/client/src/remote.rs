//! Streams that reach into nodes: logs and exec, through the server ([`Client`]) or straight
//! from a node's agent ([`AgentClient`], which the server uses to proxy).
//!
//! The agent's routes live under `/v1` on its own address (`--agent-addr`). It accepts the
//! bearer token its agent uses towards the server; mTLS between server and agents comes with
//! clustering.

use std::time::Duration;

use futures::Stream;

use crate::exec::{exec_frames, ExecFrame, ExecRequest, UPGRADE_PROTOCOL};
use crate::logs::{body_lines, log_lines, LogLine, LogQuery};
use crate::{check, seg, Client, ClientError, Result};

/// Whose logs to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Replica(String),
    /// All replicas of a service, merged (each record names its replica).
    Service {
        app: String,
        name: String,
    },
}

impl Client {
    /// Log records of a replica or a service; with `query.follow` the stream stays open.
    pub async fn logs(
        &self,
        target: &LogTarget,
        query: &LogQuery,
    ) -> Result<impl Stream<Item = Result<LogLine>> + Send + 'static> {
        let path = match target {
            LogTarget::Replica(id) => format!("/replicas/{}/logs", seg(id)),
            LogTarget::Service { app, name } => {
                format!("/services/{}/{}/logs", seg(app), seg(name))
            }
        };
        let url = self.url(&path);
        let req = self.authed(self.http.get(&url)).query(&query.to_pairs());
        let resp = check(self.send(req, &url).await?, &url).await?;
        Ok(log_lines(body_lines(resp, &url), &url))
    }

    /// Runs `cmd` in a replica; the stream ends with [`ExecFrame::Exit`] or [`ExecFrame::Error`].
    pub async fn exec(
        &self,
        replica: &str,
        cmd: Vec<String>,
    ) -> Result<impl Stream<Item = Result<ExecFrame>> + Send + 'static> {
        let url = self.url(&format!("/replicas/{}/exec", seg(replica)));
        let req = self
            .authed(self.http.post(&url))
            .json(&ExecRequest::command(cmd));
        let resp = check(self.send(req, &url).await?, &url).await?;
        Ok(exec_frames(body_lines(resp, &url), &url))
    }

    /// Opens a framed exec session (stdin, TTY, binary output) in a replica: the returned
    /// connection carries [`crate::exec::Frame`]s both ways and ends after an exit or error
    /// frame. Refusals (unknown replica, not running) come back as [`ClientError::Api`].
    pub async fn exec_session(
        &self,
        replica: &str,
        request: &ExecRequest,
    ) -> Result<reqwest::Upgraded> {
        let url = self.url(&format!("/replicas/{}/exec", seg(replica)));
        upgrade(self.authed(self.http.post(&url)).json(request), &url).await
    }
}

/// How long the server waits for a node agent to accept a connection.
pub const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the server waits for an agent's response head once the request is sent. Logs answer
/// at once and exec once the process starts; a hung agent (accepting, never answering) used to
/// hang the proxied API call forever.
pub const AGENT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keep-alive on agent connections: a streamed body (a followed log, an exec session) may
/// stay open for hours, but a peer that died (host gone, cable pulled) is noticed within about
/// 10 s + 3 x 5 s.
const AGENT_KEEPALIVE: Duration = Duration::from_secs(10);
const AGENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const AGENT_KEEPALIVE_RETRIES: u32 = 3;

/// A node agent's own endpoint, as the server reaches it. Every call is bounded: connecting by
/// [`AGENT_CONNECT_TIMEOUT`], the response head by [`AGENT_RESPONSE_TIMEOUT`] (or
/// [`AgentClient::with_response_timeout`]), a streamed body by TCP keep-alive.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    token: String,
    response_timeout: Duration,
}

impl AgentClient {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> AgentClient {
        let http = reqwest::Client::builder()
            .connect_timeout(AGENT_CONNECT_TIMEOUT)
            .tcp_keepalive(AGENT_KEEPALIVE)
            .tcp_keepalive_interval(AGENT_KEEPALIVE_INTERVAL)
            .tcp_keepalive_retries(AGENT_KEEPALIVE_RETRIES)
            .build()
            .unwrap_or_default();
        AgentClient {
            http,
            base: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            response_timeout: AGENT_RESPONSE_TIMEOUT,
        }
    }

    /// The same client with another response-head timeout.
    pub fn with_response_timeout(mut self, timeout: Duration) -> AgentClient {
        self.response_timeout = timeout;
        self
    }

    /// `GET /v1/replicas/{id}/logs`: records without the replica name.
    pub async fn logs(
        &self,
        replica: &str,
        query: &LogQuery,
    ) -> Result<impl Stream<Item = Result<LogLine>> + Send + 'static> {
        let url = format!("{}/v1/replicas/{}/logs", self.base, seg(replica));
        let req = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .query(&query.to_pairs());
        let resp = check(self.send(req, &url).await?, &url).await?;
        Ok(log_lines(body_lines(resp, &url), &url))
    }

    /// `POST /v1/replicas/{id}/exec`.
    pub async fn exec(
        &self,
        replica: &str,
        cmd: Vec<String>,
    ) -> Result<impl Stream<Item = Result<ExecFrame>> + Send + 'static> {
        let url = format!("{}/v1/replicas/{}/exec", self.base, seg(replica));
        let req = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&ExecRequest::command(cmd));
        let resp = check(self.send(req, &url).await?, &url).await?;
        Ok(exec_frames(body_lines(resp, &url), &url))
    }

    /// `POST /v1/replicas/{id}/exec` upgraded to a framed session; see [`Client::exec_session`].
    pub async fn exec_session(
        &self,
        replica: &str,
        request: &ExecRequest,
    ) -> Result<reqwest::Upgraded> {
        let url = format!("{}/v1/replicas/{}/exec", self.base, seg(replica));
        let req = self.http.post(&url).bearer_auth(&self.token).json(request);
        bounded(self.response_timeout, &url, upgrade(req, &url)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        bounded(self.response_timeout, url, send(req, url)).await
    }
}

/// `call`, or [`ClientError::Timeout`] when it takes longer than `after`.
async fn bounded<T>(
    after: Duration,
    url: &str,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(after, call).await.unwrap_or_else(|_| {
        Err(ClientError::Timeout {
            url: url.to_string(),
            after,
        })
    })
}

/// Sends `req` asking to switch to the exec protocol; a refusal becomes [`ClientError::Api`].
async fn upgrade(req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Upgraded> {
    let req = req
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, UPGRADE_PROTOCOL);
    let resp = send(req, url).await?;
    if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        check(resp, url).await?;
        // A 2xx without the switch: something in between does not pass upgrades on.
        return Err(ClientError::Protocol {
            url: url.to_string(),
            message: format!("expected 101 Switching Protocols, got {status}"),
        });
    }
    resp.upgrade()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })
}

async fn send(req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
    req.send().await.map_err(|source| ClientError::Transport {
        url: url.to_string(),
        source,
    })
}
