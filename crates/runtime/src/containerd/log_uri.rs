//! The log URI a task is created with: the `binary://` URI that makes containerd's shim run
//! `hivemind log-driver` with the replica's rotation and log directory. It reads the rotation
//! labels written at create; it does not start, read or rotate anything itself.

use std::collections::HashMap;

use crate::error::RuntimeError;
use crate::{labels, RuntimeConfig};
use hivemind_logs::files::{uri_escape, DriverConfig};

/// The `binary://` URI that makes the shim run the log driver for this task:
/// `binary:///DRIVER?log-driver=MAX_SIZE:MAX_FILES:DIR`. The shim runs it as
/// `DRIVER log-driver VALUE`, which is the `hivemind log-driver` subcommand; exactly one query
/// pair, because the shim passes several in random order. The rotation is the node's unless
/// the container carries the service's own (labels set at create).
pub(super) async fn log_driver_uri(
    config: &RuntimeConfig,
    id: &str,
    labels: &HashMap<String, String>,
) -> Result<String, RuntimeError> {
    let mut rotation = config.log_rotation;
    if let Some(size) = labels
        .get(labels::LOG_MAX_SIZE)
        .and_then(|v| v.parse().ok())
    {
        rotation.max_size = size;
    }
    if let Some(files) = labels
        .get(labels::LOG_MAX_FILES)
        .and_then(|v| v.parse().ok())
    {
        rotation.max_files = files;
    }
    let dir = config.replica_log_dir(id);
    // The driver creates it too; doing it here turns an unwritable log dir into a clear error
    // rather than a task whose output is dropped.
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| RuntimeError::io("create log dir", &dir, e))?;
    if !config.log_driver.is_absolute() {
        return Err(RuntimeError::io(
            "find the log driver",
            &config.log_driver,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the log driver path must be absolute",
            ),
        ));
    }
    let arg = DriverConfig { dir, rotation }.to_arg();
    Ok(format!(
        "binary://{}?log-driver={}",
        uri_escape(&config.log_driver.to_string_lossy()),
        uri_escape(&arg)
    ))
}
