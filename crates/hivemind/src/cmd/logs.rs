//! `logs`: streams from a replica's node, through the server.
//!
//! `logs` prints one replica's lines as they are, or a service's replicas merged with a
//! `replica | ` prefix (coloured on a terminal, like `docker compose logs`), optionally with
//! each line's timestamp (`-t`). `--since` is turned into an absolute time here, so that the
//! agents filter by the same instant. Following survives a server or agent restart: it
//! remembers where each replica's log stopped (a cursor naming the log file and offset) and
//! resumes there, so no line is lost or printed twice.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use hivemind_client::logs::{
    format_time, parse_since, LogCursor, LogLine, LogPos, LogQuery, LogStream,
};
use hivemind_client::{Client, ClientError, LogTarget};

use crate::cli::{GlobalArgs, LogsArgs};

/// How long a follower waits before reconnecting.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

pub(crate) async fn logs(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<()> {
    let client = crate::config::client(global)?;
    let target = resolve(&client, &args.target).await?;
    let since = match &args.since {
        Some(text) => Some(
            parse_since(text, SystemTime::now()).map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        ),
        None => None,
    };
    let mut printer = Printer::new(
        matches!(target, LogTarget::Service { .. }),
        std::io::stdout().is_terminal(),
        args.timestamps,
    );
    let mut query = LogQuery {
        follow: args.follow,
        tail: args.tail,
        since,
        stream: None,
        cursors: Vec::new(),
    };
    let mut cursors: HashMap<String, LogPos> = HashMap::new();
    let mut reconnecting = false;
    loop {
        query.cursors = cursors
            .iter()
            .map(|(replica, pos)| LogCursor {
                replica: replica.clone(),
                pos: *pos,
            })
            .collect();
        let opened = client.logs(&target, &query).await;
        let lines = match opened {
            Ok(lines) => lines.boxed(),
            Err(e) if reconnecting && is_transient(&e) => {
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut broke = None;
        // Records that arrived together are printed with one write per stream.
        let mut batches = lines.ready_chunks(1024);
        while let Some(batch) = batches.next().await {
            for line in batch {
                match line {
                    Ok(mut line) => {
                        if line.replica.is_none() {
                            if let LogTarget::Replica(id) = &target {
                                line.replica = Some(id.clone());
                            }
                        }
                        if let Some(replica) = &line.replica {
                            cursors.insert(replica.clone(), line.next);
                        }
                        printer.print(&line);
                    }
                    Err(e) => {
                        broke = Some(e);
                        break;
                    }
                }
            }
            printer.flush()?;
            if broke.is_some() {
                break;
            }
        }
        if !args.follow {
            return match broke {
                Some(e) => Err(e.into()),
                None => Ok(()),
            };
        }
        // The stream of a follow ends only when the server or the agent went away.
        eprintln!("(log stream interrupted; reconnecting)");
        reconnecting = true;
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// `app/web` and a bare service name are services; anything else is taken as a replica id.
async fn resolve(client: &Client, target: &str) -> anyhow::Result<LogTarget> {
    if let Some((app, name)) = target.split_once('/') {
        return Ok(LogTarget::Service {
            app: app.to_string(),
            name: name.to_string(),
        });
    }
    match client.find_service(target).await {
        Ok(service) => Ok(LogTarget::Service {
            app: service.app,
            name: service.name,
        }),
        Err(e) if e.is_not_found() => Ok(LogTarget::Replica(target.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Prints records: stdout lines to stdout, stderr lines to stderr, with a per-replica prefix
/// when several replicas are merged and the timestamp when asked.
struct Printer {
    prefix: bool,
    colour: bool,
    timestamps: bool,
    /// Per stream (`LogStream as usize`): the last record printed was a `P` piece, so the next
    /// one continues its line (only when lines are joined, see `format`).
    open_line: [bool; 2],
    /// Formatted records not written yet, per stream.
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    colours: HashMap<String, &'static str>,
    width: usize,
}

const PALETTE: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

impl Printer {
    fn new(prefix: bool, colour: bool, timestamps: bool) -> Printer {
        Printer {
            prefix,
            colour,
            timestamps,
            open_line: [false; 2],
            stdout: Vec::new(),
            stderr: Vec::new(),
            colours: HashMap::new(),
            width: 0,
        }
    }

    /// Buffers a record; [`Printer::flush`] writes it.
    fn print(&mut self, line: &LogLine) {
        let out = self.format(line);
        match line.stream {
            LogStream::Stdout => self.stdout.extend(out),
            LogStream::Stderr => self.stderr.extend(out),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.stdout.is_empty() {
            let mut o = std::io::stdout().lock();
            o.write_all(&self.stdout)?;
            o.flush()?;
            self.stdout.clear();
        }
        if !self.stderr.is_empty() {
            let mut e = std::io::stderr().lock();
            e.write_all(&self.stderr)?;
            e.flush()?;
            self.stderr.clear();
        }
        Ok(())
    }

    fn format(&mut self, line: &LogLine) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.text.len() + 32);
        // One replica's output is printed as written: the pieces of a line longer than a
        // record (`P`) are joined, and output that ended without a newline ends without one.
        // Merged replicas get a prefixed line per record instead, so they cannot garble.
        let joined = !self.prefix;
        let continues = joined && self.open_line[line.stream as usize];
        if joined {
            self.open_line[line.stream as usize] = line.partial;
        }
        if continues {
            out.extend_from_slice(&line.text);
            if !line.partial {
                out.push(b'\n');
            }
            return out;
        }
        if let (true, Some(replica)) = (self.prefix, &line.replica) {
            self.width = self.width.max(replica.len());
            let n = self.colours.len();
            let colour = *self
                .colours
                .entry(replica.clone())
                .or_insert(PALETTE[n % PALETTE.len()]);
            let label = format!("{replica:<width$} | ", width = self.width);
            if self.colour {
                out.extend_from_slice(format!("\x1b[{colour}m{label}\x1b[0m").as_bytes());
            } else {
                out.extend_from_slice(label.as_bytes());
            }
        }
        if self.timestamps {
            out.extend_from_slice(format_time(line.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line.text);
        if !(joined && line.partial) {
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(replica: &str, text: &str) -> LogLine {
        LogLine {
            replica: Some(replica.into()),
            next: LogPos::default(),
            time: std::time::UNIX_EPOCH + Duration::new(1_795_765_402, 5),
            stream: LogStream::Stdout,
            partial: false,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn merged_lines_get_an_aligned_prefix_per_replica() {
        let mut p = Printer::new(true, false, false);
        assert_eq!(p.format(&line("web-abcde", "hi")), b"web-abcde | hi\n");
        assert_eq!(p.format(&line("w-1", "x")), b"w-1       | x\n");
        let mut single = Printer::new(false, false, false);
        assert_eq!(single.format(&line("web-abcde", "hi")), b"hi\n");
    }

    #[test]
    fn one_replica_s_partial_pieces_are_joined_and_merged_ones_are_not() {
        let piece = |text: &str, partial: bool| LogLine {
            partial,
            ..line("w-1", text)
        };
        let mut single = Printer::new(false, false, true);
        let time = format_time(line("w-1", "").time);
        let printed: Vec<u8> = [piece("aa", true), piece("bb", true), piece("cc", false)]
            .iter()
            .chain([piece("next", false), piece("tail", true)].iter())
            .flat_map(|l| single.format(l))
            .collect();
        assert_eq!(
            String::from_utf8(printed).unwrap(),
            format!("{time} aabbcc\n{time} next\n{time} tail")
        );
        let mut merged = Printer::new(true, false, false);
        let printed: Vec<u8> = [piece("aa", true), piece("cc", false)]
            .iter()
            .flat_map(|l| merged.format(l))
            .collect();
        assert_eq!(printed, b"w-1 | aa\nw-1 | cc\n");
    }

    #[test]
    fn timestamps_go_after_the_prefix() {
        let mut p = Printer::new(true, false, true);
        let out = String::from_utf8(p.format(&line("w-1", "hi"))).unwrap();
        let time = format_time(line("w-1", "hi").time);
        assert_eq!(out, format!("w-1 | {time} hi\n"));
        let mut single = Printer::new(false, false, true);
        let out = String::from_utf8(single.format(&line("w-1", "hi"))).unwrap();
        assert_eq!(out, format!("{time} hi\n"));
    }

    #[test]
    fn colours_differ_per_replica_and_only_on_a_terminal() {
        let mut p = Printer::new(true, true, false);
        let a = String::from_utf8(p.format(&line("a", "1"))).unwrap();
        let b = String::from_utf8(p.format(&line("b", "2"))).unwrap();
        assert!(a.starts_with("\x1b[36m"), "{a:?}");
        assert!(b.starts_with("\x1b[33m"), "{b:?}");
        assert_eq!(p.format(&line("a", "3"))[..5], a.as_bytes()[..5]);
    }
}
