//! Fixtures shared by the unit tests of the core functions (compiled for tests only).

use hivemind_types::{Meta, Replica};

/// A replica of `service` in `app` on `node`, as the controller would write it (default
/// namespace, default spec).
pub(crate) fn replica(id: &str, app: &str, service: &str, node: &str) -> Replica {
    Replica {
        id: id.into(),
        namespace: "default".into(),
        app: app.into(),
        service: service.into(),
        node: node.into(),
        spec: Default::default(),
        revision_hash: String::new(),
        meta: Meta::default(),
    }
}
