//! Logs on the wire, shared by the agent (which serves them), the server (which proxies
//! them) and the CLI.
//!
//! A log stream is text, one record per line:
//!
//! ```text
//! [REPLICA:]SEQ:OFFSET TIME STREAM TAG TEXT
//! web-3f9k2:0000000003:1234 2026-11-27T07:43:22.123456789Z stdout F hello world
//! ```
//!
//! - `SEQ:OFFSET` ([`LogPos`]) is where the record *ends* in that replica's numbered log files:
//!   resume from it with a [`LogCursor`] and nothing is lost or repeated, even across log
//!   rotation. The agent sends records without the replica; the server prefixes it (the first
//!   word is then exactly the cursor to resume that replica from).
//! - `TIME` is when the node's log driver read the line (RFC 3339, UTC, nanoseconds).
//! - `STREAM` is `stdout` or `stderr`; `TAG` is `F` for a full line and `P` for a piece that
//!   did not end with a newline (a line longer than 16 KiB comes as `P` pieces, then `F`).
//! - `TEXT` is the line as the process wrote it, without its newline.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};

use crate::{ClientError, Result};

// Defined in hivemind-types so the node crates (runtime, logs) share them without a client
// dependency.
pub use hivemind_types::logs::{LogPos, LogStream};

/// Where to resume one replica: the position of the last record seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCursor {
    pub replica: String,
    pub pos: LogPos,
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.replica, self.pos)
    }
}

impl FromStr for LogCursor {
    type Err = ();
    /// `REPLICA:SEQ:OFFSET`.
    fn from_str(s: &str) -> Result<Self, ()> {
        match parse_cursor_word(s)? {
            (Some(replica), pos) => Ok(LogCursor { replica, pos }),
            (None, _) => Err(()),
        }
    }
}

/// `[REPLICA:]SEQ:OFFSET`.
fn parse_cursor_word(s: &str) -> Result<(Option<String>, LogPos), ()> {
    let mut parts = s.rsplitn(3, ':');
    let offset = parts.next().ok_or(())?.parse().map_err(|_| ())?;
    let seq = parts.next().ok_or(())?.parse().map_err(|_| ())?;
    let replica = match parts.next() {
        None => None,
        Some("") => return Err(()),
        Some(r) => Some(r.to_string()),
    };
    Ok((replica, LogPos { seq, offset }))
}

/// What part of the logs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Keep the stream open and send lines as they are written.
    pub follow: bool,
    /// Only the last N records of each replica (both streams counted; all when `None`).
    pub tail: Option<usize>,
    /// Only records written at or after this time (applied by the node's agent).
    pub since: Option<SystemTime>,
    /// One stream only; both when `None`.
    pub stream: Option<LogStream>,
    /// Resume points; they override `tail` and `since` for the replicas they name.
    pub cursors: Vec<LogCursor>,
}

impl LogQuery {
    /// As URL query pairs (`follow`, `tail`, `since` in RFC 3339, `stream`, `cursor`).
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("follow", self.follow.to_string())];
        if let Some(tail) = self.tail {
            pairs.push(("tail", tail.to_string()));
        }
        if let Some(since) = self.since {
            pairs.push(("since", format_time(since)));
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

/// The latest time a record can carry: RFC 3339 as written here has four-digit years, so
/// 9999-12-31T23:59:59.999999999Z.
const LATEST_SECS: u64 = 253_402_300_799;

fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::new(LATEST_SECS, 999_999_999)
}

/// A time as log records carry it: RFC 3339 in UTC with nanoseconds. Total: a time before
/// 1970 is written as 1970-01-01T00:00:00Z and one after the year 9999 as its last instant,
/// because the format has no room for either (and no record is older than the Unix epoch).
pub fn format_time(time: SystemTime) -> String {
    let time = time.clamp(UNIX_EPOCH, latest());
    humantime::format_rfc3339_nanos(time).to_string()
}

/// The forms `since` takes, for error messages.
const SINCE_FORMS: &str = "use a duration like 30s, 10m or 2h, an RFC 3339 time like \
                           2026-11-27T07:43:22Z, or Unix seconds like 1795765402";

