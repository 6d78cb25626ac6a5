//! Replica logs on the node: the log driver that writes them, the files they live in and how
//! they are read back.
//!
//! containerd's shim runs [`driver`] for every task (a `binary://` log URI); it writes the
//! container's stdout and stderr as CRI records (`cri`) into numbered, size-rotated files
//! (`files`), which [`reader`] reads by cursor for the agent endpoint. This module must not
//! talk to the server or to containerd: it only knows the files under
//! the runtime's log directory (`hivemind_runtime::RuntimeConfig::log_dir`).

pub(crate) mod cri;
pub mod driver;
pub mod files;
pub mod reader;

use std::path::PathBuf;

use reader::ReplicaLog;

/// The last `n` lines of a replica's output, read from its log directory `dir` (stdout and stderr, in the order they were
/// written) written at or after `since`, oldest first, lossily decoded; empty on any error (a
/// missing replica, an unreadable file). Meant for status reports and events, where a failure
/// to read logs must never fail the caller. `since` keeps earlier runs out: the files carry on
/// across restarts of the container.
pub async fn recent_lines(
    dir: PathBuf,
    n: usize,
    since: Option<std::time::SystemTime>,
) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let Ok(mut log) = ReplicaLog::tail(dir, n).await else {
        return Vec::new();
    };
    match log.read_to_end().await {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| since.is_none_or(|since| e.time >= since))
            .map(|e| String::from_utf8_lossy(&e.text).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driver::RecordSink;
    use hivemind_types::logs::LogStream;

    #[tokio::test]
    async fn recent_lines_takes_the_last_lines_of_both_streams() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web-1");
        assert!(recent_lines(web.clone(), 3, None).await.is_empty());
        let mut w = driver::writer_for_test(&web, Default::default());
        let ts = "2026-11-27T07:43:22.123456789Z";
        for (stream, text) in [
            (LogStream::Stdout, "a"),
            (LogStream::Stdout, "b"),
            (LogStream::Stderr, "boom"),
            (LogStream::Stdout, "c"),
        ] {
            w.record(ts, stream, false, text.as_bytes());
        }
        w.flush();
        assert_eq!(recent_lines(web.clone(), 2, None).await, ["boom", "c"]);
        assert_eq!(
            recent_lines(web.clone(), 9, None).await,
            ["a", "b", "boom", "c"]
        );
        assert!(recent_lines(web.clone(), 0, None).await.is_empty());
        // A later run's lines only.
        w.record(
            "2026-11-27T07:45:00.000000000Z",
            LogStream::Stdout,
            false,
            b"run 2",
        );
        w.flush();
        let run2 = humantime::parse_rfc3339("2026-11-27T07:44:00Z").unwrap();
        assert_eq!(recent_lines(web.clone(), 9, Some(run2)).await, ["run 2"]);
    }
}
