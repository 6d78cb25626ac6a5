//! Reading a replica's log files back: from a cursor, from the last N records, and following
//! as the driver appends and rotates.
//!
//! A position is `(seq, offset)`: a file of the replica's numbered sequence and a byte offset
//! in it, always a record boundary (the driver never splits a record across files or writes
//! into a file it rotated away from). Every record handed out carries the position just past
//! it, so a reader resuming there (after the agent or the server restarted) neither misses
//! nor repeats a record. A position whose file was rotated away resumes at the oldest file
//! left. Bytes after the last newline are a record still being written: they are held back.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hivemind_types::logs::{LogPos, LogStream};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::debug;

use super::{cri, files};

/// At most this much is read from a file per poll, so one huge file cannot stall the others.
const READ_CHUNK: u64 = 1 << 20;
/// Block size of the backward scan for `tail`.
const TAIL_BLOCK: usize = 64 * 1024;

/// One record and the position just past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub time: SystemTime,
    pub stream: LogStream,
    pub partial: bool,
    pub text: Vec<u8>,
    pub next: LogPos,
}

/// A cursor into a replica's log files.
#[derive(Debug)]
pub struct ReplicaLog {
    dir: PathBuf,
    /// The file being read; it may not exist yet (or any more).
    seq: u64,
    /// Offset of the first byte not yet read.
    read_to: u64,
    /// Bytes read after the last newline.
    partial: Vec<u8>,
    /// Reads stop here: a tail's cursor ends where the log ended when it was scanned, so that
    /// `--tail 3` gives 3 records even while the replica writes (see [`ReplicaLog::follow`]).
    end: Option<LogPos>,
}

impl ReplicaLog {
    /// A cursor at `pos`, as handed out in [`Entry::next`].
    pub fn at(dir: PathBuf, pos: LogPos) -> ReplicaLog {
        ReplicaLog {
            dir,
            seq: pos.seq,
            read_to: pos.offset,
            partial: Vec::new(),
            end: None,
        }
    }

    /// Lifts the end a tail's cursor stops at, for a reader that follows the log.
    pub fn follow(&mut self) {
        self.end = None;
    }

    /// Whether reads stop at or before file `seq`.
    fn ends_by(&self, seq: u64) -> bool {
        self.end.is_some_and(|end| end.seq <= seq)
    }

    /// A cursor at the first record of the oldest file.
    pub fn start(dir: PathBuf) -> ReplicaLog {
        ReplicaLog::at(dir, LogPos { seq: 0, offset: 0 })
    }

    /// A cursor at the start of the last `n` complete records, across files, that reads up
    /// to where the log ended at the scan (records written since are not among the last `n`
    /// asked for; [`ReplicaLog::follow`] lifts that end).
    pub async fn tail(dir: PathBuf, n: usize) -> io::Result<ReplicaLog> {
        let seqs = list(&dir).await?;
        let mut left = n;
        let mut end = None;
        for seq in seqs.iter().rev() {
            let path = files::file_path(&dir, *seq);
            let scanned = match tail_offset(&path, left).await? {
                (len, scan) if end.is_none() => {
                    end = Some(LogPos {
                        seq: *seq,
                        offset: len,
                    });
                    scan
                }
                (_, scan) => scan,
            };
            match scanned {
                TailScan::Found(offset) => {
                    let mut log = ReplicaLog::at(dir, LogPos { seq: *seq, offset });
                    log.end = end;
                    return Ok(log);
                }
                TailScan::Short(records) => left -= records,
            }
        }
        let oldest = seqs.first().copied().unwrap_or(0);
        let mut log = ReplicaLog::at(
            dir,
            LogPos {
                seq: oldest,
                offset: 0,
            },
        );
        log.end = end;
        Ok(log)
    }

    /// A cursor at the first file that may hold records written at or after `since`: files
    /// whose last record is older are skipped unread (records within a file are filtered by
    /// the caller). Past the end of the newest file if every record is older.
    pub async fn since(dir: PathBuf, since: SystemTime) -> io::Result<ReplicaLog> {
        for seq in list(&dir).await? {
            match last_time(&files::file_path(&dir, seq)).await? {
                Some(t) if t < since => continue,
                _ => return Ok(ReplicaLog::at(dir, LogPos { seq, offset: 0 })),
            }
        }
        ReplicaLog::tail(dir, 0).await
    }

    /// The position of the next record to read.
    pub fn pos(&self) -> LogPos {
        LogPos {
            seq: self.seq,
            offset: self.read_to,
        }
    }

