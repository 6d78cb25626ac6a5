//! Logs on the wire, shared by the agent (which serves them), the server (which proxies
//! them) and the CLI.
//!
//! A log stream is text, one record per line: `[REPLICA ]STREAM NEXT TEXT`, where `STREAM` is
//! `stdout` or `stderr`, `NEXT` the byte offset in that replica's stream file just past this
//! line (resume from it with a [`LogCursor`] and nothing is lost or repeated), and `TEXT` the
//! line as the process wrote it. The agent sends records without the replica; the server adds
//! it when it merges several replicas.

use std::fmt;
use std::str::FromStr;

use futures::{Stream, StreamExt};

use crate::{ClientError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogStream {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            _ => Err(()),
        }
    }
}

/// Where to resume one stream of one replica: the `NEXT` of the last record seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCursor {
    pub replica: String,
    pub stream: LogStream,
    pub offset: u64,
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.replica, self.stream, self.offset)
    }
}

impl FromStr for LogCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.rsplitn(3, ':');
        let offset = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        let stream = parts.next().ok_or(())?.parse()?;
        let replica = parts.next().filter(|r| !r.is_empty()).ok_or(())?;
        Ok(LogCursor {
            replica: replica.to_string(),
            stream,
            offset,
        })
    }
}

/// What part of the logs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Keep the stream open and send lines as they are written.
    pub follow: bool,
    /// Only the last N lines of each stream (all when `None`).
    pub tail: Option<usize>,
    /// Only lines written after this (Unix ms). Plain log files carry no timestamps, so agents
    /// ignore it for now.
    pub since_ms: Option<u64>,
    /// One stream only; both when `None`.
    pub stream: Option<LogStream>,
    /// Resume points; they override `tail` for the streams they name.
    pub cursors: Vec<LogCursor>,
}

impl LogQuery {
    /// As URL query pairs (`follow`, `tail`, `since`, `stream`, `cursor`).
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("follow", self.follow.to_string())];
        if let Some(tail) = self.tail {
            pairs.push(("tail", tail.to_string()));
        }
        if let Some(since) = self.since_ms {
            pairs.push(("since", since.to_string()));
        }
        pairs.push((
            "stream",
            self.stream.map_or("both", LogStream::as_str).to_string(),
        ));
        if !self.cursors.is_empty() {
            let cursors: Vec<String> = self.cursors.iter().map(|c| c.to_string()).collect();
            pairs.push(("cursor", cursors.join(",")));
        }
        pairs
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Set by the server when it merges replicas; `None` in an agent's own stream.
    pub replica: Option<String>,
    pub stream: LogStream,
    pub next: u64,
    pub text: Vec<u8>,
}

impl LogLine {
    /// The record with its newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 32);
        if let Some(replica) = &self.replica {
            out.extend_from_slice(replica.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(format!("{} {} ", self.stream, self.next).as_bytes());
        out.extend_from_slice(&self.text);
        out.push(b'\n');
        out
    }

    /// Parses one record (without its newline).
    pub fn parse(record: &[u8]) -> Option<LogLine> {
        let (first, rest) = split_word(record)?;
        let first = std::str::from_utf8(first).ok()?;
        let (replica, stream, rest) = match first.parse::<LogStream>() {
            Ok(stream) => (None, stream, rest),
            Err(()) => {
                let (stream, rest) = split_word(rest)?;
                let stream = std::str::from_utf8(stream).ok()?.parse().ok()?;
                (Some(first.to_string()), stream, rest)
            }
        };
        let (next, text) = match split_word(rest) {
            Some(split) => split,
            None => (rest, &[][..]),
        };
        let next = std::str::from_utf8(next).ok()?.parse().ok()?;
        Some(LogLine {
            replica,
            stream,
            next,
            text: text.to_vec(),
        })
    }
}

fn split_word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = s.iter().position(|b| *b == b' ')?;
    Some((&s[..space], &s[space + 1..]))
}

