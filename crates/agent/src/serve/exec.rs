//! `POST /v1/replicas/{id}/exec`: a command run in a replica's container through containerd's
//! Tasks.Exec, in one of two forms (see `hivemind_client::exec`):
//!
//! - plain: output streamed back as newline-delimited [`ExecFrame`]s, no stdin, no TTY;
//! - upgraded (`Upgrade: hivemind-exec.v1`): `101 Switching Protocols`, then binary [`Frame`]s
//!   both ways through [`ContainerRuntime::exec_session`], with stdin and a terminal.
//!
//! In a session the client's connection is the session's life: when it ends before the
//! process did, or sends a frame that is not well-formed client input, the input channel is
//! dropped and the runtime kills and deletes the process. Both directions go through bounded
//! channels, so a slow peer slows the process down instead of filling memory.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hivemind_client::exec::{
    read_frame, wants_upgrade, write_frame, ExecFrame, ExecRequest, Frame, TtySize,
    UPGRADE_PROTOCOL,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::{error, error_chain, AppState, ReplicaId};
use hivemind_runtime::{ContainerRuntime, ExecInput, ExecOutput, ExecSpec, TaskState};

/// The largest request body: a command line, not a payload.
const BODY_LIMIT: usize = 256 * 1024;
/// A terminal's size when the client did not say (the classic VT100's).
const DEFAULT_SIZE: TtySize = TtySize { cols: 80, rows: 24 };
/// Frames buffered per direction between the connection and the runtime.
const CHANNEL_DEPTH: usize = 16;

pub(crate) async fn replica_exec<R: ContainerRuntime>(
    State(state): State<Arc<AppState<R>>>,
    ReplicaId(id): ReplicaId,
    mut request: Request,
) -> Response {
    let on_upgrade = wants_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let body = match axum::body::to_bytes(request.into_body(), BODY_LIMIT).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("body: cannot read the request: {e}"),
                "send a JSON body of at most 256 KiB",
            )
        }
    };
    let request: ExecRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("body: not an exec request: {e}"),
                r#"send {"cmd": ["CMD", "ARGS..."], "stdin": false, "tty": false}"#,
            )
        }
    };
    if let Some(refusal) = refuse(&request, on_upgrade.is_some()) {
        return refusal;
    }
    if let Some(refusal) = refuse_unless_running(&state, &id).await {
        return refusal;
    }
    let Some(on_upgrade) = on_upgrade else {
        return plain(state, id, request.cmd);
    };
    let span = tracing::info_span!("exec_session", replica = %id);
    tokio::spawn(session(state, id, request, on_upgrade).instrument(span));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A 400 for a request that cannot run as asked.
fn refuse(request: &ExecRequest, upgraded: bool) -> Option<Response> {
    let bad = |message: &str, fix: &str| {
        Some(error(StatusCode::BAD_REQUEST, "bad_request", message, fix))
    };
    if request.cmd.is_empty() {
        return bad(
            "cmd: no command given",
            "name the command: hivemind exec REPLICA -- CMD ARGS...",
        );
    }
    if request.is_interactive() && !upgraded {
        let field = if request.stdin { "stdin" } else { "tty" };
        return bad(
            &format!("{field}: needs an upgraded exec session"),
            &format!("send `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}` (hivemind exec -i/-t does)"),
        );
    }
    if request.size.is_some_and(|s| s.cols == 0 || s.rows == 0) {
        return bad(
            "size: cols and rows must be at least 1",
            "send the terminal's size, or leave size out for 80x24",
        );
    }
    None
}

/// A 404 when the replica has no container here, a 409 when its task does not run.
async fn refuse_unless_running<R: ContainerRuntime>(
    state: &AppState<R>,
    id: &str,
) -> Option<Response> {
    let running = match state.runtime.list().await {
        Ok(list) => list
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| matches!(c.task, Some(TaskState::Running { .. }))),
        Err(e) => {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &format!("cannot list containers: {e}"),
                "check that containerd runs on the node",
            ))
        }
    };
    match running {
        None => Some(error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("replica {id} has no container on this node"),
            "check the replica id with `hivemind ps`",
        )),
        Some(false) => Some(error(
            StatusCode::CONFLICT,
            "conflict",
            &format!("replica {id} is not running"),
            "wait until `hivemind ps` shows it running",
        )),
        Some(true) => None,
    }
}

