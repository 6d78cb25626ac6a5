use super::*;
use crate::driver::{writer_for_test, RecordSink};
use crate::files::Rotation;

const TS: &str = "2026-11-27T07:43:22.123456789Z";

fn texts(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.text).into_owned())
        .collect()
}

fn write(dir: &Path, rotation: Rotation, lines: std::ops::Range<usize>) {
    let mut w = writer_for_test(dir, rotation);
    for i in lines {
        let stream = if i % 2 == 0 {
            LogStream::Stdout
        } else {
            LogStream::Stderr
        };
        w.record(TS, stream, false, format!("line {i:05}").as_bytes());
    }
    w.flush();
}

/// 51-byte records, four to a file.
const SMALL: Rotation = Rotation {
    max_size: 210,
    max_files: 3,
};

/// Regression: `logs REPLICA --tail 3` printed 4 lines when the replica wrote one between the
/// tail's scan and the read. A tail's cursor now ends where the log ended at its scan, unless
/// it follows.
#[tokio::test]
async fn logs_tail_3_returned_4_lines_when_a_line_arrived_during_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer_for_test(dir.path(), SMALL);
    for i in 0..6 {
        w.record(
            TS,
            LogStream::Stdout,
            false,
            format!("line {i:05}").as_bytes(),
        );
    }
    w.flush();
    let mut log = ReplicaLog::tail(dir.path().to_path_buf(), 3).await.unwrap();
    let mut follower = ReplicaLog::tail(dir.path().to_path_buf(), 1).await.unwrap();
    follower.follow();
    // Written after the scans, two into a newer file.
    for i in 6..9 {
        w.record(
            TS,
            LogStream::Stdout,
            false,
            format!("line {i:05}").as_bytes(),
        );
    }
    w.flush();
    assert_eq!(
        texts(&log.read_to_end().await.unwrap()),
        ["line 00003", "line 00004", "line 00005"]
    );
    assert_eq!(
        texts(&follower.read_to_end().await.unwrap()),
        ["line 00005", "line 00006", "line 00007", "line 00008"]
    );
}

#[tokio::test]
async fn tail_counts_records_back_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ReplicaLog::tail(dir.path().join("none"), 3).await.unwrap();
    assert_eq!(missing.pos(), LogPos { seq: 0, offset: 0 });
    write(dir.path(), SMALL, 0..10);
    assert_eq!(files::list(dir.path()).unwrap(), [1, 2, 3]);
    for (n, want) in [
        (0, vec![]),
        (1, vec!["line 00009"]),
        (2, vec!["line 00008", "line 00009"]),
        (
            5,
            vec![
                "line 00005",
                "line 00006",
                "line 00007",
                "line 00008",
                "line 00009",
            ],
        ),
    ] {
        let mut log = ReplicaLog::tail(dir.path().to_path_buf(), n).await.unwrap();
        assert_eq!(texts(&log.read_to_end().await.unwrap()), want, "tail {n}");
    }
    let mut all = ReplicaLog::tail(dir.path().to_path_buf(), 100)
        .await
        .unwrap();
    let all = all.read_to_end().await.unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[1].stream, LogStream::Stderr);
    assert_eq!(
        all[9].next,
        LogPos {
            seq: 3,
            offset: 102
        }
    );
}

#[tokio::test]
async fn tail_18446744073709551615_reads_everything_instead_of_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), SMALL, 0..10);
    for n in [usize::MAX, usize::MAX - 1, 11, 10] {
        // Every record (three files), however large the count.
        let mut log = ReplicaLog::tail(dir.path().to_path_buf(), n).await.unwrap();
        let all = log.read_to_end().await.unwrap();
        assert_eq!(
            texts(&all).first().map(String::as_str),
            Some("line 00000"),
            "tail {n}"
        );
        assert_eq!(all.len(), 10, "tail {n}");
    }
    let missing = ReplicaLog::tail(dir.path().join("none"), usize::MAX)
        .await
        .unwrap();
    assert_eq!(missing.pos(), LogPos { seq: 0, offset: 0 });
}

