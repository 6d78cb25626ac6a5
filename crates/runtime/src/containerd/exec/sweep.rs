//! Exec processes a previous agent process left running: it died mid-session, so nobody
//! feeds, drains or deletes them. Only their FIFOs in the run directories say which they are.

use std::path::PathBuf;

use containerd_client::services::v1::WaitRequest;
use tracing::warn;

use super::{Containerd, KILL_WAIT};
use crate::error::RuntimeError;

impl Containerd {
    /// [`crate::ContainerRuntime::exec_sweep`]: every exec FIFO in the run
    /// directories names an exec process (`{exec_id}.stdout` in `{run_dir}/{container}/`)
    /// whose session is gone, as a session removes its FIFOs when it ends. Exec processes
    /// started by others (`ctr tasks exec`) have no FIFOs there and are never touched.
    pub(in crate::containerd) async fn task_exec_sweep(&self) -> Result<usize, RuntimeError> {
        let root = &self.config().run_dir;
        let mut dirs = match tokio::fs::read_dir(root).await {
            Ok(dirs) => dirs,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(RuntimeError::io("read run dir", root, e)),
        };
        let mut swept = 0;
        while let Ok(Some(dir)) = dirs.next_entry().await {
            let id = dir.file_name().to_string_lossy().into_owned();
            let mut orphans: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
            let Ok(mut files) = tokio::fs::read_dir(dir.path()).await else {
                continue;
            };
            while let Ok(Some(file)) = files.next_entry().await {
                if let Some(exec_id) = exec_fifo_owner(&file.file_name().to_string_lossy()) {
                    orphans
                        .entry(exec_id.to_string())
                        .or_default()
                        .push(file.path());
                }
            }
            for (exec_id, fifos) in orphans {
                warn!(container = %id, exec = %exec_id, "killing an exec process left by a previous agent");
                self.reap_exec(&id, &exec_id).await;
                for fifo in fifos {
                    let _ = tokio::fs::remove_file(fifo).await;
                }
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Kills an exec process, waits a little for it to be reaped, and deletes it; what is
    /// already gone is fine.
    async fn reap_exec(&self, id: &str, exec_id: &str) {
        self.exec_kill(id, exec_id).await;
        let mut tasks = self.tasks();
        let waited = tasks.wait(self.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        }));
        let _ = tokio::time::timeout(KILL_WAIT, waited).await;
        self.exec_delete(id, exec_id).await;
    }
}

/// The exec id of an exec FIFO's file name (`exec-….stdin|stdout|stderr`).
fn exec_fifo_owner(name: &str) -> Option<&str> {
    let (stem, stream) = name.rsplit_once('.')?;
    (stem.starts_with("exec-") && matches!(stream, "stdin" | "stdout" | "stderr")).then_some(stem)
}

#[cfg(test)]
mod tests {
    use super::exec_fifo_owner;

    #[test]
    fn exec_fifos_name_their_exec_process() {
        assert_eq!(
            exec_fifo_owner("exec-0123abcd.stdout"),
            Some("exec-0123abcd")
        );
        assert_eq!(
            exec_fifo_owner("exec-0123abcd.stdin"),
            Some("exec-0123abcd")
        );
        assert_eq!(exec_fifo_owner("hosts"), None);
        assert_eq!(exec_fifo_owner("exec-1.log"), None);
        assert_eq!(exec_fifo_owner("resolv.conf"), None);
    }
}
