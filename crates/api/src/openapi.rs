//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and the wire
//! types' `ToSchema` derives, so it cannot drift from the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{exec, logs, routes, secrets, tokens, volumes};

#[derive(OpenApi)]
#[openapi(
    info(title = "Hivemind API", description = "Apps, services, replicas and nodes of a Hivemind cluster (SPEC §5)."),
    paths(
        routes::healthz,
        routes::deploy_app,
        routes::list_apps,
        routes::get_app,
        routes::delete_app,
        routes::list_services,
        routes::get_service,
        routes::scale_service,
        routes::stop_service,
        routes::start_service,
        routes::stop_app,
        routes::start_app,
        routes::list_replicas,
        routes::list_nodes,
        routes::get_assignment,
        routes::put_report,
        routes::put_lease,
        routes::get_events,
        logs::replica_logs,
        logs::service_logs,
        exec::replica_exec,
        tokens::create_token,
        tokens::list_tokens,
        tokens::delete_token,
        tokens::join_node,
        tokens::delete_node,
        volumes::list_volumes,
        volumes::create_volume,
        volumes::get_volume,
        volumes::delete_volume,
        volumes::node_volumes,
        secrets::routes::create_secret,
        secrets::routes::list_secrets,
        secrets::routes::inspect_secret,
        secrets::routes::remove_secret,
        secrets::routes::create_config,
        secrets::routes::list_configs,
        secrets::routes::inspect_config,
        secrets::routes::remove_config,
    ),
    components(schemas(hivemind_client::wire::ChangeEvent)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub(crate) struct ApiDoc;

/// Declares the bearer-token scheme that `security` above refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, built once per call; it is small and rarely fetched.
pub(crate) fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
