//! Exec vocabulary shared by the runtime on the node and the wire format of `hivemind-client`
//! (see `hivemind_client::exec`).

use serde::{Deserialize, Serialize};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub cols: u16,
    pub rows: u16,
}
