//! The log driver: the process containerd's shim runs for each task (the `binary://` log
//! URI), turning the container's stdout and stderr into CRI records in rotated files.
//!
//! The shim starts it as `PATH log-driver MAX_SIZE:MAX_FILES:DIR` with the container's stdout
//! on fd 3, stderr on fd 4 (pipes) and fd 5 a pipe it waits on until we close it. The driver
//! lives as long as the task: it is a child of the shim, not of the agent, so agent restarts
//! do not touch it. Both streams go into one file in the order they arrive; writes are
//! buffered and flushed whenever neither pipe has more data ready.
//!
//! **Invariant: the driver never exits before both pipes reach EOF, whatever it is given.** A
//! dead driver closes the pipes' read ends and the container's writes fail (or it is killed by
//! SIGPIPE). So bad settings fall back to defaults, a log directory that cannot be written is
//! retried while the output is discarded, and SIGTERM (which the shim sends when it deletes
//! the task, after closing its ends of the pipes) only makes the driver drain what is left.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hivemind_types::logs::LogStream;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::cri::{self, MAX_RECORD_TEXT};
use super::files::{self, DriverConfig};

/// Records are written once this much is buffered, even if more data is ready.
const WRITE_BUFFER: usize = 256 * 1024;
/// How long after a failed write the log file is opened again (output meanwhile is dropped).
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// Runs the driver with its one argument (see the module docs) until both pipes are closed.
/// Returns the process exit status.
pub fn run(arg: &str) -> u8 {
    block_termination_signals();
    let config = match DriverConfig::parse(arg) {
        Ok(config) => Some(config),
        Err(e) => {
            // Nowhere to write, but the container must not block: drain and discard.
            eprintln!("hivemind log-driver: bad settings {e}; output is discarded");
            None
        }
    };
    let (Some(stdout), Some(stderr)) = (inherited_fd(3), inherited_fd(4)) else {
        eprintln!(
            "hivemind log-driver: fds 3 and 4 are not open: this command is run by containerd's \
             shim through a binary:// log URI, not by hand"
        );
        return 2;
    };
    let mut writer = RotatingWriter::new(config);
    // Ready: the shim waits for this pipe to close before it starts the container.
    drop(inherited_fd(5));
    let mut inputs = vec![
        Input::new(stdout, LogStream::Stdout),
        Input::new(stderr, LogStream::Stderr),
    ];
    // The pipes are owned out here, so that a bug that panics in the loop leaves them open:
    // the rest of the output is then drained and dropped instead of failing the container.
    let pumped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pump(&mut inputs, &mut writer)
    }));
    if pumped.is_err() {
        eprintln!("hivemind log-driver: internal error; the rest of the output is dropped");
        drain(&mut inputs);
        return 1;
    }
    0
}

/// Reads both pipes into records until both reach EOF, then writes what is left.
fn pump(inputs: &mut [Input], writer: &mut RotatingWriter) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open: Vec<usize> = (0..inputs.len()).filter(|i| inputs[*i].open).collect();
        if open.is_empty() {
            break;
        }
        let timeout = if writer.has_buffered() {
            PollTimeout::ZERO
        } else {
            PollTimeout::NONE
        };
        let Some(ready) = wait_readable(inputs, &open, timeout) else {
            // Nothing more is ready: the moment to write what was read.
            writer.flush();
            continue;
        };
        let timestamp = cri::timestamp(SystemTime::now());
        for i in ready {
            let input = &mut inputs[i];
            match input.file.read(&mut buf) {
                Ok(0) => {
                    input.framer.finish(&timestamp, writer);
                    input.open = false;
                }
                Ok(n) => input.framer.feed(&buf[..n], &timestamp, writer),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    eprintln!("hivemind log-driver: read {}: {e}", input.framer.stream);
                    input.framer.finish(&timestamp, writer);
                    input.open = false;
                }
            }
        }
    }
    writer.flush();
}

/// Reads and drops everything until both pipes reach EOF.
fn drain(inputs: &mut [Input]) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open: Vec<usize> = (0..inputs.len()).filter(|i| inputs[*i].open).collect();
        if open.is_empty() {
            return;
        }
        for i in wait_readable(inputs, &open, PollTimeout::NONE).unwrap_or_default() {
            match inputs[i].file.read(&mut buf) {
                Ok(0) => inputs[i].open = false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => inputs[i].open = false,
            }
        }
    }
}

