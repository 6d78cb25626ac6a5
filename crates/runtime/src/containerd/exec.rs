//! Exec: a further process in a running container (`hivemind exec`), with or without stdin and
//! a terminal.
//!
//! The process gets the container's own process spec (env, cwd, user, capabilities) with the
//! given args. Its stdio goes through FIFOs under the container's run dir: FIFOs, not files,
//! because exec I/O is streamed to a caller and not kept. containerd's shim opens the write ends
//! of stdout/stderr; each reader thread opens its read end (blocking until the shim does) and
//! reads until the shim closes it after the process exited. The agent opens the stdin FIFO
//! read-write before `Tasks.Exec`: the shim opens its read end non-blocking and would read an
//! immediate end-of-file if no writer existed yet. Closing stdin takes both the agent's end and
//! `Tasks.CloseIO`, because the shim keeps a write end of its own open.
//!
//! Every session runs in its own task, so that it is cleaned up even when the caller's future
//! is dropped: whatever fails, the readers are unblocked, the exec process is killed if it
//! still runs, deleted, and the FIFOs are removed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tracing::{debug, warn};

mod sweep;

use super::{not_found_ok, Containerd};
use crate::error::RuntimeError;
use crate::{ExecInput, ExecOutput, ExecSpec, TtySize};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// How long the output readers may lag behind the process's exit before they are cut off.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// How long a killed exec process may take to be reaped before it is deleted anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often a stdin write that cannot proceed (the process does not read) checks whether the
/// caller is still there.
const STDIN_STALL_CHECK: Duration = Duration::from_millis(250);
const SIGKILL: u32 = 9;

/// The FIFOs of one exec process.
struct Fifos {
    stdin: Option<PathBuf>,
    stdout: PathBuf,
    /// `None` with a terminal: it has one output stream.
    stderr: Option<PathBuf>,
}

