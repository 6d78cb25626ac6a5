//! Printing: tables for people, JSON/YAML for scripts, and errors as "what" plus "how to fix".

use serde::Serialize;

use crate::cli::OutputFormat;

/// Prints `rows` as a table (with `headers`) or the `value` as JSON/YAML.
pub(crate) fn print_list<T: Serialize>(
    format: OutputFormat,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        OutputFormat::Table => print!("{}", table(headers, &rows)),
    }
    Ok(())
}

pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// "3m", "2h", "5d": the age of something created at `created_ms` (Unix ms).
/// A replica's state as `ps` shows it: with its health in parentheses when it has a check,
/// like `docker ps` (`running (healthy)`, `running (starting)`, `restarting (unhealthy)`).
pub(crate) fn replica_state(status: &hivemind_types::ObservedReplica) -> String {
    match &status.health {
        Some(h) => format!("{} ({})", status.state.as_str(), h.status.as_str()),
        None => status.state.as_str().to_string(),
    }
}

pub(crate) fn age(created_ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    span(now.saturating_sub(created_ms))
}

/// A length of time the way `age` shows it: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn span(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// Prints an error: one line of what went wrong, then how to fix it when known.
pub(crate) fn print_error(e: &anyhow::Error) {
    if let Some(client) = e.downcast_ref::<hivemind_client::ClientError>() {
        eprintln!("error: {client}");
        if let Some(fix) = client.fix() {
            eprintln!("  fix: {fix}");
        }
        return;
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_state_shows_health_like_docker_ps() {
        let mut s: hivemind_types::ObservedReplica = serde_json::from_value(serde_json::json!({
            "id": "web-1", "node": "n1", "state": "running"
        }))
        .unwrap();
        assert_eq!(replica_state(&s), "running");
        for (status, want) in [
            (hivemind_types::HealthStatus::Healthy, "running (healthy)"),
            (hivemind_types::HealthStatus::Starting, "running (starting)"),
            (
                hivemind_types::HealthStatus::Unhealthy,
                "running (unhealthy)",
            ),
        ] {
            s.health = Some(hivemind_types::Health {
                status,
                failing_streak: 0,
                last_output: String::new(),
                checked_at: None,
            });
            assert_eq!(replica_state(&s), want);
        }
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["web-abcde".into(), "running".into()],
                vec!["db".into(), "failed".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME        STATE\nweb-abcde   running\ndb          failed\n"
        );
    }
}
