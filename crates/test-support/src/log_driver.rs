//! The `hivemind-log-driver` binary for the system tests of crates other than `hivemind-logs`
//! (runtime, agent). Cargo gives `CARGO_BIN_EXE_*` only to the tests of the bin's own package,
//! so this builds it once per test process with the cargo running the tests, into the same
//! target directory, and returns its path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of a freshly built `hivemind-log-driver`; panics with the build's error if it
/// cannot be built (a test environment problem, not a product one).
pub fn binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // Test executables live in `<target>/<profile>/deps/`; bins in `<target>/<profile>/`.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "-q",
            "-p",
            "hivemind-logs",
            "--bin",
            "hivemind-log-driver",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        command.arg("--release");
    }
    let status = command
        .status()
        .expect("run cargo to build hivemind-log-driver");
    assert!(
        status.success(),
        "building hivemind-log-driver failed: {status}"
    );
    let path = profile_dir.join("hivemind-log-driver");
    assert!(path.exists(), "{} was not built", path.display());
    path
}
