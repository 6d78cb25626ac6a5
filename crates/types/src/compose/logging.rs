//! `logging`: the replica's log rotation, with Docker's option names so that existing files
//! keep working: `logging: {driver: json-file, options: {max-size: 10m, max-file: "3"}}`.
//!
//! Every node writes logs one way (CRI records in rotated files, read by `hivemind logs`), so
//! the drivers that store logs on the node (`json-file`, `local`) are accepted and mean that.
//! A driver that ships logs elsewhere (`syslog`, `fluentd`...) is a warning, with its options
//! left unread (they are that driver's): the app runs the same, its logs stay on the node.

use serde_yaml_ng::Value;

use super::error::Problems;
use super::resources::parse_size;
use super::value::{describe, expect_mapping, expect_str, expect_u32, join, string_entries};
use super::warnings::Unhonoured;
use crate::spec::LogOptions;

const OTHER_DRIVER: &str = "ignored: replicas' output is kept on their node (read it with \
     `hivemind logs`, or ship it from there with a collector following `hivemind logs -f`)";

/// The smallest `max-size`: a file should hold more than a handful of records.
const MIN_MAX_SIZE: u64 = 1024;

pub(crate) fn read_logging(p: &mut Problems, path: &str, value: &Value) -> LogOptions {
    let mut out = LogOptions::default();
    let example = "logging: {options: {max-size: 10m, max-file: \"3\"}}";
    let Some(map) = expect_mapping(p, path, value, example) else {
        return out;
    };
    let entries = string_entries(p, path, map);
    // The driver decides how its options read, wherever it is written.
    let mut on_node = true;
    for (key, v) in &entries {
        if key == "driver" {
            let key_path = join(path, key);
            if let Some(driver) = expect_str(p, &key_path, v, "driver: json-file") {
                if !matches!(driver.trim(), "json-file" | "local" | "") {
                    on_node = false;
                    p.note(&key_path, Unhonoured::Ignored(OTHER_DRIVER));
                }
            }
        }
    }
    for (key, v) in entries {
        let key_path = join(path, &key);
        match key.as_str() {
            "driver" => {}
            "options" if !on_node => {}
            "options" => read_options(p, &key_path, v, &mut out),
            other => p.push(
                &key_path,
                format!("unknown logging key {other:?}"),
                "use driver and options (max-size, max-file)",
            ),
        }
    }
    out
}

fn read_options(p: &mut Problems, path: &str, value: &Value, out: &mut LogOptions) {
    let Some(map) = expect_mapping(p, path, value, "options: {max-size: 10m, max-file: \"3\"}")
    else {
        return;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "max-size" => out.max_size = read_max_size(p, &key_path, v),
            "max-file" => match expect_u32(p, &key_path, v, "max-file: \"3\"") {
                Some(0) => p.push(
                    &key_path,
                    "max-file must be at least 1",
                    "use a count of files to keep, like max-file: \"3\"",
                ),
                files => out.max_files = files,
            },
            other => p.push(
                &key_path,
                format!("logging option {other:?} is not supported"),
                "remove it: Hivemind reads max-size (like 10m) and max-file (like \"3\")",
            ),
        }
    }
}

fn read_max_size(p: &mut Problems, path: &str, value: &Value) -> Option<u64> {
    let fix = "use a size like 10m, 500k or 1g (at least 1k)";
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            p.push(
                path,
                format!("expected a size, got {}", describe(other)),
                fix,
            );
            return None;
        }
    };
    match parse_size(&text) {
        Some(bytes) if bytes >= MIN_MAX_SIZE => Some(bytes),
        Some(_) => {
            p.push(path, format!("{text:?} is below the 1k minimum"), fix);
            None
        }
        None => {
            p.push(path, format!("{text:?} is not a size"), fix);
            None
        }
    }
}
