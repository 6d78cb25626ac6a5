//! Stop signals: `stop_signal: SIGTERM`, `TERM`, `15`, normalized to the `SIGxxx` name.
//!
//! Names are checked against the Linux signal table so that a typo fails at deploy time rather
//! than when the first replica is stopped.

use serde_yaml_ng::Value;

use super::error::Problems;
use super::value::type_error;

/// Linux signal numbers (x86 and arm numbering, which Hivemind's targets share) and names.
const SIGNALS: &[(u32, &str)] = &[
    (1, "HUP"),
    (2, "INT"),
    (3, "QUIT"),
    (4, "ILL"),
    (5, "TRAP"),
    (6, "ABRT"),
    (7, "BUS"),
    (8, "FPE"),
    (9, "KILL"),
    (10, "USR1"),
    (11, "SEGV"),
    (12, "USR2"),
    (13, "PIPE"),
    (14, "ALRM"),
    (15, "TERM"),
    (16, "STKFLT"),
    (17, "CHLD"),
    (18, "CONT"),
    (19, "STOP"),
    (20, "TSTP"),
    (21, "TTIN"),
    (22, "TTOU"),
    (23, "URG"),
    (24, "XCPU"),
    (25, "XFSZ"),
    (26, "VTALRM"),
    (27, "PROF"),
    (28, "WINCH"),
    (29, "IO"),
    (30, "PWR"),
    (31, "SYS"),
];

/// Reads `stop_signal`: a name with or without `SIG` in any case, or a number; returns the
/// canonical `SIGxxx` name the agent passes to the runtime.
pub(crate) fn read_signal(p: &mut Problems, path: &str, value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            type_error(p, path, "a signal name", other, "stop_signal: SIGTERM");
            return None;
        }
    };
    let found = match text.parse::<u32>() {
        Ok(number) => SIGNALS.iter().find(|(n, _)| *n == number),
        Err(_) => {
            let upper = text.to_ascii_uppercase();
            let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
            SIGNALS.iter().find(|(_, name)| *name == bare)
        }
    };
    match found {
        Some((_, name)) => Some(format!("SIG{name}")),
        None => {
            p.push(
                path,
                format!("{text:?} is not a known signal"),
                "use a signal name such as SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 or a number from 1 to 31",
            );
            None
        }
    }
}
