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

/// A node agent's own endpoint, as the server reaches it.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AgentClient {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> AgentClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        AgentClient {
            http,
            base: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
        }
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
        let resp = check(send(req, &url).await?, &url).await?;
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
        let resp = check(send(req, &url).await?, &url).await?;
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
        upgrade(req, &url).await
    }
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