/// The inputs among `open` with data (or EOF) to read; `None` if the timeout passed first.
fn wait_readable(inputs: &[Input], open: &[usize], timeout: PollTimeout) -> Option<Vec<usize>> {
    let mut fds: Vec<PollFd<'_>> = open
        .iter()
        .map(|i| PollFd::new(inputs[*i].file.as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(&mut fds, timeout) {
        Ok(0) => None,
        Ok(_) => Some(
            open.iter()
                .zip(&fds)
                .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| *i)
                .collect(),
        ),
        Err(nix::errno::Errno::EINTR) => Some(Vec::new()),
        Err(e) => {
            // poll on open pipes does not fail; if it does, read them all (non-blocking).
            eprintln!("hivemind log-driver: poll: {e}");
            std::thread::sleep(Duration::from_millis(10));
            Some(open.to_vec())
        }
    }
}

/// An inherited pipe end, or `None` if that fd is not open.
#[allow(unsafe_code)]
fn inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // Checked through /proc so that no borrowed handle to a closed fd is ever made.
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: fds 3-5 are opened by the shim for this process and nothing else in it uses
    // them (the driver runs before any other file is opened), so taking ownership is sound.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIGTERM, SIGINT and SIGHUP are blocked rather than handled: the shim's SIGTERM comes after
/// it closed its pipe ends, so EOF follows at once and the driver exits having written
/// everything (the shim SIGKILLs a driver that takes longer than 12 s).
fn block_termination_signals() {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("hivemind log-driver: cannot block signals: {e}");
    }
}

struct Input {
    file: File,
    framer: Framer,
    /// Not at EOF yet.
    open: bool,
}

impl Input {
    fn new(fd: OwnedFd, stream: LogStream) -> Input {
        // Non-blocking, so that a spurious wake-up cannot stall the other stream.
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)
            .map(nix::fcntl::OFlag::from_bits_truncate)
            .unwrap_or(nix::fcntl::OFlag::empty());
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
        );
        Input {
            file: File::from(fd),
            framer: Framer::new(stream),
            open: true,
        }
    }
}

/// Where records go: the driver's rotating files, or a test's memory.
pub(crate) trait RecordSink {
    fn record(&mut self, timestamp: &str, stream: LogStream, partial: bool, text: &[u8]);
}

/// Cuts one stream's bytes into records: a line per `F` record, `P` pieces of at most
/// [`MAX_RECORD_TEXT`] bytes for longer lines, and a last `P` for output ending without a
/// newline (as containerd's CRI logger does).
pub(crate) struct Framer {
    stream: LogStream,
    /// Bytes after the last newline; never longer than [`MAX_RECORD_TEXT`].
    pending: Vec<u8>,
}

impl Framer {
    pub(crate) fn new(stream: LogStream) -> Framer {
        Framer {
            stream,
            pending: Vec::new(),
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8], timestamp: &str, sink: &mut impl RecordSink) {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            if self.pending.is_empty() {
                self.line(&data[..nl], timestamp, sink);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&data[..nl]);
                self.line(&line, timestamp, sink);
                line.clear();
                self.pending = line;
            }
            data = &data[nl + 1..];
        }
        self.pending.extend_from_slice(data);
        // A line exactly MAX_RECORD_TEXT long stays whole: only what is beyond it is cut.
        while self.pending.len() > MAX_RECORD_TEXT {
            sink.record(
                timestamp,
                self.stream,
                true,
                &self.pending[..MAX_RECORD_TEXT],
            );
            self.pending.drain(..MAX_RECORD_TEXT);
        }
    }

    /// At EOF: what is left without a newline becomes a `P` record.
    pub(crate) fn finish(&mut self, timestamp: &str, sink: &mut impl RecordSink) {
        if !self.pending.is_empty() {
            sink.record(timestamp, self.stream, true, &self.pending);
            self.pending.clear();
        }
    }

    fn line(&self, mut text: &[u8], timestamp: &str, sink: &mut impl RecordSink) {
        while text.len() > MAX_RECORD_TEXT {
            sink.record(timestamp, self.stream, true, &text[..MAX_RECORD_TEXT]);
            text = &text[MAX_RECORD_TEXT..];
        }
        sink.record(timestamp, self.stream, false, text);
    }
}

