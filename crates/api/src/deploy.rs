//! Deploying and deleting apps: a Compose file in, `App` and `Service` objects out, in one store
//! transaction.
//!
//! This module decides *what the desired state is*; it never writes replicas, which is the
//! service controller's job: it creates them, and deletes those whose service disappeared.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_client::wire::{DeployRequest, DeployResponse};
use hivemind_store::{Expect, Op, Store};
use hivemind_types::compose::{self, ComposeError, ComposeFile, ComposeInput, ProjectInput};
use hivemind_types::{App, Kind, Meta, Service};

use crate::error::ApiError;
use crate::extract::check_label;

/// What a deploy did.
#[derive(Debug)]
pub struct DeployOutcome {
    pub response: DeployResponse,
    /// The app did not exist before (201 rather than 200).
    pub created: bool,
}

/// Creates or updates the app described by `req` in `namespace` (the query's; the body's
/// `namespace`, when set, wins). New services get their VIP from the allocator (`control`), a
/// moment after they are written; a service keeps its VIP for life.
pub async fn deploy(
    store: &Store,
    namespace: &str,
    req: &DeployRequest,
) -> Result<DeployOutcome, ApiError> {
    deploy_with(store, namespace, req, None).await
}

/// [`deploy`] with the server's secrets key, which the app's own secrets are sealed with; without
/// one, a file with secrets is refused.
pub async fn deploy_with(
    store: &Store,
    namespace: &str,
    req: &DeployRequest,
    secrets_key: Option<&crate::secrets::SecretsKey>,
) -> Result<DeployOutcome, ApiError> {
    let namespace = match &req.namespace {
        Some(ns) => {
            check_label("namespace", ns, true)?;
            ns.as_str()
        }
        None => namespace,
    };
    let file_name = req.file_name.as_deref().unwrap_or("compose.yaml");
    let mut parsed = read_model(file_name, req)?;
    let warnings = compose::warnings(&parsed);
    if req.strict && !warnings.is_empty() {
        return Err(strict_error(file_name, &warnings));
    }

    let name = match (&req.name, &parsed.name) {
        // `--app` and the directory's name follow Compose's project-name rules, like the
        // file's `name:` (which the parser already mapped): `my_app` is app `my-app`.
        (Some(name), _) => compose::app_dns_name(name).unwrap_or_else(|| name.clone()),
        (None, Some(name)) => name.clone(),
        (None, None) => {
            return Err(ApiError::invalid(
                "name",
                format!("{file_name} has no top-level `name:` and the request names no app"),
                "pass --app NAME, or add `name: NAME` at the top of the file",
            ))
        }
    };
    check_label("name", &name, true)?;
    crate::volumes::prepare_deploy(store, namespace, &name, &mut parsed).await?;
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (service, _) in &parsed.services {
        // The parser checks these too; the store keys depend on it, so check again here.
        check_label(&format!("services.{service}"), service, true)?;
        names.insert(service.clone());
    }

    let app_key = format!("{namespace}/{name}");
    let existing: Option<App> = store.get(Kind::App, &app_key).await?;
    let current_rev = existing.as_ref().map_or(0, |a| a.meta.revision);
    if let Some(expected) = req.revision {
        if expected != current_rev {
            return Err(ApiError::stale(
                &format!("app {name}"),
                expected,
                current_rev,
            ));
        }
    }

    let mut ops =
        crate::secrets::deploy::prepare(store, secrets_key, namespace, &name, &mut parsed, req)
            .await?;
    let app = App {
        namespace: namespace.to_string(),
        name: name.clone(),
        source: req.compose.clone(),
        services: parsed.services.iter().map(|(n, _)| n.clone()).collect(),
        meta: Meta::default(),
    };
    // Every write is conditioned on the revision read above, so two concurrent deploys of the
    // same app cannot interleave: the second fails with 409 and writes nothing.
    let app_expect = existing
        .as_ref()
        .map_or(Expect::Absent, |a| Expect::Revision(a.meta.revision));
    let app_changed = existing
        .as_ref()
        .is_none_or(|a| a.source != app.source || a.services != app.services);
    if app_changed {
        ops.push(Op::put(Kind::App, app_key.clone(), &app, app_expect));
    }

    let prefix = format!("{app_key}/");
    let old_services: Vec<Service> = store.list(Kind::Service, &prefix).await?;
    let all_services: Vec<Service> = store.list(Kind::Service, "").await?;
    crate::ports::check_published_ports(&parsed.services, &all_services, namespace, &name)?;
    for (service_name, spec) in &parsed.services {
        let old = old_services.iter().find(|s| &s.name == service_name);
        if old.is_some_and(|s| &s.spec == spec) {
            continue;
        }
        // A service keeps its VIP for life, so clients' cached addresses stay right.
        let vip = old.and_then(|s| s.vip.clone());
        let service = Service {
            namespace: namespace.to_string(),
            app: name.clone(),
            name: service_name.clone(),
            spec: spec.clone(),
            vip,
            meta: Meta::default(),
        };
        let expect = old.map_or(Expect::Absent, |s| Expect::Revision(s.meta.revision));
        ops.push(Op::put(Kind::Service, service.key(), &service, expect));
    }
    let removed: Vec<&Service> = old_services
        .iter()
        .filter(|s| !names.contains(s.name.as_str()))
        .collect();
    if !removed.is_empty() {
        for s in &removed {
            ops.push(Op::delete(
                Kind::Service,
                s.key(),
                Expect::Revision(s.meta.revision),
            ));
        }
    }
    if !ops.is_empty() && !app_changed {
        // Guard the service writes with the app's revision even when the app itself is
        // unchanged: putting it again costs one row and keeps deploys serialized.
        ops.push(Op::put(Kind::App, app_key.clone(), &app, app_expect));
    }

    let revision = store.txn(ops).await?;
    let app: App = store
        .get(Kind::App, &app_key)
        .await?
        .ok_or_else(|| ApiError::Conflict {
            message: format!("app {name} was deleted while it was being deployed"),
            fix: "deploy again".to_string(),
        })?;
    let services = ordered_services(store, &app).await?;
    Ok(DeployOutcome {
        response: DeployResponse {
            app,
            services,
            revision,
            warnings,
        },
        created: existing.is_none(),
    })
}