/// Parses a `since` value: a duration before `now` (`30s`, `10m`, `2h`, `1h30m`), an RFC 3339
/// time (`2026-11-27T07:43:22Z`, `2026-11-27T08:43:22+01:00`, fractions allowed) or Unix
/// seconds (`1795765402`, `1795765402.5`), as `docker logs --since` accepts.
///
/// Never panics: every result lies between the Unix epoch and the year 9999 (what a record's
/// time can be). A duration reaching back before 1970 means "from the start"; a time after the
/// year 9999, negative or non-finite seconds are errors. The error says what was wrong and
/// which forms are accepted; callers put the parameter's name in front.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    // Quoted with a bounded length: the value may be hostile (kilobytes of text).
    let shown = shorten(s);
    if s.is_empty() {
        return Err(format!("the value is empty: {SINCE_FORMS}"));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now
            .checked_sub(d)
            .map_or(UNIX_EPOCH, |t| t.clamp(UNIX_EPOCH, latest())));
    }
    // Rust's float syntax also reads `NaN` and `inf`; only text that starts like a number is
    // taken for Unix seconds, the rest falls through to RFC 3339.
    let numeric = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b"+-.".contains(&b));
    if numeric {
        if let Ok(secs) = s.parse::<f64>() {
            // `LATEST_SECS + 1` is exact in an f64 (below 2^53), so the comparison is too.
            if !(0.0..(LATEST_SECS + 1) as f64).contains(&secs) {
                return Err(format!(
                    "{shown} is out of range: Unix seconds go from 0 to {LATEST_SECS} (the end \
                     of the year 9999); {SINCE_FORMS}"
                ));
            }
            return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    let not_a_time = || format!("{shown} is not a duration or a time: {SINCE_FORMS}");
    // humantime reads UTC only; a numeric offset is applied here.
    let (base, offset) = split_offset(s).ok_or_else(not_a_time)?;
    let utc = humantime::parse_rfc3339_weak(base).map_err(|_| not_a_time())?;
    let shifted = if offset >= 0 {
        utc.checked_sub(Duration::from_secs(offset.unsigned_abs()))
            .map(|t| t.max(UNIX_EPOCH))
    } else {
        utc.checked_add(Duration::from_secs(offset.unsigned_abs()))
    };
    match shifted {
        Some(t) if t <= latest() => Ok(t),
        _ => Err(format!(
            "{shown} is after the year 9999 in UTC: {SINCE_FORMS}"
        )),
    }
}

/// `s` quoted for an error message, cut after 64 characters.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{:?}... ({} bytes)", &s[..at], s.len()),
        None => format!("{s:?}"),
    }
}

/// Splits `...+HH:MM` / `...-HH:MM` into the UTC part and the offset in seconds (east of UTC
/// positive); a time without an offset loses its `Z`. `None` for an offset out of range.
///
/// Works on bytes: the offset is ASCII, so where it starts is a character boundary, while a
/// position counted back from the end of arbitrary text need not be.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let b = s.as_bytes();
    if let Some(at) = b.len().checked_sub(6).filter(|at| *at >= 19) {
        let t = &b[at..];
        let digits = [t[1], t[2], t[4], t[5]].iter().all(u8::is_ascii_digit);
        if (t[0] == b'+' || t[0] == b'-') && t[3] == b':' && digits {
            let num = |hi: u8, lo: u8| i64::from(hi - b'0') * 10 + i64::from(lo - b'0');
            let (h, m) = (num(t[1], t[2]), num(t[4], t[5]));
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            // `at` is the index of an ASCII byte, so slicing there cannot split a character.
            return Some((&s[..at], if t[0] == b'-' { -secs } else { secs }));
        }
    }
    Some((s.strip_suffix('Z').unwrap_or(s), 0))
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Set by the server when it merges replicas; `None` in an agent's own stream.
    pub replica: Option<String>,
    /// Where this record ends in the replica's log: resume from here.
    pub next: LogPos,
    /// When the node's log driver read the line.
    pub time: SystemTime,
    pub stream: LogStream,
    /// The text did not end with a newline (a piece of a longer line, or the end of output).
    pub partial: bool,
    pub text: Vec<u8>,
}

impl LogLine {
    /// The record with its newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 80);
        if let Some(replica) = &self.replica {
            out.extend_from_slice(replica.as_bytes());
            out.push(b':');
        }
        let tag = if self.partial { 'P' } else { 'F' };
        out.extend_from_slice(
            format!(
                "{} {} {} {tag} ",
                self.next,
                format_time(self.time),
                self.stream
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.text);
        out.push(b'\n');
        out
    }

    /// Parses one record (without its newline).
    pub fn parse(record: &[u8]) -> Option<LogLine> {
        let mut words = record.splitn(5, |b| *b == b' ');
        let (replica, next) = parse_cursor_word(std::str::from_utf8(words.next()?).ok()?).ok()?;
        let time = humantime::parse_rfc3339(std::str::from_utf8(words.next()?).ok()?).ok()?;
        let stream = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
        let partial = match words.next()? {
            b"F" => false,
            b"P" => true,
            _ => return None,
        };
        Some(LogLine {
            replica,
            next,
            time,
            stream,
            partial,
            text: words.next().unwrap_or_default().to_vec(),
        })
    }
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
#[path = "logs_tests.rs"]
mod tests;
