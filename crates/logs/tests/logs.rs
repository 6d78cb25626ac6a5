//! The log driver as a process, fed the way containerd's shim feeds it (stdout on fd 3,
//! stderr on fd 4, a ready pipe on fd 5), without containerd: it outlives SIGTERM until its
//! pipes close, and bad settings never make it exit early (which would break the container's
//! writes).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DRIVER: &str = env!("CARGO_BIN_EXE_hivemind-log-driver");

/// The driver with `settings`, its fd 3 fed from the returned child's stdin.
fn spawn(settings: &str) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(r#"exec "$0" log-driver "$1" 3<&0 4</dev/null 5>/dev/null"#)
        .arg(DRIVER)
        .arg(settings)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the driver")
}

fn records(dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(|l| l.split_once(' ').map_or("", |(_, rest)| rest).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn sigterm_does_not_stop_the_driver_before_its_pipes_close() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("web-1");
    let mut child = spawn(&format!("1048576:2:{}", logs.display()));
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"before\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    input.write_all(b"after\nno newline").unwrap();
    drop(input);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        records(&logs),
        ["stdout F before", "stdout F after", "stdout P no newline"]
    );
}

#[test]
fn bad_settings_drain_the_output_instead_of_exiting() {
    let mut child = spawn("not settings");
    let mut input = child.stdin.take().unwrap();
    // Far more than a pipe holds: a driver that stopped reading would block or break this.
    let line = vec![b'x'; 1023];
    for _ in 0..2048 {
        input.write_all(&line).unwrap();
        input.write_all(b"\n").unwrap();
    }
    drop(input);
    assert!(child.wait().unwrap().success());
}

#[test]
fn log_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("web-1");
    let mut child = spawn(&format!("1048576:2:{}", logs.display()));
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"DB_PASS=hunter2\n").unwrap();
    drop(input);
    assert!(child.wait().unwrap().success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&logs), 0o700, "the replica's log dir");
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}
