//! A minimal Server-Sent Events reader: bytes in, complete events out.
//!
//! Only what `GET /api/v1/events` uses is handled: `event:`, `data:` (joined by newlines when
//! repeated), `id:`, comment lines and the three line endings. `retry:` is ignored because the
//! caller decides how to reconnect. It does no I/O, so it is tested with plain byte strings.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseFrame {
    /// `None` when the event had no `event:` field (the SSE default type, `message`).
    pub(crate) event: Option<String>,
    pub(crate) data: String,
    pub(crate) id: Option<String>,
}

/// Incremental parser; feed it chunks as they arrive, in any split.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of an incomplete line. Kept as bytes because a chunk may end inside a UTF-8 sequence.
    partial: Vec<u8>,
    /// The previous chunk ended in `\r`, so a leading `\n` in the next one ends nothing new.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Consumes `chunk` and returns the events it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.partial);
                    if let Some(frame) = self.line(&String::from_utf8_lossy(&line)) {
                        frames.push(frame);
                    }
                }
                _ => self.partial.push(b),
            }
        }
        frames
    }

    fn line(&mut self, line: &str) -> Option<SseFrame> {
        if line.is_empty() {
            // A blank line dispatches; an event without data is dropped, as the SSE spec says.
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseFrame {
                event,
                data,
                id: self.id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: Option<&str>, data: &str, id: Option<&str>) -> SseFrame {
        SseFrame {
            event: event.map(str::to_string),
            data: data.to_string(),
            id: id.map(str::to_string),
        }
    }

    #[test]
    fn parses_named_events_with_ids_and_skips_comments() {
        let mut p = SseParser::default();
        let got = p.push(
            b": keep-alive\n\nevent: change\nid: 7\ndata: {\"a\":1}\n\nevent: reset\ndata:\n\n",
        );
        assert_eq!(
            got,
            vec![
                frame(Some("change"), "{\"a\":1}", Some("7")),
                frame(Some("reset"), "", Some("7")),
            ]
        );
    }

    #[test]
    fn events_split_across_chunks_at_any_byte() {
        let text = "event: change\r\ndata: h\u{e9}llo\r\ndata: second\r\nid: 3\r\n\r\n";
        for split in 0..text.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&text.as_bytes()[..split]);
            got.extend(p.push(&text.as_bytes()[split..]));
            assert_eq!(
                got,
                vec![frame(Some("change"), "h\u{e9}llo\nsecond", Some("3"))],
                "split at {split}"
            );
        }
    }

    #[test]
    fn lone_cr_line_endings_and_fields_without_colon() {
        let mut p = SseParser::default();
        let got = p.push(b"data\rdata:x\r\r");
        assert_eq!(got, vec![frame(None, "\nx", None)]);
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        let mut p = SseParser::default();
        assert!(p.push(b"\n\n\nevent: change\n\n").is_empty());
        // The `event:` of the dropped event does not leak into the next one.
        assert_eq!(p.push(b"data: 1\n\n"), vec![frame(None, "1", None)]);
    }
}