/// Splits a byte stream into lines (without their newlines); a final unterminated line is
/// yielded as is.
pub fn split_lines<S, E>(bytes: S) -> impl Stream<Item = Result<Vec<u8>>> + Send
where
    S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Send + Unpin,
    E: Into<ClientError>,
{
    let state = (
        bytes,
        Vec::<u8>::new(),
        std::collections::VecDeque::new(),
        false,
    );
    futures::stream::unfold(
        state,
        move |(mut bytes, mut buf, mut ready, mut done)| async move {
            loop {
                if let Some(line) = ready.pop_front() {
                    return Some((Ok(line), (bytes, buf, ready, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        let mut start = 0;
                        for i in 0..buf.len() {
                            if buf[i] == b'\n' {
                                ready.push_back(buf[start..i].to_vec());
                                start = i + 1;
                            }
                        }
                        buf.drain(..start);
                    }
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(e.into()), (bytes, buf, ready, done)));
                    }
                    None => {
                        done = true;
                        if !buf.is_empty() {
                            ready.push_back(std::mem::take(&mut buf));
                        }
                    }
                }
            }
        },
    )
}

/// A transport error in the middle of a streamed body.
pub(crate) struct BodyError {
    pub(crate) url: String,
    pub(crate) source: reqwest::Error,
}

impl From<BodyError> for ClientError {
    fn from(e: BodyError) -> ClientError {
        ClientError::Transport {
            url: e.url,
            source: e.source,
        }
    }
}

/// The lines of a streamed response body.
pub(crate) fn body_lines(
    resp: reqwest::Response,
    url: &str,
) -> impl Stream<Item = Result<Vec<u8>>> + Send {
    let u = url.to_string();
    let bytes = resp.bytes_stream().map(move |r| {
        r.map_err(|source| BodyError {
            url: u.clone(),
            source,
        })
    });
    split_lines(Box::pin(bytes))
}

/// Log records from a line stream; a line that is not a record is a protocol error.
pub(crate) fn log_lines(
    lines: impl Stream<Item = Result<Vec<u8>>> + Send,
    url: &str,
) -> impl Stream<Item = Result<LogLine>> + Send {
    let url = url.to_string();
    lines.map(move |line| {
        let line = line?;
        LogLine::parse(&line).ok_or_else(|| ClientError::Protocol {
            url: url.clone(),
            message: format!(
                "not a log record: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let line = LogLine {
            replica: Some("web-3f9k2".into()),
            stream: LogStream::Stderr,
            next: 1234,
            text: b"hello world ".to_vec(),
        };
        let encoded = line.encode();
        assert_eq!(encoded, b"web-3f9k2 stderr 1234 hello world \n");
        assert_eq!(LogLine::parse(&encoded[..encoded.len() - 1]), Some(line));
        let bare = LogLine::parse(b"stdout 7 x y").unwrap();
        assert_eq!(bare.replica, None);
        assert_eq!(bare.text, b"x y");
        let empty = LogLine::parse(b"stdout 7 ").unwrap();
        assert!(empty.text.is_empty());
        assert_eq!(LogLine::parse(b"garbage"), None);
        assert_eq!(LogLine::parse(b"web stdout x y"), None);
    }

    #[test]
    fn cursors_round_trip() {
        let c: LogCursor = "web-1:stdout:42".parse().unwrap();
        assert_eq!(c.replica, "web-1");
        assert_eq!(c.stream, LogStream::Stdout);
        assert_eq!(c.offset, 42);
        assert_eq!(c.to_string(), "web-1:stdout:42");
        assert!("stdout:42".parse::<LogCursor>().is_err());
        assert!("w:err:42".parse::<LogCursor>().is_err());
    }

    #[tokio::test]
    async fn lines_are_split_across_chunks() {
        let chunks: Vec<std::result::Result<bytes::Bytes, ClientError>> = vec![
            Ok(bytes::Bytes::from_static(b"a\nb")),
            Ok(bytes::Bytes::from_static(b"c\n\nd")),
        ];
        let lines: Vec<Vec<u8>> = split_lines(futures::stream::iter(chunks))
            .map(|l| l.unwrap())
            .collect()
            .await;
        assert_eq!(
            lines,
            [b"a".to_vec(), b"bc".to_vec(), vec![], b"d".to_vec()]
        );
    }
}
