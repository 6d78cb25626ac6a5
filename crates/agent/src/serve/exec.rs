//! `POST /v1/replicas/{id}/exec`: a command run in a replica's container through containerd's
//! Tasks.Exec, its output streamed back as newline-delimited [`ExecFrame`]s.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hivemind_client::exec::{ExecFrame, ExecRequest};
use tokio::sync::mpsc;

use super::{error, error_chain, AppState};
use crate::runtime::{ContainerRuntime, ExecOutput, TaskState};

pub(crate) async fn replica_exec<R: ContainerRuntime>(
    State(state): State<Arc<AppState<R>>>,
    Path(id): Path<String>,
    Json(request): Json<ExecRequest>,
) -> Response {
    if request.cmd.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "cmd: no command given",
            "name the command: hivemind exec REPLICA -- CMD ARGS...",
        );
    }
    let running = match state.runtime.list().await {
        Ok(list) => list
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| matches!(c.task, Some(TaskState::Running { .. }))),
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &format!("cannot list containers: {e}"),
                "check that containerd runs on the node",
            )
        }
    };
    match running {
        None => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("replica {id} has no container on this node"),
                "check the replica id with `hivemind ps`",
            )
        }
        Some(false) => {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                &format!("replica {id} is not running"),
                "wait until `hivemind ps` shows it running",
            )
        }
        Some(true) => {}
    }
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(async move {
        let (out_tx, mut out_rx) = mpsc::channel::<ExecOutput>(64);
        let exec = state.runtime.exec(&id, &request.cmd, out_tx);
        tokio::pin!(exec);
        let mut result = None;
        // Output is forwarded while the process runs; the last frames come after `exec`
        // returned, which it does only once the output readers are done.
        loop {
            tokio::select! {
                r = &mut exec, if result.is_none() => result = Some(r),
                chunk = out_rx.recv() => match chunk {
                    Some(chunk) => {
                        let frame = match chunk {
                            ExecOutput::Stdout(b) => ExecFrame::Stdout(String::from_utf8_lossy(&b).into_owned()),
                            ExecOutput::Stderr(b) => ExecFrame::Stderr(String::from_utf8_lossy(&b).into_owned()),
                        };
                        if tx.send(Ok(frame.encode())).await.is_err() {
                            // The caller went away; let the process finish on its own.
                            if result.is_none() {
                                let _ = (&mut exec).await;
                            }
                            return;
                        }
                    }
                    None => {
                        if result.is_none() {
                            result = Some((&mut exec).await);
                        }
                        break;
                    }
                },
            }
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
