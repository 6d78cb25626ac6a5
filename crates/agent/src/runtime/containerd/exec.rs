//! Exec: a further process in a running container (`hivemind exec`), without stdin or TTY.
//!
//! The process gets the container's own process spec (env, cwd, user, capabilities) with the
//! given args. Its stdout and stderr go through two FIFOs under the container's run dir that the
//! agent reads: FIFOs, not files, because exec output is streamed to a caller and not kept.
//! containerd's shim opens the write ends; each reader thread opens its read end (blocking until
//! the shim does) and reads until the shim closes it after the process exited. Whatever fails,
//! the readers are unblocked, the exec process is deleted and the FIFOs are removed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, StartRequest, WaitRequest,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{not_found_ok, Containerd};
use crate::runtime::error::RuntimeError;
use crate::runtime::ExecOutput;

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// How long the output readers may lag behind the process's exit before they are cut off.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

impl Containerd {
    pub(super) async fn task_exec(
        &self,
        id: &str,
        args: &[String],
        output: mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        if args.is_empty() {
            return Err(RuntimeError::Exec {
                id: id.to_string(),
                command: String::new(),
                reason: "no command given".to_string(),
            });
        }
        let container = self
            .container_get(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        let spec = container
            .spec
            .ok_or_else(|| protocol(id, "container has no spec"))?;
        let process = exec_process(&spec.value, args).map_err(|reason| protocol(id, &reason))?;

        let exec_id = format!("exec-{:012x}", rand::random::<u64>() >> 16);
        let dir = self.run_dir(id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| RuntimeError::io("create run dir", &dir, e))?;
        let stdout = dir.join(format!("{exec_id}.stdout"));
        let stderr = dir.join(format!("{exec_id}.stderr"));
        for fifo in [&stdout, &stderr] {
            nix::unistd::mkfifo(
                fifo.as_path(),
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .map_err(|e| RuntimeError::io("create exec fifo", fifo.as_path(), e.into()))?;
        }
        let readers = [
            spawn_reader(stdout.clone(), output.clone(), ExecOutput::Stdout),
            spawn_reader(stderr.clone(), output, ExecOutput::Stderr),
        ];
        let command = args.join(" ");
        let result = self
            .exec_run(id, &exec_id, &command, process, &stdout, &stderr)
            .await;
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
            release(&stdout);
            release(&stderr);
        }
        for reader in readers {
            let _ = reader.await;
        }
        let deleted = self
            .tasks()
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.clone(),
            }))
            .await;
        if let Err(status) = not_found_ok(deleted) {
            warn!(%status, exec = %exec_id, "cannot delete the exec process");
        }
        let _ = tokio::fs::remove_file(&stdout).await;
        let _ = tokio::fs::remove_file(&stderr).await;
        result
    }

    async fn exec_run(
        &self,
        id: &str,
        exec_id: &str,
        command: &str,
        process: Vec<u8>,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<i32, RuntimeError> {
        let exec_error = |status: tonic::Status| RuntimeError::Exec {
            id: id.to_string(),
            command: command.to_string(),
            reason: status.message().to_string(),
        };
        self.tasks()
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: String::new(),
                stdout: stdout.to_string_lossy().into_owned(),
                stderr: stderr.to_string_lossy().into_owned(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: process,
                }),
            }))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => RuntimeError::NotFound { id: id.to_string() },
                _ => exec_error(s),
            })?;
        let started = self
            .tasks()
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
        started.map_err(exec_error)?;
        debug!(exec = %exec_id, "exec started");
        let waited = self
            .tasks()
            .wait(self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| RuntimeError::grpc("wait exec", id, s))?;
        Ok(waited.into_inner().exit_status as i32)
    }
}

/// The container's process spec (JSON in `spec`) with `args` instead of its own, no terminal.
fn exec_process(spec: &[u8], args: &[String]) -> Result<Vec<u8>, String> {
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
    object.insert("terminal".to_string(), serde_json::Value::Bool(false));
    object.remove("consoleSize");
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
    use super::exec_process;

    #[test]
    fn exec_process_keeps_env_and_cwd_and_replaces_args() {
        let spec = br#"{"process":{"terminal":true,"args":["sleep","1"],"env":["A=1"],"cwd":"/srv","user":{"uid":5,"gid":5}},"root":{"path":"rootfs"}}"#;
        let process: serde_json::Value =
            serde_json::from_slice(&exec_process(spec, &["ls".into(), "-l".into()]).unwrap())
                .unwrap();
        assert_eq!(process["args"], serde_json::json!(["ls", "-l"]));
        assert_eq!(process["env"], serde_json::json!(["A=1"]));
        assert_eq!(process["cwd"], "/srv");
        assert_eq!(process["user"]["uid"], 5);
        assert_eq!(process["terminal"], false);
        assert!(process.get("root").is_none());
    }

    #[test]
    fn exec_process_refuses_a_spec_without_process() {
        assert!(exec_process(b"{}", &["ls".into()]).is_err());
    }
}
