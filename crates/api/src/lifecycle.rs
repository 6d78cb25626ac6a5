//! `hivemind stop` and `start`: the user's desired run state of a service, or of every service
//! of an app (like `docker compose stop/start`).
//!
//! Only `Service.spec.stopped` is written; the service controller copies it into the replicas
//! and their nodes' agents stop or start the containers (kept, so logs stay readable and a
//! start is quick). The flag lives in the store, so a stopped service stays stopped across
//! agent and node restarts, whatever its restart policy; deploying the file again starts it,
//! as `docker compose up` does.

use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Service};

use crate::deploy::app_not_found;
use crate::error::ApiError;
use crate::scale::{get_service, list_services, ServiceQuery};

/// Sets `stopped` on `service` of `app`, or on every service of `app` when `None`, in one
/// transaction; returns the services as they are now. Writes nothing for services already so.
pub async fn set_stopped(
    store: &Store,
    namespace: &str,
    app: &str,
    service: Option<&str>,
    stopped: bool,
) -> Result<Vec<Service>, ApiError> {
    let services = match service {
        Some(name) => vec![get_service(store, namespace, app, name).await?],
        None => {
            let all = list_services(
                store,
                namespace,
                &ServiceQuery {
                    app: Some(app),
                    name: None,
                },
            )
            .await?;
            if all.is_empty() {
                return Err(app_not_found(namespace, app));
            }
            all
        }
    };
    let mut ops = Vec::new();
    let mut out = Vec::with_capacity(services.len());
    for mut s in services {
        if s.spec.stopped != stopped {
            s.spec.stopped = stopped;
            ops.push(Op::put(
                Kind::Service,
                s.key(),
                &s,
                Expect::Revision(s.meta.revision),
            ));
        }
        out.push(s);
    }
    if !ops.is_empty() {
        store.txn(ops).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use hivemind_types::{Meta, ServiceSpec};

    use super::*;

    async fn put_service(store: &Store, app: &str, name: &str) {
        let s = Service {
            namespace: "default".into(),
            app: app.into(),
            name: name.into(),
            spec: ServiceSpec {
                image: "busybox:1".into(),
                replicas: 1,
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

    async fn stopped(store: &Store, app: &str, name: &str) -> bool {
        get_service(store, "default", app, name)
            .await
            .unwrap()
            .spec
            .stopped
    }

    #[tokio::test]
    async fn stop_and_start_one_service_or_a_whole_app() {
        let store = Store::open_in_memory().unwrap();
        put_service(&store, "shop", "web").await;
        put_service(&store, "shop", "db").await;
        put_service(&store, "blog", "web").await;

        let out = set_stopped(&store, "default", "shop", Some("web"), true)
            .await
            .unwrap();
        assert!(out[0].spec.stopped);
        assert!(stopped(&store, "shop", "web").await);
        assert!(!stopped(&store, "shop", "db").await);
        assert!(!stopped(&store, "blog", "web").await);

        // Again: nothing to write.
        let rev = store.revision().await.unwrap();
        set_stopped(&store, "default", "shop", Some("web"), true)
            .await
            .unwrap();
        assert_eq!(store.revision().await.unwrap(), rev);

        let out = set_stopped(&store, "default", "shop", None, true)
            .await
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(stopped(&store, "shop", "db").await);
        assert!(!stopped(&store, "blog", "web").await);

        set_stopped(&store, "default", "shop", None, false)
            .await
            .unwrap();
        assert!(!stopped(&store, "shop", "web").await);
        assert!(!stopped(&store, "shop", "db").await);
        // Stopping changes no revision: no replica is replaced.
        let s = get_service(&store, "default", "shop", "web").await.unwrap();
        let mut spec = s.spec.clone();
        spec.stopped = true;
        assert_eq!(spec.revision_hash(), s.spec.revision_hash());
    }

    #[tokio::test]
    async fn unknown_apps_and_services_are_404s_that_say_what_to_do() {
        let store = Store::open_in_memory().unwrap();
        put_service(&store, "shop", "web").await;
        for (app, service) in [("shop", Some("api")), ("nope", None), ("nope", Some("web"))] {
            let err = set_stopped(&store, "default", app, service, true)
                .await
                .unwrap_err();
            assert!(
                matches!(err, ApiError::NotFound { .. }),
                "{app} {service:?}: {err:?}"
            );
        }
    }
}
