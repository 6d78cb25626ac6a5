//! The deploy step for secrets and configs: an app's own ones (from its Compose file) are
//! written in the deploy's transaction, those it no longer defines are deleted, and every
//! service's mounts get their store key and the digest of the value, which is part of the
//! container template: a changed value replaces the replicas that mount it.

use std::collections::BTreeMap;

use base64::Engine as _;
use hivemind_client::wire::{DeployRequest, FileValues};
use hivemind_store::{Expect, Op, Store};
use hivemind_types::compose::{ComposeApp, FileDef, FileSource};
use hivemind_types::secret::{file_key, FileKind, StoredFile};

use super::{store_kind, SecretsKey, MAX_VALUE_BYTES};
use crate::error::ApiError;

/// Writes and deletes the app's own secrets and configs (the ops join the deploy's
/// transaction) and fills in the services' mounts. `key` is `None` for callers without the
/// server's secrets key, which may deploy configs but no secrets.
pub(crate) async fn prepare(
    store: &Store,
    key: Option<&SecretsKey>,
    namespace: &str,
    app: &str,
    parsed: &mut ComposeApp,
    req: &DeployRequest,
) -> Result<Vec<Op>, ApiError> {
    let mut ops = Vec::new();
    let mut digests = BTreeMap::new();
    for (kind, defs, values) in [
        (FileKind::Secret, &parsed.secrets, &req.secrets),
        (FileKind::Config, &parsed.configs, &req.configs),
    ] {
        let written =
            prepare_kind(store, key, namespace, app, kind, defs, values, &mut ops).await?;
        digests.extend(written.into_iter().map(|(k, d)| ((kind, k), d)));
    }
    for (_, spec) in &mut parsed.services {
        for (kind, mounts) in [
            (FileKind::Secret, &mut spec.secrets),
            (FileKind::Config, &mut spec.configs),
        ] {
            for m in mounts.iter_mut() {
                let scope = (!m.external).then_some(app);
                m.source = file_key(namespace, scope, &m.source);
                // The reader refuses mounts of undefined names, so every key has a digest.
                m.digest = digests
                    .get(&(kind, m.source.clone()))
                    .cloned()
                    .unwrap_or_default();
            }
        }
    }
    Ok(ops)
}

/// One kind's definitions: the digest of each by store key.
#[allow(clippy::too_many_arguments)]
async fn prepare_kind(
    store: &Store,
    key: Option<&SecretsKey>,
    namespace: &str,
    app: &str,
    kind: FileKind,
    defs: &BTreeMap<String, FileDef>,
    values: &FileValues,
    ops: &mut Vec<Op>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let section = match kind {
        FileKind::Secret => "secrets",
        FileKind::Config => "configs",
    };
    let skind = store_kind(kind);
    let prefix = format!("{namespace}/{app}/");
    let existing: BTreeMap<String, StoredFile> = store
        .list::<StoredFile>(skind, &prefix)
        .await?
        .into_iter()
        .map(|f| (file_key(namespace, Some(app), &f.name), f))
        .collect();
    let mut digests = BTreeMap::new();
    let mut kept = Vec::new();
    for (def_key, def) in defs {
        let field = format!("{section}.{def_key}");
        let plain: Vec<u8> = match &def.source {
            FileSource::External => {
                let object_key = file_key(namespace, None, &def.name);
                let Some(found) = store.get::<StoredFile>(skind, &object_key).await? else {
                    return Err(ApiError::invalid(
                        &field,
                        format!("external {} {} does not exist", kind.as_str(), def.name),
                        format!(
                            "create it first with `hivemind {} create {} -f FILE`",
                            kind.as_str(),
                            def.name
                        ),
                    ));
                };
                digests.insert(object_key, found.digest);
                continue;
            }
            FileSource::Content(text) => text.as_bytes().to_vec(),
            FileSource::File(_) | FileSource::Environment(_) => {
                let Some(encoded) = values.0.get(def_key) else {
                    return Err(ApiError::invalid(
                        &field,
                        format!(
                            "the value of {} {def_key} was not sent with the request",
                            kind.as_str()
                        ),
                        "deploy with `hivemind deploy`, which reads `file:` relative to the Compose \
                         file and `environment:` from its environment, or send the value base64 in \
                         the request's `secrets`/`configs` by the same key",
                    ));
                };
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| {
                        ApiError::bad_request(
                            &field,
                            format!("the value sent for {field} is not base64"),
                            "send the value base64-encoded (standard alphabet, padded)",
                        )
                    })?
            }
        };
        if plain.len() > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(
                &field,
                format!(
                    "the {} is {} bytes, more than the {MAX_VALUE_BYTES} one may hold",
                    kind.as_str(),
                    plain.len()
                ),
                "keep large files in the image or a volume; secrets and configs travel in every node's assignment",
            ));
        }
        let object_key = file_key(namespace, Some(app), &def.name);
        let digest = match kind {
            FileKind::Secret => {
                let Some(key) = key else {
                    return Err(ApiError::invalid(
                        &field,
                        "this server was started without a secrets key",
                        "deploy secrets through a server started with `hivemind up` or `hivemind server`",
                    ));
                };
                key.digest(&plain)
            }
            FileKind::Config => SecretsKey::config_digest(&plain),
        };
        let old = existing.get(&object_key);
        // An unchanged value is not written again: sealing anew would change the stored bytes
        // and the revision for nothing.
        if old.is_none_or(|o| o.digest != digest) {
            let seal_key = key.cloned().unwrap_or_default();
            let stored = seal_key.stored(
                kind,
                &object_key,
                &def.name,
                Some(format!("{namespace}/{app}")),
                &plain,
            );
            let expect = old.map_or(Expect::Absent, |o| Expect::Revision(o.meta.revision));
            ops.push(Op::put(skind, object_key.clone(), &stored, expect));
        }
        kept.push(object_key.clone());
        digests.insert(object_key, digest);
    }
    for (object_key, old) in &existing {
        if !kept.contains(object_key) {
            ops.push(Op::delete(
                skind,
                object_key.clone(),
                Expect::Revision(old.meta.revision),
            ));
        }
    }
    Ok(digests)
}

/// The deletes of an app's own secrets and configs, for `hivemind rm APP`.
pub(crate) async fn delete_ops(
    store: &Store,
    namespace: &str,
    app: &str,
) -> Result<Vec<Op>, ApiError> {
    let mut ops = Vec::new();
    for kind in [FileKind::Secret, FileKind::Config] {
        let skind = store_kind(kind);
        for f in store
            .list::<StoredFile>(skind, &format!("{namespace}/{app}/"))
            .await?
        {
            ops.push(Op::delete(
                skind,
                file_key(namespace, Some(app), &f.name),
                Expect::Revision(f.meta.revision),
            ));
        }
    }
    Ok(ops)
}
