//! Compose durations: `10s`, `1m30s`, `500ms`, `1.5h`.
//!
//! Durations follow the Go `time.ParseDuration` grammar that Docker Compose uses: one or more
//! `NUMBER UNIT` pairs with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, and a bare `0`. A bare
//! non-zero number is refused because its unit would be a guess.

use serde_yaml_ng::Value;

use super::error::Problems;
use super::value::type_error;

const DURATION_FIX: &str =
    "write a number with a unit, such as \"10s\", \"1m30s\", \"500ms\" or \"1h\"";

/// Reads a duration value at `path`, in milliseconds (sub-millisecond parts are dropped).
pub(crate) fn read_duration_ms(p: &mut Problems, path: &str, value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => match parse_duration_ms(s.trim()) {
            Ok(ms) => Some(ms),
            Err(why) => {
                p.push(
                    path,
                    format!("{s:?} is not a valid duration: {why}"),
                    DURATION_FIX,
                );
                None
            }
        },
        Value::Number(n) if n.as_u64() == Some(0) => Some(0),
        Value::Number(n) => {
            p.push(
                path,
                format!("the duration {n} has no unit"),
                format!("write \"{n}s\" for {n} seconds; units are ms, s, m and h"),
            );
            None
        }
        other => {
            type_error(
                p,
                path,
                "a duration string",
                other,
                "stop_grace_period: 10s",
            );
            None
        }
    }
}

/// Parses a Go-style duration into milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    if text == "0" {
        return Ok(0);
    }
    if text.starts_with('-') {
        return Err("durations cannot be negative".to_string());
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let mut rest = text;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..digits_end];
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        if number.is_empty() {
            return Err(format!("expected a number before {unit:?}"));
        }
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{number} has no unit")),
            other => return Err(format!("unknown unit {other:?}")),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("{number:?} is not a number"));
        }
        // Enough digits for any sensible duration; more would only overflow.
        if whole.len() > 20 || frac.len() > 18 {
            return Err("the number is too long".to_string());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("{number:?} is not a number"))?
        };
        let mut frac_ns: u128 = 0;
        if !frac.is_empty() {
            let scale = 10u128.pow(frac.len() as u32);
            let digits: u128 = frac
                .parse()
                .map_err(|_| format!("{number:?} is not a number"))?;
            frac_ns = digits * unit_ns / scale;
        }
        total_ns = total_ns
            .checked_add(whole.checked_mul(unit_ns).ok_or("it is too long")?)
            .and_then(|t| t.checked_add(frac_ns))
            .ok_or("it is too long")?;
    }
    u64::try_from(total_ns / 1_000_000).map_err(|_| "it is too long".to_string())
}