/// Appends records to `{dir}/{seq:010}.log`, starting a new file when the next record would
/// pass the size limit (records never span files, so every offset handed to readers is a
/// record boundary) and deleting the oldest beyond the file count.
pub(crate) struct RotatingWriter {
    /// `None`: the settings were unusable and output is discarded.
    config: Option<DriverConfig>,
    file: Option<File>,
    seq: u64,
    /// Bytes in the current file, the buffered ones included.
    size: u64,
    buf: Vec<u8>,
    /// After a failed open or write, no new attempt before this.
    retry_at: Option<Instant>,
}

impl RotatingWriter {
    pub(crate) fn new(config: Option<DriverConfig>) -> RotatingWriter {
        let mut writer = RotatingWriter {
            config,
            file: None,
            seq: 0,
            size: 0,
            buf: Vec::with_capacity(WRITE_BUFFER + MAX_RECORD_TEXT + 64),
            retry_at: None,
        };
        writer.open_newest();
        writer
    }

    pub(crate) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Opens the newest file to continue it (a restarted container's records follow the
    /// previous run's) unless it is full, else starts the next one.
    fn open_newest(&mut self) {
        let Some(config) = &self.config else { return };
        let dir = config.dir.clone();
        let max_size = config.rotation.max_size;
        let opened = (|| -> io::Result<(u64, File, u64)> {
            // Logs hold what apps print, secrets included at times: owner only, like the
            // data dir around them.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            let newest = files::list(&dir)?.last().copied();
            let seq = match newest {
                Some(seq) => {
                    let len = std::fs::metadata(files::file_path(&dir, seq))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    if len < max_size {
                        seq
                    } else {
                        seq + 1
                    }
                }
                None => self.seq.max(1),
            };
            let file = open_append(&files::file_path(&dir, seq))?;
            let len = file.metadata()?.len();
            Ok((seq, file, len))
        })();
        match opened {
            Ok((seq, file, len)) => {
                self.seq = seq;
                self.size = len + self.buf.len() as u64;
                self.file = Some(file);
                self.retry_at = None;
                self.prune();
            }
            Err(e) => self.failed("open", &dir, e),
        }
    }

    /// Writes the buffered records.
    pub(crate) fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.file.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                self.buf.clear();
                return;
            }
            self.open_newest();
        }
        let Some(file) = &mut self.file else {
            self.buf.clear();
            return;
        };
        if let Err(e) = file.write_all(&self.buf) {
            let path = self.current_path();
            self.failed("write", &path, e);
        }
        self.buf.clear();
    }

    fn rotate(&mut self) {
        self.flush();
        let Some(config) = &self.config else { return };
        let next = self.seq + 1;
        let path = files::file_path(&config.dir, next);
        match open_append(&path) {
            Ok(file) => {
                self.seq = next;
                self.size = 0;
                self.file = Some(file);
                self.prune();
            }
            Err(e) => self.failed("open", &path, e),
        }
    }

    /// Deletes the oldest files beyond the count.
    fn prune(&self) {
        let Some(config) = &self.config else { return };
        let Ok(seqs) = files::list(&config.dir) else {
            return;
        };
        let keep = config.rotation.max_files.max(1) as usize;
        for seq in &seqs[..seqs.len().saturating_sub(keep)] {
            if *seq < self.seq {
                let _ = std::fs::remove_file(files::file_path(&config.dir, *seq));
            }
        }
    }

    fn current_path(&self) -> PathBuf {
        self.config
            .as_ref()
            .map(|c| files::file_path(&c.dir, self.seq))
            .unwrap_or_default()
    }

    fn failed(&mut self, what: &str, path: &Path, e: io::Error) {
        eprintln!(
            "hivemind log-driver: {what} {}: {e}; output is dropped until it works again",
            path.display()
        );
        self.file = None;
        self.retry_at = Some(Instant::now() + RETRY_OPEN);
    }
}

impl RecordSink for RotatingWriter {
    fn record(&mut self, timestamp: &str, stream: LogStream, partial: bool, text: &[u8]) {
        let Some(config) = &self.config else { return };
        let len = (timestamp.len() + stream.as_str().len() + text.len() + 5) as u64;
        if self.size > 0 && self.size + len > config.rotation.max_size {
            self.rotate();
        }
        cri::encode_into(&mut self.buf, timestamp, stream, partial, text);
        self.size += len;
        if self.buf.len() >= WRITE_BUFFER {
            self.flush();
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// A writer with these settings, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn writer_for_test(dir: &Path, rotation: files::Rotation) -> RotatingWriter {
    RotatingWriter::new(Some(DriverConfig {
        dir: dir.to_path_buf(),
        rotation,
    }))
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
