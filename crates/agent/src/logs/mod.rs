//! Replica logs on the node: where they are written and how they are read back.
//!
//! `file` reads a log file as a cursor (tail, follow, resume). This module must not talk to the
//! server or to containerd: it only knows the files under [`RuntimeConfig::log_dir`].

pub(crate) mod file;

use crate::runtime::RuntimeConfig;
use file::LogFile;

/// The last `n` lines of replica `id`'s output (stdout and stderr), oldest first, lossily
/// decoded; empty on any error (a missing replica, an unreadable file). Meant for status
/// reports and events, where a failure to read logs must never fail the caller.
// Called by the converge loop (recorded events); unused until that lands.
#[allow(dead_code)]
pub(crate) async fn recent_lines(config: &RuntimeConfig, id: &str, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    // Plain per-stream files carry no timestamps, so the two streams cannot be interleaved:
    // stdout's lines come first, then stderr's (where crash messages usually are).
    let mut out = Vec::new();
    for path in [config.stdout_log(id), config.stderr_log(id)] {
        let Ok(mut file) = LogFile::tail(path, n).await else {
            return Vec::new();
        };
        let Ok(lines) = file.read_to_end().await else {
            return Vec::new();
        };
        out.extend(
            lines
                .into_iter()
                .map(|l| String::from_utf8_lossy(&l.text).into_owned()),
        );
    }
    let skip = out.len().saturating_sub(n);
    out.drain(..skip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recent_lines_takes_the_last_lines_of_both_streams() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig {
            log_dir: dir.path().to_path_buf(),
            ..RuntimeConfig::default()
        };
        assert!(recent_lines(&config, "web-1", 3).await.is_empty());
        std::fs::write(config.stdout_log("web-1"), "a\nb\nc\n").unwrap();
        std::fs::write(config.stderr_log("web-1"), "boom\n").unwrap();
        assert_eq!(recent_lines(&config, "web-1", 2).await, ["c", "boom"]);
        assert_eq!(
            recent_lines(&config, "web-1", 9).await,
            ["a", "b", "c", "boom"]
        );
        assert!(recent_lines(&config, "web-1", 0).await.is_empty());
    }
}
