//! `exec`: a command run in a replica, through the server and the replica's node agent, over
//! the framed exec session (`hivemind_client::exec::frame`): stdin with `-i`, a terminal with
//! `-t`, output bytes as they are, and the process's exit status as this command's.
//!
//! Input and output run concurrently, so that a process writing much before it reads its
//! stdin cannot deadlock the session. Stdin is read on a thread of its own: a blocking read of
//! a terminal cannot be cancelled, and a runtime's blocking pool would wait for it at exit.

mod terminal;

use std::io::Read;

use anyhow::Context;
use hivemind_client::exec::{read_frame, write_frame, ExecRequest, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::{ExecArgs, GlobalArgs};

/// Stdin chunks read ahead of the connection.
const STDIN_DEPTH: usize = 8;

pub(crate) async fn exec(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<()> {
    if args.tty {
        terminal::require_stdin_tty()?;
    }
    let client = crate::config::client(global)?;
    let request = ExecRequest {
        cmd: args.command.clone(),
        stdin: args.interactive,
        tty: args.tty,
        size: args.tty.then(terminal::size).flatten(),
    };
    let io = client
        .exec_session(&args.replica, &request)
        .await
        .with_context(|| {
            format!(
                "cannot run {:?} in {}",
                args.command.join(" "),
                args.replica
            )
        })?;
    // Raw mode only while the session runs, and only when this terminal's keys go to the
    // process; the guard is dropped (terminal restored) before any exit or error message.
    let code = {
        let _raw = if args.tty && args.interactive {
            Some(terminal::RawMode::enter()?)
        } else {
            None
        };
        session(io, args.interactive, args.tty).await?
    };
    std::process::exit(code)
}

/// Runs the session to its exit frame; returns the exit status.
async fn session(
    io: impl AsyncRead + AsyncWrite + Send,
    stdin: bool,
    tty: bool,
) -> anyhow::Result<i32> {
    let (mut reader, mut writer) = tokio::io::split(io);
    let input = send_input(&mut writer, stdin.then(read_stdin), tty);
    let output = receive_output(&mut reader);
    tokio::pin!(output);
    tokio::select! {
        code = &mut output => code,
        ended = input => match ended? {
            // Everything was sent; the process has the last word.
            InputEnd::Done => output.await,
            InputEnd::Signal(name) => anyhow::bail!(
                "interrupted by {name}: the session ended and the process is killed"
            ),
        },
    }
}

enum InputEnd {
    Done,
    /// A terminating signal arrived while the terminal is raw (see `send_input`).
    Signal(&'static str),
}

/// Sends stdin (then its end) and, with a terminal, its size changes. Returns when nothing is
/// left to send, or when a terminating signal arrives with `tty`: the process must not just
/// die then, or the terminal would stay raw.
async fn send_input<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut stdin: Option<mpsc::Receiver<Vec<u8>>>,
    tty: bool,
) -> anyhow::Result<InputEnd> {
    let mut winch = tty
        .then(|| signal(SignalKind::window_change()))
        .transpose()?;
    let mut stops = Vec::new();
    if tty {
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            stops.push((signal(kind)?, name));
        }
    }
    let stopped = async {
        if stops.is_empty() {
            return std::future::pending().await;
        }
        let waits = stops
            .iter_mut()
            .map(|(s, name)| Box::pin(async move { s.recv().await.map(|_| *name) }));
        futures::future::select_all(waits).await.0
    };
    tokio::pin!(stopped);
    loop {
        if stdin.is_none() && !tty {
            return Ok(InputEnd::Done);
        }
        let frame = tokio::select! {
            chunk = recv(&mut stdin), if stdin.is_some() => match chunk {
                Some(bytes) => Frame::Stdin(bytes),
                None => {
                    stdin = None;
                    Frame::StdinEof
                }
            },
            Some(()) = async { winch.as_mut()?.recv().await }, if winch.is_some() => {
                match terminal::size() {
                    Some(size) => Frame::Resize(size),
                    None => continue,
                }
            }
            name = &mut stopped => return Ok(InputEnd::Signal(name.unwrap_or("a signal"))),
        };
        write_frame(writer, &frame)
            .await
            .context("cannot send input to the exec session")?;
    }
}

async fn recv(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Writes the process's output here until its exit frame; returns the exit status.
async fn receive_output<R: AsyncRead + Unpin>(reader: &mut R) -> anyhow::Result<i32> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    loop {
        let frame = read_frame(reader).await.context("the exec session broke")?;
        match frame {
            Some(Frame::Stdout(bytes)) => {
                stdout.write_all(&bytes).await?;
                stdout.flush().await?;
            }
            Some(Frame::Stderr(bytes)) => {
                stderr.write_all(&bytes).await?;
                stderr.flush().await?;
            }
            Some(Frame::Exit(code)) => {
                stdout.flush().await?;
                return Ok(code);
            }
            Some(Frame::Error(message)) => anyhow::bail!(message),
            Some(other) => anyhow::bail!(
                "the server sent a {} frame, which only clients send: use a client of the \
                 server's version",
                other.channel_name()
            ),
            None => anyhow::bail!(
                "the exec session ended without an exit status (the server or agent went away)"
            ),
        }
    }
}

/// Reads stdin on a thread of its own; the channel closes at end of input (or a read error).
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(STDIN_DEPTH);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    rx
}
