//! The secret and config values in a node's assignment: those its replicas mount, opened, and
//! only for the node itself.
//!
//! Values ride with the replicas that need them: a full answer carries those of every replica
//! of the node, a delta answer those of the replicas it carries (added or changed), and
//! `Assignment::apply` keeps the previous ones that a remaining replica still mounts. A value
//! never changes under an unchanged replica: an app's own secret that changes changes the
//! digest in the template, so the replicas that mount it are replaced (and come with the new
//! value); cluster ones cannot change in place.
//!
//! The admin may read any node's assignment, but gets no values: the API never returns one.

use std::collections::BTreeSet;

use base64::Engine as _;
use hivemind_store::Store;
use hivemind_types::secret::{mounts_of, FileValue, StoredFile};
use tracing::warn;

use crate::error::ApiError;
use crate::principal::Principal;
use crate::secrets::{store_kind, SecretsKey};

/// Fills `assignment.files` with the values its replicas mount, when `principal` is the node
/// the assignment is for.
pub(crate) async fn attach(
    store: &Store,
    key: &SecretsKey,
    principal: Option<&Principal>,
    assignment: &mut super::AssignmentAnswer,
) -> Result<(), ApiError> {
    assignment.files.clear();
    if principal != Some(&Principal::Node(assignment.node.clone())) {
        return Ok(());
    }
    let wanted: BTreeSet<_> = assignment
        .replicas
        .iter()
        .flat_map(|r| mounts_of(&r.spec).map(|(kind, m)| (kind, m.source.clone())))
        .collect();
    for (kind, object_key) in wanted {
        let Some(stored) = store
            .get::<StoredFile>(store_kind(kind), &object_key)
            .await?
        else {
            // Deleted since the replica was written (its app is going): the replica cannot
            // start without it, and the agent reports that.
            continue;
        };
        match key.value_of(kind, &object_key, &stored) {
            Ok(plain) => assignment.files.push(FileValue {
                kind,
                key: object_key,
                digest: stored.digest,
                data: base64::engine::general_purpose::STANDARD.encode(plain),
            }),
            Err(error) => warn!(%error, "a stored value cannot be delivered"),
        }
    }
    Ok(())
}
