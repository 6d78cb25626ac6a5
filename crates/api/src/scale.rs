//! Reading services and changing their replica count.
//!
//! Scaling writes only `Service.spec.replicas`; the service controller notices the change and
//! adds or removes `Replica` objects.

use hivemind_client::wire::ScaleRequest;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Service, ServiceMode, TooManyReplicas};

use crate::error::ApiError;

/// Which services `GET /api/v1/services` returns.
#[derive(Debug, Default)]
pub struct ServiceQuery<'a> {
    pub app: Option<&'a str>,
    /// A bare service name, to find the app(s) that have it.
    pub name: Option<&'a str>,
}

pub async fn list_services(
    store: &Store,
    namespace: &str,
    query: &ServiceQuery<'_>,
) -> Result<Vec<Service>, ApiError> {
    let prefix = match query.app {
        Some(app) => format!("{namespace}/{app}/"),
        None => format!("{namespace}/"),
    };
    let mut services: Vec<Service> = store.list(Kind::Service, &prefix).await?;
    if let Some(name) = query.name {
        services.retain(|s| s.name == name);
    }
    Ok(services)
}

pub async fn get_service(
    store: &Store,
    namespace: &str,
    app: &str,
    name: &str,
) -> Result<Service, ApiError> {
    store
        .get(Kind::Service, &format!("{namespace}/{app}/{name}"))
        .await?
        .ok_or_else(|| service_not_found(namespace, app, name))
}

/// Sets the service's replica count. Writes nothing when the count is already right.
pub async fn scale(
    store: &Store,
    namespace: &str,
    app: &str,
    name: &str,
    req: &ScaleRequest,
) -> Result<Service, ApiError> {
    // The same limit and message as `deploy.replicas` in a Compose file.
    if let Err(e) = TooManyReplicas::check(req.replicas) {
        return Err(ApiError::invalid("replicas", e.to_string(), e.fix()));
    }
    let mut service = get_service(store, namespace, app, name).await?;
    if let Some(expected) = req.revision {
        if expected != service.meta.revision {
            return Err(ApiError::stale(
                &format!("service {app}/{name}"),
                expected,
                service.meta.revision,
            ));
        }
    }
    if service.spec.mode == ServiceMode::Global {
        return Err(ApiError::invalid(
            "replicas",
            format!("replicas: service {app}/{name} runs in global mode, one replica on every node"),
            "change `deploy.mode` to `replicated` in the Compose file and deploy it to scale by count",
        ));
    }
    if service.spec.replicas == req.replicas {
        return Ok(service);
    }
    service.spec.replicas = req.replicas;
    let key = service.key();
    store
        .txn(vec![Op::put(
            Kind::Service,
            key.clone(),
            &service,
            Expect::Revision(service.meta.revision),
        )])
        .await?;
    get_service(store, namespace, app, name).await
}

fn service_not_found(namespace: &str, app: &str, name: &str) -> ApiError {
    ApiError::not_found(
        format!("service {app}/{name} in namespace {namespace}"),
        "list the services with `hivemind services`",
    )
}

#[cfg(test)]
mod tests {
    use hivemind_types::{Meta, ServiceSpec, MAX_REPLICAS};

    use super::*;

    async fn put_service(store: &Store, app: &str, name: &str, mode: ServiceMode) {
        let s = Service {
            namespace: "default".into(),
            app: app.into(),
            name: name.into(),
            spec: ServiceSpec {
                image: "busybox:1".into(),
                replicas: 1,
                mode,
                ..Default::default()
            },
            vip: None,
            meta: Meta::default(),
        };
        store
            .txn(vec![Op::put(Kind::Service, s.key(), &s, Expect::Absent)])
            .await
            .unwrap();
    }

    fn req(replicas: u32, revision: Option<u64>) -> ScaleRequest {
        ScaleRequest { replicas, revision }
    }