impl Fifos {
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.stdin
            .iter()
            .chain(std::iter::once(&self.stdout))
            .chain(self.stderr.iter())
    }

    async fn remove(&self) {
        for path in self.paths() {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

impl Containerd {
    /// [`crate::ContainerRuntime::exec`]: a session without stdin or terminal whose
    /// input stays open until it ends, so that the process is never taken as abandoned.
    pub(super) async fn task_exec(
        &self,
        id: &str,
        args: &[String],
        output: mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        let (_keep_open, input) = mpsc::channel(1);
        let spec = ExecSpec {
            args: args.to_vec(),
            ..ExecSpec::default()
        };
        self.task_exec_session(id, spec, input, output).await
    }

    pub(super) async fn task_exec_session(
        &self,
        id: &str,
        spec: ExecSpec,
        input: mpsc::Receiver<ExecInput>,
        output: mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        if spec.args.is_empty() {
            return Err(RuntimeError::Exec {
                id: id.to_string(),
                command: String::new(),
                reason: "no command given".to_string(),
            });
        }
        let this = self.clone();
        let owned = id.to_string();
        let session = tokio::spawn(async move { this.session(&owned, spec, input, output).await });
        session
            .await
            .unwrap_or_else(|e| Err(protocol(id, &format!("exec session task failed: {e}"))))
    }

    async fn session(
        &self,
        id: &str,
        spec: ExecSpec,
        mut input: mpsc::Receiver<ExecInput>,
        output: mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        let container = self
            .container_get(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        let container_spec = container
            .spec
            .ok_or_else(|| protocol(id, "container has no spec"))?;
        let process = exec_process(&container_spec.value, &spec.args, spec.tty)
            .map_err(|reason| protocol(id, &reason))?;

        let exec_id = format!("exec-{:012x}", rand::random::<u64>() >> 16);
        let dir = self.run_dir(id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| RuntimeError::io("create run dir", &dir, e))?;
        let fifos = Fifos {
            stdin: spec.stdin.then(|| dir.join(format!("{exec_id}.stdin"))),
            stdout: dir.join(format!("{exec_id}.stdout")),
            stderr: spec
                .tty
                .is_none()
                .then(|| dir.join(format!("{exec_id}.stderr"))),
        };
        let stdin = match make_fifos(&fifos) {
            Ok(stdin) => stdin,
            Err(e) => {
                fifos.remove().await;
                return Err(e);
            }
        };
        let mut readers = vec![spawn_reader(
            fifos.stdout.clone(),
            output.clone(),
            ExecOutput::Stdout,
        )];
        if let Some(stderr) = &fifos.stderr {
            readers.push(spawn_reader(stderr.clone(), output, ExecOutput::Stderr));
        }
        let run = ExecRun {
            runtime: self,
            id,
            exec_id: &exec_id,
            command: spec.args.join(" "),
            tty: spec.tty,
        };
        let result = run.run(process, &fifos, stdin, &mut input).await;
        // The readers end when the shim closes the FIFOs; if it never opened them (the exec
        // failed early) they would block for ever, so they are released after a while.
        let drained = tokio::time::timeout(DRAIN_WAIT, async {
            for reader in &readers {
                while !reader.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .await;
        if drained.is_err() || result.is_err() {
            release(&fifos.stdout);
            if let Some(stderr) = &fifos.stderr {
                release(stderr);
            }
        }
        for reader in readers {
            let _ = reader.await;
        }
        self.exec_delete(id, &exec_id).await;
        fifos.remove().await;
        result
    }

    /// SIGKILLs an exec process; one already gone is fine, other failures are logged.
    async fn exec_kill(&self, id: &str, exec_id: &str) {
        let killed = self
            .tasks()
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal: SIGKILL,
                all: false,
            }))
            .await;
        if let Err(status) = not_found_ok(killed) {
            warn!(%status, exec = %exec_id, "cannot kill the exec process");
        }
    }

    /// Deletes an exec process (after its exit); one already gone is fine, other failures are
    /// logged.
    async fn exec_delete(&self, id: &str, exec_id: &str) {
        let deleted = self
            .tasks()
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
        if let Err(status) = not_found_ok(deleted) {
            warn!(%status, exec = %exec_id, "cannot delete the exec process");
        }
    }
}

/// Creates the FIFOs and opens the agent's end of stdin.
fn make_fifos(fifos: &Fifos) -> Result<Option<pipe::Sender>, RuntimeError> {
    for fifo in fifos.paths() {
        nix::unistd::mkfifo(
            fifo.as_path(),
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .map_err(|e| RuntimeError::io("create exec fifo", fifo.as_path(), e.into()))?;
    }
    let Some(path) = &fifos.stdin else {
        return Ok(None);
    };
    // Read-write: opening succeeds without a reader (the shim opens its end during Exec).
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map(Some)
        .map_err(|e| RuntimeError::io("open exec stdin fifo", path.as_path(), e))
}

/// One exec process from `Tasks.Exec` to its exit.
struct ExecRun<'a> {
    runtime: &'a Containerd,
    id: &'a str,
    exec_id: &'a str,
    command: String,
    tty: Option<TtySize>,
}

impl ExecRun<'_> {
    fn exec_error(&self, status: tonic::Status) -> RuntimeError {
        RuntimeError::Exec {
            id: self.id.to_string(),
            command: self.command.clone(),
            reason: status.message().to_string(),
        }
    }

    async fn run(
        &self,
        process: Vec<u8>,
        fifos: &Fifos,
        stdin: Option<pipe::Sender>,
        input: &mut mpsc::Receiver<ExecInput>,
    ) -> Result<i32, RuntimeError> {
        let (id, exec_id) = (self.id, self.exec_id);
        let path = |p: Option<&PathBuf>| p.map(|p| p.to_string_lossy().into_owned());
        let rt = self.runtime;
        rt.tasks()
            .exec(rt.request(ExecProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: path(fifos.stdin.as_ref()).unwrap_or_default(),
                stdout: path(Some(&fifos.stdout)).unwrap_or_default(),
                stderr: path(fifos.stderr.as_ref()).unwrap_or_default(),
                terminal: self.tty.is_some(),
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: process,
                }),
            }))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => RuntimeError::NotFound { id: id.to_string() },
                _ => self.exec_error(s),
            })?;
        rt.tasks()
            .start(rt.request(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| self.exec_error(s))?;
        debug!(exec = %exec_id, "exec started");
        if let Some(size) = self.tty {
            // The spec's consoleSize already sized the terminal; this covers runtimes that
            // ignore it for exec'd processes.
            self.resize(size).await;
        }
        let mut tasks = rt.tasks();
        let wait = tasks.wait(rt.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }));
        tokio::pin!(wait);
        tokio::select! {
            waited = &mut wait => {
                let waited = waited.map_err(|s| RuntimeError::grpc("wait exec", id, s))?;
                Ok(waited.into_inner().exit_status as i32)
            }
            () = self.pump_input(stdin, input) => {
                warn!(exec = %exec_id, "the exec session's caller went away: killing the process");
                rt.exec_kill(id, exec_id).await;
                // Deleting a process that has not been reaped yet fails.
                let _ = tokio::time::timeout(KILL_WAIT, &mut wait).await;
                Err(RuntimeError::Exec {
                    id: id.to_string(),
                    command: self.command.clone(),
                    reason: "the session ended before the process did, so it was killed"
                        .to_string(),
                })
            }
        }
    }

    /// Feeds `input` to the process; returns only when every sender is gone (the caller left).
    async fn pump_input(
        &self,
        mut stdin: Option<pipe::Sender>,
        input: &mut mpsc::Receiver<ExecInput>,
    ) {
        while let Some(item) = input.recv().await {
            match item {
                ExecInput::Stdin(bytes) => {
                    let Some(writer) = stdin.as_mut() else {
                        debug!("stdin bytes for an exec without stdin dropped");
                        continue;
                    };
                    match write_watching(writer, &bytes, input).await {
                        Ok(()) => {}
                        Err(Stall::CallerGone) => return,
                        Err(Stall::Io(error)) => {
                            debug!(%error, "exec stdin closed by the process");
                            stdin = None;
                            self.close_stdin().await;
                        }
                    }
                }
                ExecInput::CloseStdin => {
                    if stdin.take().is_some() {
                        self.close_stdin().await;
                    }
                }
                ExecInput::Resize(size) if self.tty.is_some() => self.resize(size).await,
                ExecInput::Resize(_) => {}
            }
        }
    }

    /// Closes the shim's write end of stdin (the agent's is already closed), so that the
    /// process reads end-of-file once the FIFO is drained.
    async fn close_stdin(&self) {
        let rt = self.runtime;
        let closed = rt
            .tasks()
            .close_io(rt.request(CloseIoRequest {
                container_id: self.id.to_string(),
                exec_id: self.exec_id.to_string(),
                stdin: true,
            }))
            .await;
        if let Err(status) = not_found_ok(closed) {
            warn!(%status, exec = %self.exec_id, "cannot close the exec process's stdin");
        }
    }

    async fn resize(&self, size: TtySize) {
        let rt = self.runtime;
        let resized = rt
            .tasks()
            .resize_pty(rt.request(ResizePtyRequest {
                container_id: self.id.to_string(),
                exec_id: self.exec_id.to_string(),
                width: size.cols.into(),
                height: size.rows.into(),
            }))
            .await;
        if let Err(status) = not_found_ok(resized) {
            debug!(%status, exec = %self.exec_id, "cannot resize the exec terminal");
        }
    }
}

