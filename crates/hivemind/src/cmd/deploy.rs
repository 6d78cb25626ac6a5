//! `deploy`, `scale` and `rm`: the commands that change desired state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{FutureExt, StreamExt};
use hivemind_client::wire::{DeployRequest, ReplicaFilter};
use hivemind_client::Client;
use hivemind_types::compose::{self, ComposeFile, ComposeInput, ProjectInput};
use hivemind_types::secret::FileKind;
use hivemind_types::{ReplicaState, ServiceMode};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{DeployArgs, GlobalArgs, RmArgs, ScaleArgs};
use crate::config::client;

pub(crate) async fn deploy(global: &GlobalArgs, args: DeployArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let process_env: BTreeMap<String, String> = std::env::vars().collect();
    let mut request = deploy_request(&cwd, &process_env, &args)?;
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

/// The Compose file names Docker Compose looks for, in its order of preference.
const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Which Compose files make the project: `-f` files, else `COMPOSE_FILE` (separated by
/// `COMPOSE_PATH_SEPARATOR`, `:` by default), else the first default file found in `cwd` or
/// a parent directory, with its override file beside it, as Docker Compose does.
fn compose_files(
    cwd: &Path,
    env: &BTreeMap<String, String>,
    flags: &[PathBuf],
) -> anyhow::Result<Vec<PathBuf>> {
    if !flags.is_empty() {
        return Ok(flags.iter().map(|f| cwd.join(f)).collect());
    }
    if let Some(list) = env.get("COMPOSE_FILE").filter(|l| !l.is_empty()) {
        let sep = env
            .get("COMPOSE_PATH_SEPARATOR")
            .filter(|s| !s.is_empty())
            .map_or(":", String::as_str);
        return Ok(list
            .split(sep)
            .filter(|f| !f.is_empty())
            .map(|f| cwd.join(f))
            .collect());
    }
    for dir in cwd.ancestors() {
        let Some(name) = DEFAULT_FILES.iter().find(|n| dir.join(n).is_file()) else {
            continue;
        };
        let mut files = vec![dir.join(name)];
        let stem = if name.starts_with("docker-") {
            "docker-compose"
        } else {
            "compose"
        };
        // `compose.override.yaml` beside `compose.yaml`, either extension.
        for ext in ["yaml", "yml"] {
            let over = dir.join(format!("{stem}.override.{ext}"));
            if over.is_file() {
                files.push(over);
                break;
            }
        }
        return Ok(files);
    }
    bail!(
        "no Compose file here or in a parent directory ({}): pass one with -f FILE or set COMPOSE_FILE",
        DEFAULT_FILES.join(", ")
    )
}

/// The interpolation variables: the `--env-file`s (or the project directory's `.env`), then
/// the process environment, which wins (as in Docker Compose). A `.env` may refer to the
/// process environment.
fn project_env(
    dir: &Path,
    cwd: &Path,
    process_env: &BTreeMap<String, String>,
    env_files: &[PathBuf],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    let lookup = |name: &str| process_env.get(name).cloned();
    let mut load = |path: &Path, required: bool| -> anyhow::Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => bail!(
                "cannot read the env file {}: {e}: check the --env-file path",
                path.display()
            ),
        };
        let vars = compose::parse_dotenv_with(&path.display().to_string(), &text, &lookup)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        env.extend(vars);
        Ok(())
    };
    if env_files.is_empty() {
        load(&dir.join(".env"), false)?;
    } else {
        for file in env_files {
            load(&cwd.join(file), true)?;
        }
    }
    env.extend(process_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env)
}

/// Loads the project (its files, `.env`, `env_file`s and profiles) into one interpolated model
/// and checks it locally with the server's own reader, so that a bad file is reported before
/// anything is sent. The request carries only the model: no variables, no files.
fn deploy_request(
    cwd: &Path,
    process_env: &BTreeMap<String, String>,
    args: &DeployArgs,
) -> anyhow::Result<DeployRequest> {
    let paths = compose_files(cwd, process_env, &args.file)?;
    let mut texts = Vec::with_capacity(paths.len());
    for path in &paths {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {}: pass the Compose file with -f FILE",
                path.display()
            )
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "compose.yaml".into());
        texts.push((name, text));
    }
    // Relative paths in every file are relative to the first file's directory, as in Docker
    // Compose.
    let dir = paths
        .first()
        .and_then(|p| p.parent())
        .unwrap_or(cwd)
        .to_path_buf();
    let env = project_env(&dir, cwd, process_env, &args.env_file)?;
    let read_file = |path: &str| -> Result<String, String> {
        std::fs::read_to_string(dir.join(path)).map_err(|e| e.to_string())
    };
    let files: Vec<ComposeFile<'_>> = texts
        .iter()
        .map(|(name, source)| ComposeFile { name, source })
        .collect();
    // Bind sources are made absolute here, the only place that sees the user's files. They
    // name paths on the node: single-node, the server runs where the CLI does; in a cluster
    // a path that does not exist on the replica's node fails that replica, naming the path.
    let project_dir = cwd.join(&dir).to_string_lossy().into_owned();
    let project = compose::load_project(&ProjectInput {
        files: &files,
        env: &env,
        read_file: &read_file,
        profiles: &args.profile,
        project_dir: Some(&project_dir),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let nothing = |_: &str| -> Result<String, String> { Err("was not inlined".into()) };
    let parsed = compose::parse(&ComposeInput {
        file_name: &project.file_name,
        source: &project.source,
        env: &BTreeMap::new(),
        env_files: &nothing,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Without `--app` or `name:`, the directory's name, as Docker Compose does.
    let name = args.app.clone().or(parsed.name).or_else(|| {
        std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_lowercase()))
    });
    // Values read here travel beside the model, never in it: the model is stored as sent.
    let secrets = super::secret::compose_values(FileKind::Secret, &dir, &env, &parsed.secrets)?;
    let configs = super::secret::compose_values(FileKind::Config, &dir, &env, &parsed.configs)?;
    Ok(DeployRequest {
        name,
        namespace: None,
        compose: project.source,
        file_name: Some(project.file_name),
        env: BTreeMap::new(),
        env_files: BTreeMap::new(),
        revision: None,
        strict: false,
        secrets,
        configs,
    })
}

/// Running, and healthy when it has a health check.
fn is_up(status: &hivemind_types::ObservedReplica) -> bool {
    status.state == ReplicaState::Running
        && status
            .health
            .as_ref()
            .is_none_or(|h| h.status == hivemind_types::HealthStatus::Healthy)
}

/// Follows the app's replicas until every service runs its desired count at its current
/// revision, healthy where it has a health check. Fails at the first replica that cannot
/// start, or at the timeout.
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
            // A replica with a health check counts once it is healthy (it gets traffic then);
            // a one-shot job that completed is as done as a running server.
            let running = current
                .iter()
                .filter(|r| {
                    r.status
                        .as_ref()
                        .is_some_and(|s| is_up(s) || s.state == ReplicaState::Completed)
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
    let app = client
        .delete_app_with_volumes(&args.app, args.volumes)
        .await?;
    if args.volumes {
        println!(
            "app {} removed; its containers are being stopped, then its volumes removed",
            app.name
        );
    } else {
        println!("app {} removed; its containers are being stopped", app.name);
    }
    Ok(())
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
