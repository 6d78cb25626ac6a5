//! Reading replica log files: the last N lines, then lines as they are appended.
//!
//! The shim appends a replica's raw stdout and stderr to two plain files (kept across restarts of
//! the replica and of the agent), so a reader is a byte offset into a file. Every line handed out
//! carries the offset just past it: a caller that resumes from that offset (after the agent or
//! the server restarted) neither misses nor repeats a line. A line still being written (no
//! newline yet) is held back while following and handed out as is at the end of a plain read.
//!
//! There are no timestamps: the shim writes raw bytes, so per-line times would need a log
//! driver between the shim and the files (not done yet).

use std::io::{self, SeekFrom};
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// At most this much is read from a file per poll, so one huge file cannot stall the others.
const READ_CHUNK: u64 = 1 << 20;
/// A line longer than this is handed out in pieces rather than buffered without bound.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// One complete line (without its newline) and the file offset just past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) text: Vec<u8>,
    pub(crate) next: u64,
}

/// A cursor into one log file.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    /// Offset of the first byte not yet read.
    read_to: u64,
    /// Bytes read after the last newline.
    partial: Vec<u8>,
}

impl LogFile {
    /// A cursor at `offset`: the start of a line, as handed out in [`Line::next`].
    pub(crate) fn at(path: PathBuf, offset: u64) -> LogFile {
        LogFile {
            path,
            read_to: offset,
            partial: Vec::new(),
        }
    }

    /// A cursor at the start of the last `n` lines (a final line without newline counts).
    pub(crate) async fn tail(path: PathBuf, n: usize) -> io::Result<LogFile> {
        let offset = tail_offset(&path, n).await?;
        Ok(LogFile::at(path, offset))
    }

    /// The complete lines appended since the last call. A file that shrank (replaced or
    /// truncated) is read again from its start.
    pub(crate) async fn poll(&mut self) -> io::Result<Vec<Line>> {
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata().await?.len();
        if len < self.read_to {
            self.read_to = 0;
            self.partial.clear();
        }
        if len == self.read_to {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.read_to)).await?;
        let mut buf = Vec::new();
        (&mut file)
            .take((len - self.read_to).min(READ_CHUNK))
            .read_to_end(&mut buf)
            .await?;
        self.read_to += buf.len() as u64;
        Ok(self.split(&buf))
    }

    /// Every line left, the one still being written included (for reads that do not follow).
    pub(crate) async fn read_to_end(&mut self) -> io::Result<Vec<Line>> {
        let mut lines = Vec::new();
        loop {
            let before = self.read_to;
            lines.extend(self.poll().await?);
            if self.read_to == before {
                break;
            }
        }
        if !self.partial.is_empty() {
            lines.push(Line {
                text: std::mem::take(&mut self.partial),
                next: self.read_to,
            });
        }
        Ok(lines)
    }

    /// Splits freshly read bytes (which end at `self.read_to`) into complete lines.
    fn split(&mut self, buf: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        let start = self.read_to - buf.len() as u64;
        let mut from = 0;
        for (i, b) in buf.iter().enumerate() {
            if *b == b'\n' {
                let mut text = std::mem::take(&mut self.partial);
                text.extend_from_slice(&buf[from..i]);
                lines.push(Line {
                    text,
                    next: start + i as u64 + 1,
                });
                from = i + 1;
            } else if self.partial.len() + (i - from) >= MAX_LINE {
                let mut text = std::mem::take(&mut self.partial);
                text.extend_from_slice(&buf[from..i]);
                lines.push(Line {
                    text,
                    next: start + i as u64,
                });
                from = i;
            }
        }
        self.partial.extend_from_slice(&buf[from..]);
        lines
    }
}

/// The offset where the last `n` lines of the file begin (0 for a missing file).
async fn tail_offset(path: &std::path::Path, n: usize) -> io::Result<u64> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    if n == 0 {
        return Ok(len);
    }
    // Walk back from the end counting newlines; the file's final newline ends the last line
    // rather than starting an empty one.
    let mut end = len;
    let mut newlines = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(chunk).await?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] != b'\n' {
                continue;
            }
            if first && start + i as u64 == len - 1 {
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(start + i as u64 + 1);
            }
        }
        first = false;
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn tail_counts_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        for (n, want) in [
            (0, vec![]),
            (1, vec!["c"]),
            (2, vec!["b", "c"]),
            (9, vec!["a", "b", "c"]),
        ] {
            let mut f = LogFile::tail(path.clone(), n).await.unwrap();
            assert_eq!(texts(&f.read_to_end().await.unwrap()), want, "tail {n}");
        }
        std::fs::write(&path, "a\nb\npartial").unwrap();
        let mut f = LogFile::tail(path.clone(), 2).await.unwrap();
        assert_eq!(texts(&f.read_to_end().await.unwrap()), ["b", "partial"]);
        let missing = LogFile::tail(dir.path().join("none"), 3).await.unwrap();
        assert_eq!(missing.read_to, 0);
    }

    #[tokio::test]
    async fn tail_of_a_file_larger_than_one_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let body: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, body).unwrap();
        let mut f = LogFile::tail(path, 3).await.unwrap();
        assert_eq!(
            texts(&f.read_to_end().await.unwrap()),
            ["line 19997", "line 19998", "line 19999"]
        );
    }

    #[tokio::test]
    async fn follow_holds_partial_lines_and_offsets_resume_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "one\ntw").unwrap();
        let mut f = LogFile::at(path.clone(), 0);
        let first = f.poll().await.unwrap();
        assert_eq!(texts(&first), ["one"]);
        assert_eq!(first[0].next, 4);
        assert!(f.poll().await.unwrap().is_empty());
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut w, b"o\nthree\n").unwrap();
        let more = f.poll().await.unwrap();
        assert_eq!(texts(&more), ["two", "three"]);
        // A new reader resuming after "two" sees exactly "three".
        let mut resumed = LogFile::at(path, more[0].next);
        assert_eq!(texts(&resumed.read_to_end().await.unwrap()), ["three"]);
    }

    #[tokio::test]
    async fn a_truncated_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "aaaa\nbbbb\n").unwrap();
        let mut f = LogFile::at(path.clone(), 0);
        assert_eq!(f.poll().await.unwrap().len(), 2);
        std::fs::write(&path, "c\n").unwrap();
        assert_eq!(texts(&f.poll().await.unwrap()), ["c"]);
    }

    #[tokio::test]
    async fn overlong_lines_come_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut body = vec![b'x'; MAX_LINE + 10];
        body.push(b'\n');
        std::fs::write(&path, &body).unwrap();
        let lines = LogFile::at(path, 0).read_to_end().await.unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text.len(), MAX_LINE);
        assert_eq!(lines[1].text.len(), 10);
        assert_eq!(lines[1].next, body.len() as u64);
    }
}