enum Stall {
    CallerGone,
    Io(std::io::Error),
}

/// Writes `bytes` to stdin. A process that does not read its stdin makes the write wait for
/// ever; meanwhile the caller may leave, which must still end the session.
async fn write_watching(
    writer: &mut pipe::Sender,
    bytes: &[u8],
    input: &mpsc::Receiver<ExecInput>,
) -> Result<(), Stall> {
    let write = writer.write_all(bytes);
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => return written.map_err(Stall::Io),
            () = tokio::time::sleep(STDIN_STALL_CHECK) => {
                if input.is_closed() {
                    return Err(Stall::CallerGone);
                }
            }
        }
    }
}

/// The container's process spec (JSON in `spec`) with `args` instead of its own, with a
/// terminal of `tty`'s size or none.
fn exec_process(spec: &[u8], args: &[String], tty: Option<TtySize>) -> Result<Vec<u8>, String> {
    let spec: serde_json::Value =
        serde_json::from_slice(spec).map_err(|e| format!("container spec is not JSON: {e}"))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or("container spec has no process")?;
    let object = process
        .as_object_mut()
        .ok_or("container spec's process is not an object")?;
    object.insert("args".to_string(), serde_json::json!(args));
    object.insert(
        "terminal".to_string(),
        serde_json::Value::Bool(tty.is_some()),
    );
    match tty {
        Some(size) => {
            object.insert(
                "consoleSize".to_string(),
                serde_json::json!({"height": size.rows, "width": size.cols}),
            );
            // Like `docker exec -t`: programs need TERM to drive a terminal.
            let env = object.entry("env").or_insert_with(|| serde_json::json!([]));
            if let Some(env) = env.as_array_mut() {
                let has_term = env
                    .iter()
                    .any(|v| v.as_str().is_some_and(|v| v.starts_with("TERM=")));
                if !has_term {
                    env.push(serde_json::json!("TERM=xterm"));
                }
            }
        }
        None => {
            object.remove("consoleSize");
        }
    }
    serde_json::to_vec(&process).map_err(|e| e.to_string())
}

