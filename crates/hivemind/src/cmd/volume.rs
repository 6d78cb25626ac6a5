//! `volume ls|create|inspect|rm`: named volumes, which outlive replicas, redeploys and
//! `hivemind rm APP` (`rm --volumes APP` removes an app's own).

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use hivemind_client::volumes::VolumeCreateRequest;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::config::client;
use crate::output::{age, print_list};

#[derive(Args)]
pub(crate) struct VolumeArgs {
    #[command(subcommand)]
    pub(crate) command: VolumeCommand,
}

#[derive(Subcommand)]
pub(crate) enum VolumeCommand {
    /// List the namespace's volumes.
    Ls,
    /// Create a volume outside any app; Compose files mount it with `external: true`.
    Create {
        name: String,
        /// A mount(8) option of the local driver: `type=nfs`, `o=addr=10.0.0.2,rw`,
        /// `device=:/export` (repeatable). Without any, a directory on the node.
        #[arg(long = "driver-opt", value_parser = parse_pair)]
        driver_opts: Vec<(String, String)>,
        /// A label `KEY=VALUE` (repeatable).
        #[arg(long = "label", value_parser = parse_pair)]
        labels: Vec<(String, String)>,
        /// The node to keep it on (needed when the cluster has several).
        #[arg(long)]
        node: Option<String>,
    },
    /// Show a volume.
    Inspect { name: String },
    /// Remove a volume and its data (refused while a replica mounts it).
    Rm { name: String },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

pub(crate) async fn volume(global: &GlobalArgs, args: VolumeArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    match args.command {
        VolumeCommand::Ls => {
            let volumes = client.volumes().await?;
            let rows = volumes
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        v.driver.clone(),
                        v.app.clone().unwrap_or_else(|| "-".to_string()),
                        v.node.clone(),
                        if v.removing { "removing" } else { "" }.to_string(),
                        age(v.meta.created_at),
                    ]
                })
                .collect();
            print_list(
                global.output,
                &volumes,
                &["NAME", "DRIVER", "APP", "NODE", "STATE", "AGE"],
                rows,
            )
        }
        VolumeCommand::Create {
            name,
            driver_opts,
            labels,
            node,
        } => {
            let created = client
                .create_volume(&VolumeCreateRequest {
                    name,
                    driver_opts: driver_opts.into_iter().collect::<BTreeMap<_, _>>(),
                    labels: labels.into_iter().collect(),
                    node,
                })
                .await?;
            match global.output {
                OutputFormat::Table => {
                    println!("volume {} created on node {}", created.name, created.node)
                }
                _ => print_one(global.output, &created)?,
            }
            Ok(())
        }
        VolumeCommand::Inspect { name } => {
            let volume = client.volume(&name).await?;
            let format = match global.output {
                // A single object reads best as YAML.
                OutputFormat::Table => OutputFormat::Yaml,
                other => other,
            };
            print_one(format, &volume)
        }
        VolumeCommand::Rm { name } => {
            let removed = client.delete_volume(&name).await?;
            println!(
                "volume {} removed; node {} deletes its data",
                removed.name, removed.node
            );
            Ok(())
        }
    }
}

fn print_one<T: serde::Serialize>(format: OutputFormat, value: &T) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        _ => print!("{}", serde_yaml_ng::to_string(value)?),
    }
    Ok(())
}