/// The plain form: NDJSON frames, output as text. It takes no input, but follows the rule of
/// sessions: when the caller goes away (the response body is dropped), the process is killed,
/// rather than left blocked on output nobody reads.
fn plain<R: ContainerRuntime>(state: Arc<AppState<R>>, id: String, cmd: Vec<String>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(async move {
        let (out_tx, mut out_rx) = mpsc::channel::<ExecOutput>(64);
        // Held while the caller listens: dropping it ends the process (see `exec_session`).
        let (caller, input) = mpsc::channel(1);
        let mut caller = Some(caller);
        let spec = ExecSpec {
            args: cmd,
            ..ExecSpec::default()
        };
        let exec = state.runtime.exec_session(&id, spec, input, out_tx);
        tokio::pin!(exec);
        let (mut result, mut output_done) = (None, false);
        // Output is forwarded while the process runs; `exec` returns only once the output
        // readers are done, but what they sent may still be queued.
        while result.is_none() || !output_done {
            tokio::select! {
                r = &mut exec, if result.is_none() => result = Some(r),
                () = tx.closed(), if caller.is_some() => caller = None,
                chunk = out_rx.recv(), if !output_done => match chunk {
                    Some(chunk) if caller.is_some() => {
                        let frame = match chunk {
                            ExecOutput::Stdout(b) => ExecFrame::Stdout(String::from_utf8_lossy(&b).into_owned()),
                            ExecOutput::Stderr(b) => ExecFrame::Stderr(String::from_utf8_lossy(&b).into_owned()),
                        };
                        if tx.send(Ok(frame.encode())).await.is_err() {
                            caller = None;
                        }
                    }
                    Some(_) => {}
                    None => output_done = true,
                },
            }
        }
        if caller.is_none() {
            debug!("plain exec caller went away");
            return;
        }
        let last = match result {
            Some(Ok(code)) => ExecFrame::Exit(code),
            Some(Err(e)) => ExecFrame::Error(error_chain(&e)),
            None => ExecFrame::Error("exec ended without a result".to_string()),
        };
        let _ = tx.send(Ok(last.encode())).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// The upgraded form: runs the session over the switched connection until the process ended
/// and the last frame was written.
async fn session<R: ContainerRuntime>(
    state: Arc<AppState<R>>,
    id: String,
    request: ExecRequest,
    on_upgrade: hyper::upgrade::OnUpgrade,
) {
    let io = match on_upgrade.await {
        Ok(upgraded) => TokioIo::new(upgraded),
        Err(error) => {
            warn!(%error, "exec connection was not upgraded");
            return;
        }
    };
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = tokio::io::split(io);
    let (input_tx, input_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (output_tx, mut output_rx) = mpsc::channel(CHANNEL_DEPTH);
    let spec = ExecSpec {
        args: request.cmd,
        stdin: request.stdin,
        tty: request.tty.then(|| request.size.unwrap_or(DEFAULT_SIZE)),
    };
    info!(args = ?spec.args, stdin = spec.stdin, tty = spec.tty.is_some(), "exec session");
    let exec = state.runtime.exec_session(&id, spec, input_rx, output_tx);
    tokio::pin!(exec);
    let input = read_input(&mut reader, input_tx);
    tokio::pin!(input);
    let (mut result, mut output_done, mut input_done) = (None, false, false);
    let mut broken = None;
    let mut client_gone = false;
    while result.is_none() || !output_done {
        tokio::select! {
            r = &mut exec, if result.is_none() => result = Some(r),
            ended = &mut input, if !input_done => {
                input_done = true;
                if let Err(e) = ended {
                    warn!(error = %e, "malformed input from the exec client: ending the session");
                    broken = Some(e);
                }
            }
            chunk = output_rx.recv(), if !output_done => match chunk {
                // Once the client is gone, output is still drained so that the runtime's
                // readers never block; it goes nowhere.
                Some(chunk) if !client_gone => {
                    let frame = match chunk {
                        ExecOutput::Stdout(b) => Frame::Stdout(b),
                        ExecOutput::Stderr(b) => Frame::Stderr(b),
                    };
                    if let Err(error) = write_frame(&mut writer, &frame).await {
                        debug!(%error, "exec client gone");
                        client_gone = true;
                    }
                }
                Some(_) => {}
                None => output_done = true,
            },
        }
    }
    let last = match (broken, result) {
        (Some(e), _) => Frame::Error(format!(
            "malformed frame from the client ({e}); the process was killed"
        )),
        (None, Some(Ok(code))) => Frame::Exit(code),
        (None, Some(Err(e))) => Frame::Error(error_chain(&e)),
        (None, None) => Frame::Error("exec ended without a result".to_string()),
    };
    info!(elapsed = ?started.elapsed(), end = ?last, "exec session ended");
    if !client_gone && write_frame(&mut writer, &last).await.is_ok() {
        let _ = writer.shutdown().await;
    }
}

/// Turns the client's frames into session input. Returns `Ok` when the client closed its side
/// (or the session no longer takes input), `Err` naming what was wrong with a frame. Either
/// way `input` is dropped on return, which ends a process still running.
async fn read_input<R: AsyncRead + Unpin>(
    reader: &mut R,
    input: mpsc::Sender<ExecInput>,
) -> Result<(), String> {
    loop {
        let item = match read_frame(reader).await {
            Ok(Some(Frame::Stdin(bytes))) => ExecInput::Stdin(bytes),
            Ok(Some(Frame::StdinEof)) => ExecInput::CloseStdin,
            Ok(Some(Frame::Resize(size))) => ExecInput::Resize(size),
            Ok(Some(other)) => {
                return Err(format!(
                    "a {} frame cannot come from the client",
                    other.channel_name()
                ))
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if input.send(item).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn input_of(bytes: Vec<u8>) -> (Result<(), String>, Vec<ExecInput>) {
        let (tx, mut rx) = mpsc::channel(16);
        let ended = read_input(&mut bytes.as_slice(), tx).await;
        let mut items = Vec::new();
        while let Some(item) = rx.recv().await {
            items.push(item);
        }
        (ended, items)
    }

    #[tokio::test]
    async fn client_frames_become_session_input() {
        let mut bytes = Frame::Stdin(b"ls\n".to_vec()).encode();
        bytes.extend(Frame::Resize(TtySize { cols: 9, rows: 3 }).encode());
        bytes.extend(Frame::StdinEof.encode());
        let (ended, items) = input_of(bytes).await;
        assert_eq!(ended, Ok(()));
        assert_eq!(
            items,
            [
                ExecInput::Stdin(b"ls\n".to_vec()),
                ExecInput::Resize(TtySize { cols: 9, rows: 3 }),
                ExecInput::CloseStdin
            ]
        );
    }

    #[tokio::test]
    async fn server_frames_or_garbage_from_the_client_end_the_input() {
        let (ended, _) = input_of(Frame::Exit(0).encode()).await;
        assert_eq!(
            ended.unwrap_err(),
            "a exit frame cannot come from the client"
        );
        let mut bytes = Frame::Stdin(b"a".to_vec()).encode();
        bytes.extend([42, 0, 0, 0, 0]);
        let (ended, items) = input_of(bytes).await;
        assert!(ended.unwrap_err().contains("unknown frame channel 42"));
        assert_eq!(items, [ExecInput::Stdin(b"a".to_vec())]);
    }

    #[test]
    fn requests_that_cannot_run_are_refused_naming_the_field() {
        let status = |r: Option<Response>| r.map(|r| r.status());
        let mut request = ExecRequest::command(Vec::new());
        assert_eq!(
            status(refuse(&request, true)),
            Some(StatusCode::BAD_REQUEST)
        );
        request.cmd = vec!["sh".into()];
        assert_eq!(status(refuse(&request, false)), None);
        request.tty = true;
        assert_eq!(
            status(refuse(&request, false)),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status(refuse(&request, true)), None);
        request.size = Some(TtySize { cols: 0, rows: 5 });
        assert_eq!(
            status(refuse(&request, true)),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
