//! `deploy.resources`: `limits.{cpus, memory, pids}` and `reservations.{cpus, memory}`, read
//! into `Resources` with Docker's units.
//!
//! CPUs are decimal numbers of CPUs (`"0.5"`, `2`); sizes are bytes or a number with a binary
//! unit (`64M`, `1g`, `512mb`), as Docker's `RAMInBytes` reads them. `devices` and
//! `generic_resources` need device plumbing Hivemind does not have yet.

use serde_yaml_ng::Value;

use super::error::Problems;
use super::keys::unknown_key;
use super::value::{describe, expect_mapping, join, string_entries};
use crate::limits::Resources;

/// The smallest memory limit Docker accepts: below it a container cannot even start its runtime.
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

const LIMIT_KEYS: &[&str] = &["cpus", "memory", "pids"];
const RESERVATION_KEYS: &[&str] = &["cpus", "memory", "devices", "generic_resources"];

pub(crate) fn read_resources(p: &mut Problems, path: &str, value: &Value) -> Resources {
    let mut out = Resources::default();
    let Some(map) = expect_mapping(p, path, value, "resources: {limits: {memory: 512M}}") else {
        return out;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "limits" => read_limits(p, &key_path, v, &mut out),
            "reservations" => read_reservations(p, &key_path, v, &mut out),
            _ if key.starts_with("x-") => {}
            other => unknown_key(p, &key_path, other, ["limits", "reservations"]),
        }
    }
    if let (Some(limit), Some(reservation)) = (out.memory_limit_bytes, out.memory_reservation_bytes)
    {
        if reservation > limit {
            p.push(
                join(&join(path, "reservations"), "memory"),
                "the memory reservation is above the memory limit",
                "reserve at most limits.memory",
            );
        }
    }
    out
}

/// The service-level forms of the limits (`cpus`, `mem_limit`, `mem_reservation`,
/// `pids_limit`), as Compose reads them outside `deploy`; `deploy.resources` wins where both
/// set a value.
pub(crate) fn read_service_level(
    p: &mut Problems,
    key: &str,
    path: &str,
    value: &Value,
    out: &mut Resources,
) {
    match key {
        "cpus" => out.cpu_limit_nanos = read_cpus(p, path, value),
        "mem_limit" => out.memory_limit_bytes = read_memory(p, path, value),
        "mem_reservation" => out.memory_reservation_bytes = read_memory(p, path, value),
        "pids_limit" => out.pids_limit = read_pids(p, path, value),
        _ => {}
    }
}

fn read_limits(p: &mut Problems, path: &str, value: &Value, out: &mut Resources) {
    let Some(map) = expect_mapping(p, path, value, "limits: {cpus: \"0.5\", memory: 512M}") else {
        return;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "cpus" => out.cpu_limit_nanos = read_cpus(p, &key_path, v),
            "memory" => out.memory_limit_bytes = read_memory(p, &key_path, v),
            "pids" => out.pids_limit = read_pids(p, &key_path, v),
            _ if key.starts_with("x-") => {}
            other => unknown_key(p, &key_path, other, LIMIT_KEYS.iter().copied()),
        }
    }
}

fn read_reservations(p: &mut Problems, path: &str, value: &Value, out: &mut Resources) {
    let Some(map) = expect_mapping(p, path, value, "reservations: {memory: 256M}") else {
        return;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "cpus" => out.cpu_reservation_nanos = read_cpus(p, &key_path, v),
            "memory" => out.memory_reservation_bytes = read_memory(p, &key_path, v),
            "devices" | "generic_resources" => p.push(
                &key_path,
                format!("`{key_path}` is not supported yet"),
                "remove it; Hivemind will honour it in a later release",
            ),
            _ if key.starts_with("x-") => {}
            other => unknown_key(p, &key_path, other, RESERVATION_KEYS.iter().copied()),
        }
    }
}

/// A scalar as text: numbers stay numbers after interpolation only when written literally.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// CPUs as nano-CPUs: at most 9 decimals, at least 0.01.
fn read_cpus(p: &mut Problems, path: &str, value: &Value) -> Option<u64> {
    let fix = "use a number of CPUs above zero, like \"0.5\" or 2";
    let Some(text) = scalar_text(value) else {
        p.push(
            path,
            format!("expected a number, got {}", describe(value)),
            fix,
        );
        return None;
    };
    match parse_nanos(&text) {
        Some(0) => {
            p.push(path, format!("{text:?} CPUs is no CPU at all"), fix);
            None
        }
        // Docker's floor: a quota below 1 ms per 100 ms period is refused by the kernel.
        Some(n) if n < 10_000_000 => {
            p.push(path, format!("{text:?} is below the 0.01 CPU minimum"), fix);
            None
        }
        Some(n) => Some(n),
        None => {
            p.push(path, format!("{text:?} is not a number of CPUs"), fix);
            None
        }
    }
}

/// Parses a non-negative decimal into billionths without floating point, so that `0.1` is
/// exactly 100000000.
pub(crate) fn parse_nanos(text: &str) -> Option<u64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    whole.checked_mul(1_000_000_000)?.checked_add(frac_nanos)
}

fn read_memory(p: &mut Problems, path: &str, value: &Value) -> Option<u64> {
    let fix = "use 512M, 1G or bytes";
    let Some(text) = scalar_text(value) else {
        p.push(
            path,
            format!("expected a size, got {}", describe(value)),
            fix,
        );
        return None;
    };
    match parse_size(&text) {
        Some(bytes) if bytes < MIN_MEMORY_BYTES => {
            p.push(
                path,
                format!("{text:?} is below the 6M minimum"),
                "use at least 6M; a container needs that much to start",
            );
            None
        }
        Some(bytes) => Some(bytes),
        None => {
            p.push(path, format!("{text:?} is not a size"), fix);
            None
        }
    }
}

/// A size in bytes: digits with an optional fraction, then an optional binary unit `b`, `k`,
/// `m`, `g`, `t` or `p` (case-insensitive, optionally followed by `b`), as Docker reads them.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return None,
    };
    let nanos = parse_nanos(number)?;
    // bytes = number * 2^shift, computed in u128 from the exact decimal.
    let bytes = (u128::from(nanos) << shift) / 1_000_000_000;
    u64::try_from(bytes).ok()
}

fn read_pids(p: &mut Problems, path: &str, value: &Value) -> Option<u64> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n > 0 => Some(n as u64),
        // Docker's "unlimited".
        Some(-1) => None,
        _ => {
            p.push(
                path,
                format!("{} is not a pids limit", describe(value)),
                "use a whole number above zero, like 100, or -1 for no limit",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        let table = [
            ("64M", Some(64 << 20)),
            ("1g", Some(1 << 30)),
            ("512mb", Some(512 << 20)),
            ("1.5G", Some(3 << 29)),
            ("67108864", Some(67_108_864)),
            ("100k", Some(102_400)),
            ("2 GiB", Some(2 << 30)),
            ("lots", None),
            ("", None),
            ("1.2.3M", None),
            ("5X", None),
            ("-1M", None),
            ("99999999999P", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_size(text), want, "{text}");
        }
    }

    #[test]
    fn cpus_are_exact_nanos() {
        let table = [
            ("0.5", Some(500_000_000)),
            ("2", Some(2_000_000_000)),
            ("0.1", Some(100_000_000)),
            (".25", Some(250_000_000)),
            ("1.0000000001", None),
            ("one", None),
            ("-1", None),
            (".", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_nanos(text), want, "{text}");
        }
    }
}
