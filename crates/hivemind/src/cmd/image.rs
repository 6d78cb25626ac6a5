//! `image import` and `image ls`: act on this machine's containerd directly, like
//! `k3s ctr images import`, because an imported tarball lives on the node that imported it.

use anyhow::Context;
use hivemind_agent::runtime::{ContainerRuntime, Containerd};
use serde::Serialize;

use crate::cli::{GlobalArgs, ImageArgs, ImageCommand};
use crate::cmd::up::runtime_config;
use crate::output::print_list;

#[derive(Serialize)]
struct ImageRow {
    name: String,
    digest: String,
    size: u64,
}

pub(crate) async fn image(global: &GlobalArgs, args: ImageArgs) -> anyhow::Result<()> {
    let config = runtime_config(&global.data_dir, &args.runtime);
    let runtime = Containerd::connect(config).await.with_context(|| {
        format!(
            "cannot reach containerd at {}: start it or pass --containerd-socket",
            args.runtime.containerd_socket.display()
        )
    })?;
    match args.command {
        ImageCommand::Import { files } => {
            if files.is_empty() {
                anyhow::bail!("no tarball given: hivemind image import FILE.tar [FILE.tar ...]");
            }
            for file in files {
                let images = runtime
                    .image_import(&file)
                    .await
                    .with_context(|| format!("cannot import {}", file.display()))?;
                for image in images {
                    println!("imported {} ({})", image.name, short_digest(&image.digest));
                }
            }
            Ok(())
        }
        ImageCommand::Ls => {
            let images: Vec<ImageRow> = runtime
                .image_list()
                .await?
                .into_iter()
                .map(|i| ImageRow {
                    name: i.name,
                    digest: i.digest,
                    size: i.size,
                })
                .collect();
            let rows = images
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        short_digest(&i.digest).to_string(),
                        format!("{:.1} MB", i.size as f64 / 1e6),
                    ]
                })
                .collect();
            print_list(global.output, &images, &["NAME", "DIGEST", "SIZE"], rows)
        }
    }
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}
