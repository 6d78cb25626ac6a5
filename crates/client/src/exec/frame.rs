//! The framed protocol of an interactive exec session, spoken over an upgraded HTTP/1.1
//! connection (`Upgrade: hivemind-exec.v1`) between the CLI, the server and the node agent.
//!
//! A frame is `[channel u8][length u32 big-endian][payload]`. The length is checked against
//! [`MAX_PAYLOAD`] before anything is allocated, so a peer cannot make the reader buffer more
//! than one frame's worth. Decoding never panics: anything else than a well-formed frame of a
//! known channel is a [`FrameError`] naming what was wrong.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::TtySize;

/// The largest payload a frame may carry. Readers send at most 32 KiB at a time; the rest is
/// headroom for error texts.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Bytes before the payload: channel and length.
pub const HEADER_LEN: usize = 5;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const RESIZE: u8 = 3;
const STDIN_EOF: u8 = 4;
const EXIT: u8 = 5;
const ERROR: u8 = 6;

/// One frame of an exec session. The client sends `Stdin`, `StdinEof` and `Resize`; the agent
/// sends `Stdout`, `Stderr` and, last, one `Exit` or `Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The client's terminal changed size (TTY sessions).
    Resize(TtySize),
    /// The client's input ended: the process's stdin is closed.
    StdinEof,
    /// The process ended with this status (last frame).
    Exit(i32),
    /// The session failed (last frame): the process could not run, or a peer broke the protocol.
    Error(String),
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame channel {0}: channels are 0 stdin, 1 stdout, 2 stderr, 3 resize, 4 stdin-eof, 5 exit, 6 error")]
    UnknownChannel(u8),
    #[error("{channel} frame of {len} bytes is longer than the limit of {MAX_PAYLOAD} bytes")]
    TooLong { channel: &'static str, len: usize },
    #[error("{channel} frame: {reason}")]
    BadPayload {
        channel: &'static str,
        reason: String,
    },
    #[error("the exec stream ended inside a frame")]
    Truncated,
    #[error("cannot read the exec stream")]
    Io(#[source] std::io::Error),
}

impl Frame {
    /// The channel's name, for errors and logs.
    pub fn channel_name(&self) -> &'static str {
        channel_name(self.channel()).unwrap_or("unknown")
    }

    fn channel(&self) -> u8 {
        match self {
            Frame::Stdin(_) => STDIN,
            Frame::Stdout(_) => STDOUT,
            Frame::Stderr(_) => STDERR,
            Frame::Resize(_) => RESIZE,
            Frame::StdinEof => STDIN_EOF,
            Frame::Exit(_) => EXIT,
            Frame::Error(_) => ERROR,
        }
    }

    /// The frame as bytes. Payloads longer than [`MAX_PAYLOAD`] are the caller's bug; error
    /// texts are cut to fit rather than refused, as they are the last word of a session.
    pub fn encode(&self) -> Vec<u8> {
        let payload: std::borrow::Cow<'_, [u8]> = match self {
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b.as_slice().into(),
            Frame::Resize(size) => {
                let mut p = size.cols.to_be_bytes().to_vec();
                p.extend_from_slice(&size.rows.to_be_bytes());
                p.into()
            }
            Frame::StdinEof => (&[][..]).into(),
            Frame::Exit(code) => code.to_be_bytes().to_vec().into(),
            Frame::Error(text) => {
                let mut end = text.len().min(MAX_PAYLOAD);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.as_bytes()[..end].into()
            }
        };
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.push(self.channel());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes the frame at the start of `buf`: `Ok(None)` when `buf` holds only part of it,
    /// else the frame and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let (channel, len) = parse_header(header)?;
        let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        Ok(Some((from_payload(channel, payload)?, HEADER_LEN + len)))
    }
}

fn channel_name(channel: u8) -> Option<&'static str> {
    Some(match channel {
        STDIN => "stdin",
        STDOUT => "stdout",
        STDERR => "stderr",
        RESIZE => "resize",
        STDIN_EOF => "stdin-eof",
        EXIT => "exit",
        ERROR => "error",
        _ => return None,
    })
}

/// Channel and payload length of a header, refusing unknown channels and oversized payloads
/// before the payload is read.
fn parse_header(header: &[u8]) -> Result<(u8, usize), FrameError> {
    let channel = header[0];
    let name = channel_name(channel).ok_or(FrameError::UnknownChannel(channel))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong { channel: name, len });
    }
    Ok((channel, len))
}

