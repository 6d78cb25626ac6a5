//! Exec on the wire: the request, and the two forms of its answer, shared by the agent (which
//! serves them), the server (which proxies them) and the CLI.
//!
//! - Without stdin or TTY, a plain `POST` answers newline-delimited JSON [`ExecFrame`]s.
//! - With `Connection: Upgrade` and `Upgrade: hivemind-exec.v1` ([`UPGRADE_PROTOCOL`]), the
//!   answer is `101 Switching Protocols` and the connection then carries binary [`Frame`]s both
//!   ways ([`frame`]): stdin, stdout, stderr, resize, stdin-eof, exit, error. This is the only
//!   form that can carry stdin and a terminal, and it keeps output bytes as they are.

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::{ClientError, Result};

pub mod frame;

pub use frame::{read_frame, write_frame, Frame, FrameError};

/// The `Upgrade` header value that asks for a framed exec session.
pub const UPGRADE_PROTOCOL: &str = "hivemind-exec.v1";

/// `POST .../replicas/{id}/exec`: the command to run and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// Forward the client's stdin to the process (`-i`). Needs the upgraded session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Give the process a terminal (`-t`): stdout and stderr become one stream. Needs the
    /// upgraded session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// The terminal's size at the start, with `tty`; later changes come as resize frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<TtySize>,
}

impl ExecRequest {
    /// A command without stdin or TTY.
    pub fn command(cmd: Vec<String>) -> ExecRequest {
        ExecRequest {
            cmd,
            ..ExecRequest::default()
        }
    }

    /// Whether the request asks for something only the upgraded session can carry.
    pub fn is_interactive(&self) -> bool {
        self.stdin || self.tty
    }
}

// Defined in hivemind-types so the runtime can take it without a client dependency.
pub use hivemind_types::exec::TtySize;

/// Whether request headers ask for the framed session (`Connection: upgrade` and
/// `Upgrade: hivemind-exec.v1`, compared without case as HTTP says).
pub fn wants_upgrade(headers: &reqwest::header::HeaderMap) -> bool {
    let has = |name: reqwest::header::HeaderName, value: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(value))
            })
        })
    };
    has(reqwest::header::CONNECTION, "upgrade") && has(reqwest::header::UPGRADE, UPGRADE_PROTOCOL)
}

/// One frame of an exec stream. Output is text (invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecFrame {
    Stdout(String),
    Stderr(String),
    /// The process ended with this status (last frame).
    Exit(i32),
    /// The process could not run or the stream broke (last frame).
    Error(String),
}

impl ExecFrame {
    /// The frame as one JSON line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Exec frames from a line stream.
pub(crate) fn exec_frames(
    lines: impl Stream<Item = Result<Vec<u8>>> + Send,
    url: &str,
) -> impl Stream<Item = Result<ExecFrame>> + Send {
    let url = url.to_string();
    lines.map(move |line| {
        serde_json::from_slice(&line?).map_err(|source| ClientError::Decode {
            url: url.clone(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_keep_their_old_shape() {
        let json = serde_json::to_string(&ExecRequest::command(vec!["ls".into()])).unwrap();
        assert_eq!(json, r#"{"cmd":["ls"]}"#);
        let parsed: ExecRequest = serde_json::from_str(r#"{"cmd":["sh"],"tty":true}"#).unwrap();
        assert!(parsed.tty && !parsed.stdin && parsed.is_interactive());
    }

    #[test]
    fn upgrade_headers_are_matched_without_case() {
        use reqwest::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(!wants_upgrade(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("Hivemind-Exec.v1"));
        assert!(wants_upgrade(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!wants_upgrade(&headers));
    }

    #[test]
    fn exec_frames_are_json_lines() {
        assert_eq!(ExecFrame::Exit(3).encode(), b"{\"exit\":3}\n");
        assert_eq!(
            ExecFrame::Stdout("hi\n".into()).encode(),
            b"{\"stdout\":\"hi\\n\"}\n"
        );
    }
}
