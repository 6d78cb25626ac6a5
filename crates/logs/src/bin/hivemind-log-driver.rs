//! The log driver alone, so that the agent crate's own tests can run containers (they name it
//! with `CARGO_BIN_EXE_hivemind-log-driver`); the product runs `hivemind log-driver`, the same
//! function. The shim runs it as `PATH log-driver SETTINGS`.

fn main() -> std::process::ExitCode {
    let settings = std::env::args()
        .skip_while(|a| a != "log-driver")
        .nth(1)
        .unwrap_or_default();
    std::process::ExitCode::from(hivemind_logs::driver::run(&settings))
}