fn from_payload(channel: u8, payload: &[u8]) -> Result<Frame, FrameError> {
    let bad = |channel: &'static str, reason: String| FrameError::BadPayload { channel, reason };
    Ok(match channel {
        STDIN => Frame::Stdin(payload.to_vec()),
        STDOUT => Frame::Stdout(payload.to_vec()),
        STDERR => Frame::Stderr(payload.to_vec()),
        RESIZE => {
            let [c0, c1, r0, r1] = payload else {
                return Err(bad(
                    "resize",
                    format!(
                        "payload is {} bytes, not 4 (cols u16, rows u16)",
                        payload.len()
                    ),
                ));
            };
            let size = TtySize {
                cols: u16::from_be_bytes([*c0, *c1]),
                rows: u16::from_be_bytes([*r0, *r1]),
            };
            if size.cols == 0 || size.rows == 0 {
                return Err(bad(
                    "resize",
                    format!("{}x{} has a zero side", size.cols, size.rows),
                ));
            }
            Frame::Resize(size)
        }
        STDIN_EOF if payload.is_empty() => Frame::StdinEof,
        STDIN_EOF => {
            return Err(bad(
                "stdin-eof",
                format!("payload is {} bytes, not empty", payload.len()),
            ))
        }
        EXIT => {
            let bytes: [u8; 4] = payload.try_into().map_err(|_| {
                bad(
                    "exit",
                    format!("payload is {} bytes, not 4 (i32)", payload.len()),
                )
            })?;
            Frame::Exit(i32::from_be_bytes(bytes))
        }
        ERROR => Frame::Error(
            String::from_utf8(payload.to_vec())
                .map_err(|_| bad("error", "text is not UTF-8".to_string()))?,
        ),
        other => return Err(FrameError::UnknownChannel(other)),
    })
}

/// Reads the next frame; `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = r
            .read(&mut header[filled..])
            .await
            .map_err(FrameError::Io)?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let (channel, len) = parse_header(&header)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    from_payload(channel, &payload).map(Some)
}