#[tokio::test]
async fn tail_of_a_file_larger_than_one_block_and_a_record_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Rotation::default(), 0..5000);
    let path = files::file_path(dir.path(), 1);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{TS} stdout F half-writ").as_bytes()).unwrap();
    let mut log = ReplicaLog::tail(dir.path().to_path_buf(), 2).await.unwrap();
    assert_eq!(
        texts(&log.read_to_end().await.unwrap()),
        ["line 04998", "line 04999"]
    );
    // The rest of the record arrives: a follower sees it whole.
    log.follow();
    std::io::Write::write_all(&mut f, b"ten\n").unwrap();
    assert_eq!(texts(&log.poll().await.unwrap()), ["half-written"]);
}

#[tokio::test]
async fn cursors_resume_exactly_and_survive_rotation() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), SMALL, 0..6);
    let mut log = ReplicaLog::start(dir.path().to_path_buf());
    let first = log.read_to_end().await.unwrap();
    assert_eq!(first.len(), 6);
    // Resuming after record 2 gives exactly the rest.
    let mut resumed = ReplicaLog::at(dir.path().to_path_buf(), first[2].next);
    assert_eq!(
        texts(&resumed.read_to_end().await.unwrap()),
        ["line 00003", "line 00004", "line 00005"]
    );
    // A restarted driver continues file 2, then files 1 and 2 rotate away.
    write(dir.path(), SMALL, 6..18);
    assert_eq!(files::list(dir.path()).unwrap(), [3, 4, 5]);
    // The follower, drained at the end of file 2, moves on across files 3, 4, 5.
    let mut followed = Vec::new();
    for _ in 0..10 {
        followed.extend(texts(&log.poll().await.unwrap()));
    }
    assert_eq!(followed.first().map(String::as_str), Some("line 00008"));
    assert_eq!(followed.last().map(String::as_str), Some("line 00017"));
    // A cursor into a file that is gone resumes at the oldest file left.
    let mut stale = ReplicaLog::at(dir.path().to_path_buf(), first[0].next);
    let rest = stale.read_to_end().await.unwrap();
    assert_eq!(texts(&rest)[0], "line 00008");
    assert_eq!(rest[0].next.seq, 3);
}

#[tokio::test]
async fn a_drained_follower_moves_to_the_newer_file_only_after_the_last_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), SMALL, 0..3);
    let mut log = ReplicaLog::start(dir.path().to_path_buf());
    assert_eq!(log.poll().await.unwrap().len(), 3);
    assert!(log.poll().await.unwrap().is_empty());
    // The driver appends one more record to file 1, then starts file 2.
    write(dir.path(), SMALL, 3..5);
    let got = log.read_to_end().await.unwrap();
    assert_eq!(texts(&got), ["line 00003", "line 00004"]);
    assert_eq!(got[1].next.seq, 2);
}

#[tokio::test]
async fn lines_that_are_not_records_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        files::file_path(dir.path(), 1),
        format!("garbage\n{TS} stdout F ok\n"),
    )
    .unwrap();
    let mut log = ReplicaLog::start(dir.path().to_path_buf());
    let got = log.read_to_end().await.unwrap();
    assert_eq!(texts(&got), ["ok"]);
}

#[tokio::test]
async fn since_skips_files_that_end_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer_for_test(dir.path(), SMALL);
    let at = |secs: u64| {
        crate::cri::timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    };
    // Four records a file: file 1 holds times 10-13, file 2 times 14-17, file 3 time 18.
    for i in 0..9u64 {
        w.record(
            &at(10 + i),
            LogStream::Stdout,
            false,
            format!("line {i:05}").as_bytes(),
        );
    }
    w.flush();
    assert_eq!(files::list(dir.path()).unwrap(), [1, 2, 3]);
    let t = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let log = ReplicaLog::since(dir.path().to_path_buf(), t(15))
        .await
        .unwrap();
    assert_eq!(log.pos(), LogPos { seq: 2, offset: 0 });
    let log = ReplicaLog::since(dir.path().to_path_buf(), t(0))
        .await
        .unwrap();
    assert_eq!(log.pos(), LogPos { seq: 1, offset: 0 });
    let mut log = ReplicaLog::since(dir.path().to_path_buf(), t(99))
        .await
        .unwrap();
    assert_eq!(log.pos(), LogPos { seq: 3, offset: 51 });
    assert!(log.read_to_end().await.unwrap().is_empty());
}
