//! `stop` and `start`: a service's (or a whole app's) desired run state, like
//! `docker compose stop/start`. The server records it; the control plane and the agents do the
//! stopping and starting.

use anyhow::bail;

use crate::cli::{GlobalArgs, RunStateArgs};
use crate::config::client;

pub(crate) async fn run_state(
    global: &GlobalArgs,
    args: RunStateArgs,
    stopped: bool,
) -> anyhow::Result<()> {
    let (app, service) = parse_target(&args.target)?;
    let services = client(global)?.set_stopped(app, service, stopped).await?;
    for s in &services {
        if stopped {
            println!(
                "{}/{} stopped: its containers stop and stay stopped until `hivemind start {}/{}`",
                s.app, s.name, s.app, s.name
            );
        } else {
            println!("{}/{} started", s.app, s.name);
        }
    }
    Ok(())
}

/// `APP` or `APP/SERVICE`.
fn parse_target(target: &str) -> anyhow::Result<(&str, Option<&str>)> {
    let (app, service) = match target.split_once('/') {
        Some((app, service)) => (app, Some(service)),
        None => (target, None),
    };
    if app.is_empty() || service.is_some_and(|s| s.is_empty() || s.contains('/')) {
        bail!("{target:?} is not APP or APP/SERVICE: write it like shop or shop/web");
    }
    Ok((app, service))
}

/// Rows for `ps` of services that have fewer replicas than they want because their
/// `depends_on` does not hold: the service controller's latest wait event says why, so that a
/// wait reads as one rather than as silence.
pub(crate) async fn waiting_rows(
    client: &hivemind_client::Client,
    app: Option<&str>,
    service: Option<&str>,
    replicas: &[hivemind_client::wire::ReplicaView],
) -> anyhow::Result<Vec<Vec<String>>> {
    use hivemind_types::event::reason;
    let mut rows = Vec::new();
    for s in client.services(app).await? {
        if s.spec.depends_on.is_empty() || service.is_some_and(|name| name != s.name) {
            continue;
        }
        let have = replicas
            .iter()
            .filter(|r| r.replica.app == s.app && r.replica.service == s.name)
            .count();
        if s.spec.mode == hivemind_types::ServiceMode::Replicated
            && have >= s.spec.replicas as usize
        {
            continue;
        }
        let events = client
            .recorded_events(&hivemind_client::wire::EventFilter {
                app: Some(s.app.clone()),
                service: Some(s.name.clone()),
                ..Default::default()
            })
            .await?;
        let latest = events.iter().rev().find(|e| {
            e.object.kind == hivemind_types::Kind::Service
                && [
                    reason::WAITING,
                    reason::DEPENDENCY_FAILED,
                    reason::DEPENDENCIES_READY,
                ]
                .contains(&e.reason.as_str())
        });
        let Some(e) = latest.filter(|e| e.reason != reason::DEPENDENCIES_READY) else {
            continue;
        };
        let state = if e.reason == reason::DEPENDENCY_FAILED {
            "blocked"
        } else {
            "waiting"
        };
        rows.push(vec![
            "-".to_string(),
            s.name.clone(),
            s.app.clone(),
            String::new(),
            state.to_string(),
            String::new(),
            String::new(),
            String::new(),
            crate::output::age(e.time),
            e.message.clone(),
        ]);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets_are_an_app_or_an_app_and_a_service() {
        assert_eq!(parse_target("shop").unwrap(), ("shop", None));
        assert_eq!(parse_target("shop/web").unwrap(), ("shop", Some("web")));
        for bad in ["", "/web", "shop/", "shop/web/x"] {
            let err = parse_target(bad).unwrap_err().to_string();
            assert!(err.contains("APP/SERVICE"), "{bad}: {err}");
        }
    }
}
