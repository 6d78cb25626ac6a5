//! `apps`, `services`, `ps`, `nodes`: lists, as tables or JSON/YAML.

use hivemind_client::wire::ReplicaFilter;
use hivemind_types::ServiceMode;

use crate::cli::{GlobalArgs, PsArgs, ServicesArgs};
use crate::config::client;
use crate::output::{age, print_list, replica_state};

pub(crate) async fn apps(global: &GlobalArgs) -> anyhow::Result<()> {
    let apps = client(global)?.apps().await?;
    let rows = apps
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.namespace.clone(),
                a.services.join(","),
                a.meta.revision.to_string(),
                age(a.meta.created_at),
            ]
        })
        .collect();
    print_list(
        global.output,
        &apps,
        &["NAME", "NAMESPACE", "SERVICES", "REVISION", "AGE"],
        rows,
    )
}

pub(crate) async fn services(global: &GlobalArgs, args: ServicesArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    let services = client.services(args.app.as_deref()).await?;
    let replicas = client.replicas(&ReplicaFilter::default()).await?;
    let rows = services
        .iter()
        .map(|s| {
            let running = replicas
                .iter()
                .filter(|r| r.replica.app == s.app && r.replica.service == s.name)
                .filter(|r| {
                    // A one-shot that completed is done, not missing.
                    r.status.as_ref().is_some_and(|st| {
                        matches!(
                            st.state,
                            hivemind_types::ReplicaState::Running
                                | hivemind_types::ReplicaState::Completed
                        )
                    })
                })
                .count();
            let want = match s.spec.mode {
                ServiceMode::Replicated => s.spec.replicas.to_string(),
                ServiceMode::Global => "global".to_string(),
            };
            let ports = s
                .spec
                .ports
                .iter()
                .map(|p| match p.published {
                    Some(published) => format!("{published}->{}", p.target),
                    None => p.target.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            vec![
                s.name.clone(),
                s.app.clone(),
                s.spec.image.clone(),
                format!("{running}/{want}"),
                s.vip.clone().unwrap_or_default(),
                ports,
                s.spec.revision_hash(),
            ]
        })
        .collect();
    print_list(
        global.output,
        &services,
        &[
            "NAME", "APP", "IMAGE", "REPLICAS", "VIP", "PORTS", "REVISION",
        ],
        rows,
    )
}

pub(crate) async fn ps(global: &GlobalArgs, args: PsArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    let mut filter = ReplicaFilter::default();
    if let Some(service) = &args.service {
        let s = client.find_service(service).await?;
        filter.app = Some(s.app);
        filter.service = Some(s.name);
    }
    let replicas = client.replicas(&filter).await?;
    // Services held by `depends_on` have no replica to show: a row says what they wait for.
    let waiting = crate::cmd::lifecycle::waiting_rows(
        &client,
        filter.app.as_deref(),
        filter.service.as_deref(),
        &replicas,
    )
    .await?;
    let rows = replicas
        .iter()
        .map(|r| {
            let (state, restarts, pid, ip, message) = match &r.status {
                Some(s) => (
                    replica_state(s),
                    s.restarts.to_string(),
                    s.pid.map(|p| p.to_string()).unwrap_or_default(),
                    s.ip.clone().unwrap_or_default(),
                    s.message.clone(),
                ),
                None => (
                    "pending".to_string(),
                    "0".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
            };
            vec![
                r.replica.id.clone(),
                r.replica.service.clone(),
                r.replica.app.clone(),
                r.replica.node.clone(),
                state,
                restarts,
                pid,
                ip,
                age(r.replica.meta.created_at),
                message,
            ]
        })
        .chain(waiting)
        .collect();
    print_list(
        global.output,
        &replicas,
        &[
            "REPLICA", "SERVICE", "APP", "NODE", "STATE", "RESTARTS", "PID", "IP", "AGE", "MESSAGE",
        ],
        rows,
    )
}

pub(crate) async fn nodes(global: &GlobalArgs) -> anyhow::Result<()> {
    let nodes = client(global)?.nodes().await?;
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.address.clone(),
                format!("{:?}", n.state).to_lowercase(),
                age(n.last_seen),
                age(n.meta.created_at),
                n.problems
                    .iter()
                    .map(|p| format!("{}: {}", p.reason, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    print_list(
        global.output,
        &nodes,
        &["NAME", "ADDRESS", "STATE", "LAST SEEN", "AGE", "PROBLEMS"],
        rows,
    )
}
