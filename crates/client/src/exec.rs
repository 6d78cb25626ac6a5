//! Exec on the wire: the request, and the newline-delimited JSON [`ExecFrame`]s of its answer,
//! shared by the agent (which serves them), the server (which proxies them) and the CLI.

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::{ClientError, Result};

/// `POST .../replicas/{id}/exec`: the command to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
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
    fn exec_frames_are_json_lines() {
        assert_eq!(ExecFrame::Exit(3).encode(), b"{\"exit\":3}\n");
        assert_eq!(
            ExecFrame::Stdout("hi\n".into()).encode(),
            b"{\"stdout\":\"hi\\n\"}\n"
        );
    }
}