/// Reads the request's model with the CLI's own loader and reader. The CLI sends the model
/// already interpolated (every `$` doubled, env_files inlined), so the loader's interpolation
/// with the request's empty `env` gives it back unchanged; an older CLI's body, the file as
/// written with the variables it mentions and the env_files it read, still loads the same way.
fn read_model(file_name: &str, req: &DeployRequest) -> Result<compose::ComposeApp, ApiError> {
    let env_files = |path: &str| {
        req.env_files.get(path).cloned().ok_or_else(|| {
            "was not sent with the request (the CLI reads env_file paths relative to the \
             compose file)"
                .to_string()
        })
    };
    let project = compose::load_project(&ProjectInput {
        files: &[ComposeFile {
            name: file_name,
            source: &req.compose,
        }],
        env: &req.env,
        read_file: &env_files,
        profiles: &[],
        project_dir: None,
    })
    .map_err(compose_error)?;
    let nothing = |_: &str| -> Result<String, String> {
        Err("is read by the loader; the reader sees none".to_string())
    };
    compose::parse(&ComposeInput {
        file_name,
        source: &project.source,
        env: &BTreeMap::new(),
        env_files: &nothing,
    })
    .map_err(compose_error)
}

/// Deletes an app and its services in one transaction; returns the app as it was. The service
/// controller then deletes their replicas.
pub async fn delete_app(store: &Store, namespace: &str, name: &str) -> Result<App, ApiError> {
    delete_app_with(store, namespace, name, false).await
}

/// [`delete_app`]; with `volumes`, the app's volumes are marked for removal in the same
/// transaction (`hivemind rm --volumes`), and go once its replicas are gone.
pub async fn delete_app_with(
    store: &Store,
    namespace: &str,
    name: &str,
    volumes: bool,
) -> Result<App, ApiError> {
    let app_key = format!("{namespace}/{name}");
    let app: App = store
        .get(Kind::App, &app_key)
        .await?
        .ok_or_else(|| app_not_found(namespace, name))?;
    let mut ops = vec![Op::delete(
        Kind::App,
        app_key.clone(),
        Expect::Revision(app.meta.revision),
    )];
    let services: Vec<Service> = store.list(Kind::Service, &format!("{app_key}/")).await?;
    for s in &services {
        ops.push(Op::delete(
            Kind::Service,
            s.key(),
            Expect::Revision(s.meta.revision),
        ));
    }
    if volumes {
        ops.extend(crate::volumes::removal_ops(store, namespace, name).await?);
    }
    ops.extend(crate::secrets::deploy::delete_ops(store, namespace, name).await?);
    store.txn(ops).await?;
    Ok(app)
}

/// The app's services in file order.
pub async fn ordered_services(store: &Store, app: &App) -> Result<Vec<Service>, ApiError> {
    let mut services: Vec<Service> = store
        .list(Kind::Service, &format!("{}/", app.key()))
        .await?;
    services.sort_by_key(|s| {
        app.services
            .iter()
            .position(|n| n == &s.name)
            .unwrap_or(usize::MAX)
    });
    Ok(services)
}

pub(crate) fn app_not_found(namespace: &str, name: &str) -> ApiError {
    ApiError::not_found(
        format!("app {name} in namespace {namespace}"),
        "list the apps with `hivemind apps`",
    )
}

/// `?strict=`: `true` or `false` (absent or empty: false).
pub(crate) fn strict_param(value: Option<&str>) -> Result<bool, ApiError> {
    bool_param("strict", value)
}

/// A boolean query parameter `name`: `true` or `false` (absent or empty: false).
pub(crate) fn bool_param(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            name,
            format!("{name}: {other:?} is not a boolean"),
            format!("pass {name}=true or {name}=false"),
        )),
    }
}

/// A strict deploy's refusal: every warning in the message, the first one's key as the field.
fn strict_error(file: &str, warnings: &[compose::Warning]) -> ApiError {
    let mut message = format!(
        "{file} has {} key{} Hivemind reads but does not honour:",
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    );
    for w in warnings {
        message.push_str(&format!("\n  {w}"));
    }
    ApiError::Invalid {
        field: warnings.first().map(|w| w.key.clone()),
        message,
        fix: "remove those keys, or deploy without --strict (strict=false) to accept what \
              happens instead"
            .to_string(),
    }
}

/// One 422 for the whole Compose file: every problem in the message, the first one's key path as
/// the field.
fn compose_error(e: ComposeError) -> ApiError {
    let field = e
        .errors
        .first()
        .map(|f| f.path.clone())
        .filter(|p| !p.is_empty());
    let fix = match e.errors.as_slice() {
        [one] => one.fix.clone(),
        _ => "fix each problem listed above, then deploy again".to_string(),
    };
    let message = match e.errors.as_slice() {
        [one] if one.path.is_empty() => format!("{}: {}", e.file, one.message),
        [one] => format!("{}: {}: {}", e.file, one.path, one.message),
        _ => e.to_string(),
    };
    ApiError::Invalid {
        field: field.or_else(|| Some("compose".to_string())),
        message,
        fix,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod strict_tests;