/// Writes one frame and flushes it (frames are interactive: nothing may sit in a buffer).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    w.write_all(&frame.encode()).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Frame> {
        vec![
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::Stdout(vec![0, 255, 10]),
            Frame::Stderr(Vec::new()),
            Frame::Resize(TtySize { cols: 80, rows: 24 }),
            Frame::StdinEof,
            Frame::Exit(-1),
            Frame::Exit(137),
            Frame::Error("no such file ✗".to_string()),
        ]
    }

    #[test]
    fn frames_round_trip_through_bytes() {
        for frame in all_kinds() {
            let bytes = frame.encode();
            assert_eq!(Frame::decode(&bytes).unwrap(), Some((frame, bytes.len())));
        }
    }

    #[test]
    fn frames_have_the_documented_layout() {
        assert_eq!(Frame::Exit(7).encode(), [5, 0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(
            Frame::Resize(TtySize { cols: 80, rows: 24 }).encode(),
            [3, 0, 0, 0, 4, 0, 80, 0, 24]
        );
        assert_eq!(
            Frame::Stdin(b"hi".to_vec()).encode(),
            [0, 0, 0, 0, 2, b'h', b'i']
        );
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let bytes = Frame::Stdout(b"hello".to_vec()).encode();
        for end in 0..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..end]).unwrap(), None, "{end} bytes");
        }
    }

    #[test]
    fn malformed_frames_are_named_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&[9, 0, 0, 0, 0], "unknown frame channel 9"),
            (&[1, 0xff, 0xff, 0xff, 0xff], "longer than the limit"),
            (&[3, 0, 0, 0, 2, 0, 80], "resize frame: payload is 2 bytes"),
            (&[3, 0, 0, 0, 4, 0, 0, 0, 24], "zero side"),
            (&[4, 0, 0, 0, 1, 0], "stdin-eof frame"),
            (&[5, 0, 0, 0, 3, 0, 0, 0], "exit frame: payload is 3 bytes"),
            (&[6, 0, 0, 0, 2, 0xc3, 0x28], "not UTF-8"),
        ];
        for (bytes, expected) in cases {
            let err = Frame::decode(bytes).unwrap_err().to_string();
            assert!(err.contains(expected), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn oversized_error_texts_are_cut_on_a_char_boundary() {
        let text = "é".repeat(MAX_PAYLOAD);
        let bytes = Frame::Error(text).encode();
        assert!(bytes.len() <= HEADER_LEN + MAX_PAYLOAD);
        assert!(matches!(
            Frame::decode(&bytes).unwrap(),
            Some((Frame::Error(_), _))
        ));
    }

    #[tokio::test]
    async fn a_stream_of_frames_reads_back_and_ends_cleanly() {
        let mut bytes = Vec::new();
        for frame in all_kinds() {
            bytes.extend(frame.encode());
        }
        let mut reader = bytes.as_slice();
        let mut read = Vec::new();
        while let Some(frame) = read_frame(&mut reader).await.unwrap() {
            read.push(frame);
        }
        assert_eq!(read, all_kinds());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_truncated_not_a_clean_end() {
        let bytes = Frame::Stdout(b"hello".to_vec()).encode();
        for end in [2, HEADER_LEN + 2] {
            let mut reader = &bytes[..end];
            let err = read_frame(&mut reader).await.unwrap_err();
            assert!(matches!(err, FrameError::Truncated), "{end}: {err}");
        }
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_the_payload() {
        // Only the header exists: a reader that trusted the length would wait or allocate.
        let mut reader: &[u8] = &[0, 0x7f, 0xff, 0xff, 0xff];
        let err = read_frame(&mut reader).await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLong {
                    channel: "stdin",
                    ..
                }
            ),
            "{err}"
        );
    }

    mod properties {
        //! Frames from a peer: any bytes decode to a frame or an error, never a panic, and a
        //! frame decoded is exactly the bytes it took.

        use proptest::prelude::*;

        use super::*;

        fn frame() -> impl Strategy<Value = Frame> {
            let bytes = || prop::collection::vec(any::<u8>(), 0..256);
            prop_oneof![
                bytes().prop_map(Frame::Stdin),
                bytes().prop_map(Frame::Stdout),
                bytes().prop_map(Frame::Stderr),
                (1..=u16::MAX, 1..=u16::MAX)
                    .prop_map(|(cols, rows)| Frame::Resize(TtySize { cols, rows })),
                Just(Frame::StdinEof),
                any::<i32>().prop_map(Frame::Exit),
                ".{0,64}".prop_map(Frame::Error),
            ]
        }

        /// Bytes that start like a frame header more often than uniform bytes would.
        fn wire() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                (0u8..8, 0u32..16, prop::collection::vec(any::<u8>(), 0..24)).prop_map(
                    |(c, len, rest)| {
                        let mut b = vec![c];
                        b.extend(len.to_be_bytes());
                        b.extend(rest);
                        b
                    }
                ),
                (0u8..8, any::<u32>()).prop_map(|(c, len)| {
                    let mut b = vec![c];
                    b.extend(len.to_be_bytes());
                    b
                }),
            ]
        }

        fn read_all(bytes: &[u8]) -> Vec<Result<Option<Frame>, String>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut r = bytes;
                let mut out = Vec::new();
                loop {
                    let next = read_frame(&mut r).await.map_err(|e| e.to_string());
                    let end = !matches!(next, Ok(Some(_)));
                    out.push(next);
                    if end {
                        return out;
                    }
                }
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_bytes_decode_to_a_frame_or_an_error(bytes in wire()) {
                if let Ok(Some((frame, used))) = Frame::decode(&bytes) {
                    prop_assert!(used <= bytes.len());
                    prop_assert_eq!(frame.encode(), bytes[..used].to_vec());
                }
                // The stream reader agrees with `decode` on the first frame.
                let first = read_all(&bytes).remove(0);
                match Frame::decode(&bytes) {
                    Ok(Some((frame, _))) => prop_assert_eq!(first, Ok(Some(frame))),
                    Ok(None) => prop_assert!(matches!(first, Ok(None)) || first.is_err()),
                    Err(_) => prop_assert!(first.is_err()),
                }
            }

            #[test]
            fn frames_round_trip_whole_and_in_pieces(frames in prop::collection::vec(frame(), 1..5), cut in any::<prop::sample::Index>()) {
                let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
                let read: Vec<Frame> = read_all(&bytes)
                    .into_iter()
                    .filter_map(|r| r.ok().flatten())
                    .collect();
                prop_assert_eq!(&read, &frames);
                // A prefix cut inside the first frame is "not yet", never a wrong frame.
                let first = frames[0].encode();
                let at = cut.index(first.len());
                prop_assert!(matches!(Frame::decode(&first[..at]), Ok(None)));
            }
        }
    }
}
