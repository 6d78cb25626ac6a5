//! `deploy`, `scale` and `rm`: the commands that change desired state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{FutureExt, StreamExt};
use hivemind_client::wire::{DeployRequest, ReplicaFilter};
use hivemind_client::Client;
use hivemind_types::compose::{self, ComposeInput};
use hivemind_types::{ReplicaState, ServiceMode};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{DeployArgs, GlobalArgs, RmArgs, ScaleArgs};
use crate::config::client;

pub(crate) async fn deploy(global: &GlobalArgs, args: DeployArgs) -> anyhow::Result<()> {
    let mut request = deploy_request(&args.file, args.app.clone())?;
    request.strict = args.strict;
    let client = client(global)?;
    let response = client.deploy(&request).await?;
    // The server's list, not a local one: it knows what it honours.
    for warning in &response.warnings {
        eprintln!("warning: {warning}");
    }
    let app = response.app.name.clone();
    println!(
        "app {app} deployed at revision {} ({} service{})",
        response.revision,
        response.services.len(),
        if response.services.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    if args.wait {
        wait_until_running(&client, &app, response.revision, args.timeout).await?;
    }
    Ok(())
}

/// Reads the Compose file, its `.env` and `env_file`s, and checks it locally first, so that a bad
/// file is reported before anything is sent.
fn deploy_request(file: &Path, app: Option<String>) -> anyhow::Result<DeployRequest> {
    let source = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read {}: pass the Compose file with -f FILE",
            file.display()
        )
    })?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "compose.yaml".into());
    // `.env` beside the file, then the process environment, which wins (as in Docker Compose).
    let mut env = match std::fs::read_to_string(dir.join(".env")) {
        Ok(text) => compose::parse_dotenv(&text).map_err(|e| anyhow::anyhow!("{e}"))?,
        Err(_) => BTreeMap::new(),
    };
    env.extend(std::env::vars());
    // Send only the variables the file mentions: the rest of the environment is none of the
    // server's business (and may hold secrets).
    env.retain(|name, _| mentions(&source, name));
    let env_files = std::cell::RefCell::new(BTreeMap::new());
    let read_env_file = |path: &str| -> Result<String, String> {
        let text = std::fs::read_to_string(dir.join(path))
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        env_files
            .borrow_mut()
            .insert(path.to_string(), text.clone());
        Ok(text)
    };
    let parsed = compose::parse(&ComposeInput {
        file_name: &file_name,
        source: &source,
        env: &env,
        env_files: &read_env_file,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Without `--app` or `name:`, the directory's name, as Docker Compose does.
    let name = app.or(parsed.name).or_else(|| {
        std::fs::canonicalize(dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_lowercase()))
    });
    Ok(DeployRequest {
        name,
        namespace: None,
        compose: source,
        file_name: Some(file_name),
        env,
        env_files: env_files.into_inner(),
        revision: None,
        strict: false,
    })
}

fn mentions(source: &str, name: &str) -> bool {
    source.match_indices(name).any(|(i, _)| {
        let before = &source[..i];
        let after = source[i + name.len()..].chars().next();
        let ends = !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        ends && (before.ends_with('$') || before.ends_with("${"))
    }) || source.contains(&format!("- {name}\n"))
}

/// Follows the app's replicas until every service runs its desired count at its current
/// revision. Fails at the first replica that cannot start, or at the timeout.
async fn wait_until_running(
    client: &Client,
    app: &str,
    since: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    // Re-check on every change the server streams (SPEC §5: the CLI's --wait watches); if the
    // stream breaks, fall back to polling.
    let mut events = client.events(Some(since)).await.ok().map(Box::pin);
    loop {
        let services = client.services(Some(app)).await?;
        let replicas = client
            .replicas(&ReplicaFilter {
                app: Some(app.to_string()),
                ..Default::default()
            })
            .await?;
        let mut done = true;
        let mut progress = Vec::new();
        for service in &services {
            let hash = service.spec.revision_hash();
            let mine: Vec<_> = replicas
                .iter()
                .filter(|r| r.replica.service == service.name)
                .collect();
            let current: Vec<_> = mine
                .iter()
                .filter(|r| r.replica.revision_hash == hash)
                .collect();
            for r in &current {
                let Some(status) = &r.status else { continue };
                let broken = match status.state {
                    ReplicaState::Failed | ReplicaState::Exited => true,
                    ReplicaState::Restarting => status.restarts >= 3,
                    _ => false,
                };
                if broken {
                    bar.finish_and_clear();
                    bail!(
                        "replica {} of service {} is {}: {}",
                        r.replica.id,
                        service.name,
                        status.state.as_str(),
                        if status.message.is_empty() {
                            "no details"
                        } else {
                            &status.message
                        }
                    );
                }
            }
            let running = current
                .iter()
                .filter(|r| {
                    r.status
                        .as_ref()
                        .is_some_and(|s| s.state == ReplicaState::Running)
                })
                .count();
            let want = match service.spec.mode {
                ServiceMode::Replicated => service.spec.replicas as usize,
                ServiceMode::Global => current.len().max(1),
            };
            if running != want || mine.len() != current.len() {
                done = false;
            }
            progress.push(format!("{} {running}/{want}", service.name));
        }
        bar.set_message(format!("waiting for {app}: {}", progress.join(", ")));
        if done {
            bar.finish_and_clear();
            println!("app {app} is running: {}", progress.join(", "));
            return Ok(());
        }
        if started.elapsed() > timeout {
            bar.finish_and_clear();
            bail!(
                "timed out after {} waiting for {app} ({}); see `hivemind ps` for the replicas' states",
                humantime::format_duration(timeout),
                progress.join(", ")
            );
        }
        match events.as_mut() {
            Some(stream) => {
                match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
                    Ok(Some(Ok(_))) => {
                        // Coalesce a burst: one check covers every change already received.
                        while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
                    }
                    Ok(_) => events = None,
                    Err(_) => {}
                }
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub(crate) async fn scale(global: &GlobalArgs, args: ScaleArgs) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    for target in &args.targets {
        let Some((name, count)) = target.split_once('=') else {
            bail!("{target:?} is not SERVICE=N: write it like web=3 or shop/web=3");
        };
        let count: u32 = count.parse().with_context(|| {
            format!("{count:?} in {target:?} is not a replica count: use a whole number like web=3")
        })?;
        targets.push((name.to_string(), count));
    }
    let client = client(global)?;
    for (name, count) in targets {
        let service = client.scale(None, &name, count).await?;
        println!("{}/{} scaled to {count}", service.app, service.name);
    }
    Ok(())
}

pub(crate) async fn rm(global: &GlobalArgs, args: RmArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    let app = client.delete_app(&args.app).await?;
    println!("app {} removed; its containers are being stopped", app.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn only_mentioned_variables_are_sent() {
        let src = "image: ${IMAGE:-busybox}\ncommand: echo $GREETING\n";
        assert!(mentions(src, "IMAGE"));
        assert!(mentions(src, "GREETING"));
        assert!(!mentions(src, "HOME"));
        assert!(!mentions(src, "GREET"));
    }
}
