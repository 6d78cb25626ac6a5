//! The CRI (Kubernetes) container log format, one record per line:
//! `2026-11-27T07:43:22.123456789Z stdout F text`.
//!
//! The tag is `F` for a full line and `P` for a piece that did not end with a newline: a piece
//! of a line longer than [`MAX_RECORD_TEXT`], or output that ended without a newline. The
//! driver writes this format and the reader parses it; nothing else knows it.

use std::time::SystemTime;

use hivemind_types::logs::LogStream;

/// Longest text of one record (kubelet's and containerd's limit): a longer line is split into
/// `P` records so that no single record can make a reader buffer without bound.
pub(crate) const MAX_RECORD_TEXT: usize = 16 * 1024;

/// Length of a timestamp as the driver writes it (always nine fractional digits).
#[cfg(test)]
const TIMESTAMP_LEN: usize = "2026-11-27T07:43:22.123456789Z".len();

/// One parsed record, borrowing its text from the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) time: SystemTime,
    pub(crate) stream: LogStream,
    /// `P`: the text did not end with a newline here.
    pub(crate) partial: bool,
    pub(crate) text: &'a [u8],
}

/// The timestamp of `time` in the driver's fixed-width form.
pub(crate) fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Writes one record with its newline.
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    timestamp: &str,
    stream: LogStream,
    partial: bool,
    text: &[u8],
) {
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Parses one record (without its newline); `None` if it is not one.
pub(crate) fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut words = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(words.next()?).ok()?;
    let time = humantime::parse_rfc3339(time).ok()?;
    let stream = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
    let partial = match words.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        text: words.next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn records_round_trip() {
        let time = UNIX_EPOCH + Duration::new(1_795_765_402, 123_456_789);
        let ts = timestamp(time);
        assert_eq!(ts.len(), TIMESTAMP_LEN);
        let mut out = Vec::new();
        encode_into(&mut out, &ts, LogStream::Stderr, true, b"a b  c");
        assert_eq!(out, format!("{ts} stderr P a b  c\n").as_bytes());
        let record = parse(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            record,
            Record {
                time,
                stream: LogStream::Stderr,
                partial: true,
                text: b"a b  c"
            }
        );
        // A record with empty text has its trailing space.
        let line = format!("{ts} stdout F ");
        let empty = parse(line.as_bytes()).unwrap();
        assert!(empty.text.is_empty() && !empty.partial);
    }

    #[test]
    fn garbage_is_not_a_record() {
        for bad in [
            &b""[..],
            b"hello world",
            b"2026-11-27T07:43:22.1Z stdout",
            b"2026-11-27T07:43:22.1Z stdin F x",
            b"2026-11-27T07:43:22.1Z stdout X x",
            b"yesterday stdout F x",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    mod properties {
        //! Lines of a log file (which a container's output fills): a record or `None`, never a
        //! panic; what the driver writes reads back.

        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_line_is_a_record_or_none(
                bytes in prop::collection::vec(any::<u8>(), 0..96),
                tail in ".{0,40}",
            ) {
                let _ = parse(&bytes);
                // Lines that start like a record, with anything after.
                let _ = parse(format!("2026-11-27T07:43:22.1Z {tail}").as_bytes());
            }

            #[test]
            fn written_records_read_back(
                secs in 0u64..253_402_300_800,
                nanos in 0u32..1_000_000_000,
                stderr in any::<bool>(),
                partial in any::<bool>(),
                text in prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..64),
            ) {
                let time = UNIX_EPOCH + Duration::new(secs, nanos);
                let stream = if stderr { LogStream::Stderr } else { LogStream::Stdout };
                let mut out = Vec::new();
                encode_into(&mut out, &timestamp(time), stream, partial, &text);
                let record = parse(&out[..out.len() - 1]);
                prop_assert_eq!(record, Some(Record { time, stream, partial, text: &text }));
            }
        }
    }
}