    /// The complete records appended since the last call, moving to the next file once this
    /// one is drained and a newer one exists.
    pub async fn poll(&mut self) -> io::Result<Vec<Entry>> {
        // Each turn reads or moves to a newer file, so this ends; the cap is a safety net.
        for _ in 0..64 {
            let path = files::file_path(&self.dir, self.seq);
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Rotated away (or not written yet): go on at the next file that exists.
                    match self.newer_file().await? {
                        Some(seq) if !self.ends_by(self.seq) => {
                            self.move_to(seq);
                            continue;
                        }
                        _ => return Ok(Vec::new()),
                    }
                }
                Err(e) => return Err(e),
            };
            let mut len = file.metadata().await?.len();
            if let Some(end) = self.end.filter(|end| end.seq == self.seq) {
                len = len.min(end.offset);
            }
            if len < self.read_to {
                // Files only grow; a shorter one was replaced by hand. Read it from its start.
                self.read_to = 0;
                self.partial.clear();
            }
            if len == self.read_to {
                if self.ends_by(self.seq) {
                    return Ok(Vec::new());
                }
                let Some(newer) = self.newer_file().await? else {
                    return Ok(Vec::new());
                };
                // The driver wrote its last bytes here before it created the newer file:
                // drain what arrived since the length was taken, then move on.
                if file.metadata().await?.len() > self.read_to {
                    continue;
                }
                self.move_to(newer);
                continue;
            }
            file.seek(SeekFrom::Start(self.read_to)).await?;
            let mut buf = Vec::new();
            (&mut file)
                .take((len - self.read_to).min(READ_CHUNK))
                .read_to_end(&mut buf)
                .await?;
            self.read_to += buf.len() as u64;
            return Ok(self.split(&buf));
        }
        Ok(Vec::new())
    }

    /// Every complete record left (for reads that do not follow).
    pub async fn read_to_end(&mut self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        loop {
            let before = (self.seq, self.read_to);
            entries.extend(self.poll().await?);
            if (self.seq, self.read_to) == before {
                return Ok(entries);
            }
        }
    }

    fn move_to(&mut self, seq: u64) {
        self.seq = seq;
        self.read_to = 0;
        self.partial.clear();
    }

    async fn newer_file(&self) -> io::Result<Option<u64>> {
        Ok(list(&self.dir)
            .await?
            .into_iter()
            .find(|seq| *seq > self.seq))
    }

    /// Splits freshly read bytes (which end at `self.read_to`) into records.
    fn split(&mut self, buf: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let start = self.read_to - buf.len() as u64;
        let mut from = 0;
        for (i, b) in buf.iter().enumerate() {
            if *b != b'\n' {
                continue;
            }
            let next = LogPos {
                seq: self.seq,
                offset: start + i as u64 + 1,
            };
            let line: &[u8] = if self.partial.is_empty() {
                &buf[from..i]
            } else {
                self.partial.extend_from_slice(&buf[from..i]);
                &self.partial
            };
            match cri::parse(line) {
                Some(r) => entries.push(Entry {
                    time: r.time,
                    stream: r.stream,
                    partial: r.partial,
                    text: r.text.to_vec(),
                    next,
                }),
                None => debug!(?next, "skipping a line that is not a CRI log record"),
            }
            self.partial.clear();
            from = i + 1;
        }
        self.partial.extend_from_slice(&buf[from..]);
        entries
    }
}

async fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || files::list(&dir))
        .await
        .map_err(io::Error::other)?
}

/// The time of the last complete record of `path`, if it has one.
async fn last_time(path: &Path) -> io::Result<Option<SystemTime>> {
    let (_, TailScan::Found(offset)) = tail_offset(path, 1).await? else {
        return Ok(None);
    };
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    (&mut file)
        .take(cri::MAX_RECORD_TEXT as u64 + 128)
        .read_to_end(&mut buf)
        .await?;
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(cri::parse(line).map(|r| r.time))
}

enum TailScan {
    /// The last `n` complete records of the file start at this offset.
    Found(u64),
    /// The file holds only this many complete records (fewer than `n`).
    Short(usize),
}

/// Walks back from the end of `path` counting complete records (bytes after the last newline
/// are a record still being written and do not count); with the length scanned from.
async fn tail_offset(path: &Path, n: usize) -> io::Result<(u64, TailScan)> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, TailScan::Short(0))),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    // Newlines seen from the end: the first ends the last complete record, the (n+1)-th ends
    // the record before the last n. Counted against `n` without computing `n + 1`, which
    // overflows for `tail=18446744073709551615` (any `n` is fine: a huge one reads it all).
    let mut newlines: usize = 0;
    let mut end = len;
    let mut buf = vec![0u8; TAIL_BLOCK];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(chunk).await?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] == b'\n' {
                if newlines == n {
                    return Ok((len, TailScan::Found(start + i as u64 + 1)));
                }
                newlines += 1;
            }
        }
        end = start;
    }
    if newlines >= n {
        Ok((len, TailScan::Found(0)))
    } else {
        Ok((len, TailScan::Short(newlines)))
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
