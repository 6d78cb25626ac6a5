//! The local terminal of `hivemind exec -t`: whether stdin is one, its size, and raw mode
//! that is always undone.

use std::io::IsTerminal;

use anyhow::Context;
use hivemind_client::exec::TtySize;
use rustix::termios::{tcgetattr, tcgetwinsize, tcsetattr, OptionalActions, Termios};

/// Fails like `docker exec -t` when stdin is not a terminal: a remote terminal needs a local
/// one to size it and to type into.
pub(super) fn require_stdin_tty() -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        return Ok(());
    }
    anyhow::bail!(
        "the input device is not a TTY: -t/--tty needs a terminal on stdin; \
         drop -t when piping input (`echo hi | hivemind exec -i REPLICA -- cat`)"
    )
}

/// The size of the terminal on stdin; `None` when it cannot be read or reports zero (some
/// pseudo-terminals before their first resize).
pub(super) fn size() -> Option<TtySize> {
    let size = tcgetwinsize(std::io::stdin()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some(TtySize {
        cols: size.ws_col,
        rows: size.ws_row,
    })
}

/// Stdin's terminal in raw mode (no echo, no line editing, no signals from Ctrl-C/Ctrl-Z, no
/// output processing), restored when dropped: on the normal path, on `?` errors and on panics.
/// The caller must let it drop before `std::process::exit`, which runs no destructors.
pub(super) struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub(super) fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw)
            .context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing to do on failure: the terminal is gone or someone else owns it now.
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}