    #[tokio::test]
    async fn scale_sets_replicas_and_skips_no_op_writes() {
        let store = Store::open_in_memory().unwrap();
        put_service(&store, "shop", "web", ServiceMode::Replicated).await;
        let s = scale(&store, "default", "shop", "web", &req(5, None))
            .await
            .unwrap();
        assert_eq!(s.spec.replicas, 5);
        let rev = store.revision().await.unwrap();
        scale(&store, "default", "shop", "web", &req(5, None))
            .await
            .unwrap();
        assert_eq!(
            store.revision().await.unwrap(),
            rev,
            "same count writes nothing"
        );
    }

    #[tokio::test]
    async fn scale_refuses_stale_revisions_global_mode_unknown_services_and_huge_counts() {
        let store = Store::open_in_memory().unwrap();
        put_service(&store, "shop", "web", ServiceMode::Replicated).await;
        put_service(&store, "shop", "agent", ServiceMode::Global).await;
        let rev = store.revision().await.unwrap();
        let cases = [
            ("web", req(2, Some(rev + 7)), 409, None),
            ("agent", req(2, None), 422, Some("replicas")),
            ("nope", req(2, None), 404, None),
            ("web", req(MAX_REPLICAS + 1, None), 422, Some("replicas")),
        ];
        for (name, r, status, field) in cases {
            let err = scale(&store, "default", "shop", name, &r)
                .await
                .unwrap_err();
            assert_eq!(err.status().as_u16(), status, "{name} {r:?}");
            assert_eq!(err.field(), field);
        }
        assert_eq!(store.revision().await.unwrap(), rev);
        // The current revision is accepted.
        let s = scale(&store, "default", "shop", "web", &req(3, Some(rev - 1)))
            .await
            .unwrap();
        assert_eq!(s.spec.replicas, 3);
    }

    /// Regression: `deploy` accepted more replicas than `scale` allowed. Both now refuse a count
    /// above the one `MAX_REPLICAS` with the same message and fix, and write nothing.
    #[tokio::test]
    async fn deploy_and_scale_refuse_the_same_replica_counts_alike() {
        let store = Store::open_in_memory().unwrap();
        put_service(&store, "shop", "web", ServiceMode::Replicated).await;
        let rev = store.revision().await.unwrap();
        let over = MAX_REPLICAS + 1;
        let scaled = scale(&store, "default", "shop", "web", &req(over, None))
            .await
            .unwrap_err();
        let compose = format!("name: blog\nservices:\n  web:\n    image: busybox:1\n    deploy: {{replicas: {over}}}\n");
        let deployed = crate::deploy::deploy(
            &store,
            "default",
            &hivemind_client::wire::DeployRequest {
                compose,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(store.revision().await.unwrap(), rev, "nothing written");
        assert_eq!(scaled.status(), deployed.status());
        assert_eq!(scaled.field(), Some("replicas"));
        assert_eq!(deployed.field(), Some("services.web.deploy.replicas"));
        assert_eq!(
            deployed.to_string(),
            format!("compose.yaml: services.web.deploy.replicas: {scaled}")
        );
        assert_eq!(scaled.fix(), deployed.fix());
        assert!(scaled.to_string().contains(&MAX_REPLICAS.to_string()));
        // The limit itself is allowed by both.
        scale(&store, "default", "shop", "web", &req(MAX_REPLICAS, None))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn services_are_found_by_bare_name_across_apps() {
        let store = Store::open_in_memory().unwrap();
        put_service(&store, "a", "web", ServiceMode::Replicated).await;
        put_service(&store, "b", "web", ServiceMode::Replicated).await;
        put_service(&store, "b", "db", ServiceMode::Replicated).await;
        let q = ServiceQuery {
            app: None,
            name: Some("web"),
        };
        let found = list_services(&store, "default", &q).await.unwrap();
        let apps: Vec<_> = found.iter().map(|s| s.app.as_str()).collect();
        assert_eq!(apps, ["a", "b"]);
        let q = ServiceQuery {
            app: Some("b"),
            name: None,
        };
        assert_eq!(list_services(&store, "default", &q).await.unwrap().len(), 2);
        assert!(list_services(&store, "other", &ServiceQuery::default())
            .await
            .unwrap()
            .is_empty());
    }
}