fn protocol(id: &str, reason: &str) -> RuntimeError {
    RuntimeError::Protocol {
        op: "exec",
        id: id.to_string(),
        reason: reason.to_string(),
    }
}

/// Reads one FIFO to its end on a blocking thread, sending what it reads.
fn spawn_reader(
    path: PathBuf,
    output: mpsc::Sender<ExecOutput>,
    wrap: fn(Vec<u8>) -> ExecOutput,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        // Blocks until a writer (the shim, or `release`) opens the other end.
        let mut fifo = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(error) => {
                warn!(%error, path = %path.display(), "cannot open exec fifo");
                return;
            }
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match fifo.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if output.blocking_send(wrap(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// Unblocks a reader still waiting in `open` (or reading): opening the write end completes its
/// open, closing it gives it end-of-file. Fails harmlessly when no reader is left.
fn release(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path);
}

#[cfg(test)]
mod tests {
    use super::{exec_process, TtySize};

    fn process(spec: &[u8], args: &[&str], tty: Option<TtySize>) -> serde_json::Value {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        serde_json::from_slice(&exec_process(spec, &args, tty).unwrap()).unwrap()
    }

    #[test]
    fn exec_process_keeps_env_and_cwd_and_replaces_args() {
        let spec = br#"{"process":{"terminal":true,"consoleSize":{"height":1,"width":1},"args":["sleep","1"],"env":["A=1"],"cwd":"/srv","user":{"uid":5,"gid":5}},"root":{"path":"rootfs"}}"#;
        let process = process(spec, &["ls", "-l"], None);
        assert_eq!(process["args"], serde_json::json!(["ls", "-l"]));
        assert_eq!(process["env"], serde_json::json!(["A=1"]));
        assert_eq!(process["cwd"], "/srv");
        assert_eq!(process["user"]["uid"], 5);
        assert_eq!(process["terminal"], false);
        assert!(process.get("consoleSize").is_none());
        assert!(process.get("root").is_none());
    }

    #[test]
    fn exec_process_with_a_terminal_is_sized_and_gets_a_term() {
        let spec = br#"{"process":{"args":["sleep","1"],"env":["A=1"]}}"#;
        let size = TtySize {
            cols: 100,
            rows: 30,
        };
        let process = process(spec, &["sh"], Some(size));
        assert_eq!(process["terminal"], true);
        assert_eq!(
            process["consoleSize"],
            serde_json::json!({"height": 30, "width": 100})
        );
        assert_eq!(process["env"], serde_json::json!(["A=1", "TERM=xterm"]));
        // A TERM of the image is kept.
        let spec = br#"{"process":{"args":["x"],"env":["TERM=vt100"]}}"#;
        let process = self::process(spec, &["sh"], Some(size));
        assert_eq!(process["env"], serde_json::json!(["TERM=vt100"]));
    }

    #[test]
    fn exec_process_refuses_a_spec_without_process() {
        assert!(exec_process(b"{}", &["ls".into()], None).is_err());
    }
}
