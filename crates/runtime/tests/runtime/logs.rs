//! System tests of container output through the log driver (`hivemind-log-driver`, run by
//! containerd's shim from the task's `binary://` log URI): CRI records with timestamps, both
//! streams in one file, long lines in pieces, restarts continuing the newest file, and
//! rotation by the service's `logging` options.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hivemind_runtime::{ContainerRuntime, CreateOptions};
use hivemind_types::spec::LogOptions;

use super::{replica, unique_id, TestEnv};

/// One CRI record of a log file.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub(crate) time: SystemTime,
    pub(crate) stream: String,
    pub(crate) tag: String,
    pub(crate) text: String,
}

/// The numbered log files of a replica's directory, ascending.
pub(crate) fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    files
}

/// Every record of a replica's log files, oldest first; panics on a line that is not one.
pub(crate) fn records(dir: &Path) -> Vec<Rec> {
    let mut out = Vec::new();
    for file in log_files(dir) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines() {
            let mut words = line.splitn(4, ' ');
            let time = words.next().unwrap_or_default();
            assert_eq!(time.len(), 30, "nanosecond RFC 3339 timestamp: {line:?}");
            out.push(Rec {
                time: humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{line:?}: {e}")),
                stream: words.next().unwrap_or_default().to_string(),
                tag: words.next().unwrap_or_default().to_string(),
                text: words.next().unwrap_or_default().to_string(),
            });
        }
    }
    out
}

/// Records without their (possibly huge) text, for failure messages.
fn summary(recs: &[Rec]) -> Vec<(String, String, usize)> {
    recs.iter()
        .map(|r| (r.stream.clone(), r.tag.clone(), r.text.len()))
        .collect()
}

#[tokio::test]
async fn output_is_written_as_timestamped_records_and_a_restart_continues_the_file() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let id = unique_id("logs");
    let before = SystemTime::now();
    env.run(
        &id,
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; printf tail",
        ],
    )
    .await;
    assert_eq!(env.wait_stopped(&id).await, 0);
    let dir = env.config().replica_log_dir(&id);
    let wait_for = |n: usize| {
        let dir = dir.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let recs = records(&dir);
                if recs.len() >= n {
                    return recs;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} records, wanted {n}: {:?}",
                    recs.len(),
                    summary(&recs)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(5).await;
    // The unterminated "tail" is written at EOF, which the driver sees when the task is
    // deleted (until then the shim holds the pipes open).
    env.runtime
        .stop(&id, "SIGTERM", Duration::from_secs(1))
        .await
        .expect("delete the task");
    let recs = wait_for(6).await;
    // Each stream's records are in order; how the two interleave depends on when the driver
    // read each pipe.
    let of = |stream: &str| -> Vec<(String, usize)> {
        recs.iter()
            .filter(|r| r.stream == stream)
            .map(|r| (r.tag.clone(), r.text.len()))
            .collect()
    };
    let s = |x: &str| x.to_string();
    assert_eq!(
        of("stdout"),
        [
            (s("F"), 3),
            (s("P"), 16384),
            (s("P"), 16384),
            (s("F"), 40000 - 2 * 16384),
            (s("P"), 4),
        ],
    );
    assert_eq!(of("stderr"), [(s("F"), 3)]);
    assert_eq!(recs[0].text, "out");
    assert_eq!(recs.last().unwrap().text, "tail");
    for r in &recs {
        assert!(r.time >= before - Duration::from_secs(1), "{:?}", r.time);
        assert!(r.time <= SystemTime::now(), "{:?}", r.time);
    }
    assert!(recs.windows(2).all(|w| w[0].time <= w[1].time));
    assert_eq!(log_files(&dir).len(), 1);

    // A restart (new task, new driver) appends to the same file.
    env.runtime.start(&id).await.expect("restart");
    assert_eq!(env.wait_stopped(&id).await, 0);
    env.runtime
        .stop(&id, "SIGTERM", Duration::from_secs(1))
        .await
        .expect("delete the task");
    let again = wait_for(12).await;
    let files = log_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("0000000001.log"), "{files:?}");
    assert_eq!(again.len(), 12, "{:?}", summary(&again));
    assert_eq!(again[6].text, "out");
    env.runtime.remove(&id).await.expect("remove");
}

#[tokio::test]
async fn the_services_logging_options_rotate_its_files() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let id = unique_id("rot");
    let mut r = replica(
        &id,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 600 ]; do echo \"line $i padding padding\"; i=$((i+1)); done",
        ],
    );
    r.spec.logging = LogOptions {
        max_size: Some(4096),
        max_files: Some(2),
    };
    env.runtime
        .create(&r, &CreateOptions::default())
        .await
        .expect("create");
    env.runtime.start(&id).await.expect("start");
    assert_eq!(env.wait_stopped(&id).await, 0);
    let dir = env.config().replica_log_dir(&id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while records(&dir).last().map(|r| r.text.as_str()) != Some("line 599 padding padding") {
        assert!(
            std::time::Instant::now() < deadline,
            "last line never written: {:?}",
            records(&dir).last().map(|r| r.text.clone())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // About 60 bytes a record, 600 records: ~9 files were written, the last 2 are kept.
    let files = log_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(!files[0].ends_with("0000000001.log"), "{files:?}");
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 4096, "{} is {len} bytes", f.display());
    }
    env.runtime.remove(&id).await.expect("remove");
}
