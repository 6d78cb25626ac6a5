//! `image import|ls|pull|rm`: act on this machine's containerd directly, like
//! `k3s ctr images ...`, because an image lives on the node that imported or pulled it.
//! (`image login` is `registry login`.)

use std::collections::HashMap;

use anyhow::Context;
use hivemind_runtime::{ContainerRuntime, Containerd, PullProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
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
    if let ImageCommand::Login(login) = &args.command {
        return crate::cmd::registry::login(login).await;
    }
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
        ImageCommand::Pull { reference } => pull(&runtime, &reference).await,
        ImageCommand::Rm { references, force } => {
            for reference in references {
                let removed = runtime.image_remove(&reference, force).await.map_err(|e| {
                    if matches!(e, hivemind_runtime::RuntimeError::ImageInUse { .. }) {
                        anyhow::anyhow!("{e}: pass --force to remove it anyway")
                    } else {
                        anyhow::Error::new(e)
                    }
                })?;
                println!(
                    "removed {} ({})",
                    removed.name,
                    short_digest(&removed.digest)
                );
            }
            Ok(())
        }
        ImageCommand::Login(_) => unreachable!("handled before connecting"),
    }
}

/// Pulls with one progress bar per layer (bytes), then prints the digest.
async fn pull(runtime: &Containerd, reference: &str) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let bars = MultiProgress::new();
    let show = tokio::spawn(async move {
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .expect("template")
        .progress_chars("=> ");
        let mut layers: HashMap<String, ProgressBar> = HashMap::new();
        while let Some(event) = rx.recv().await {
            match event {
                PullProgress::Resolved { digest, layers: l } => {
                    let _ = bars.println(format!("resolved {}", digest));
                    for (layer, size) in l {
                        let bar = bars.add(ProgressBar::new(size));
                        bar.set_style(style.clone());
                        bar.set_prefix(short_digest(&layer).to_string());
                        layers.insert(layer, bar);
                    }
                }
                PullProgress::LayerProgress {
                    digest, received, ..
                } => {
                    if let Some(bar) = layers.get(&digest) {
                        bar.set_position(received);
                    }
                }
                PullProgress::LayerPresent { digest, .. } => {
                    if let Some(bar) = layers.get(&digest) {
                        bar.set_position(bar.length().unwrap_or(0));
                        bar.finish_with_message("already present");
                    }
                }
                PullProgress::LayerDownloaded { digest, .. } => {
                    if let Some(bar) = layers.get(&digest) {
                        bar.set_position(bar.length().unwrap_or(0));
                        bar.finish_with_message("done");
                    }
                }
                PullProgress::Done { .. } => {}
            }
        }
        for bar in layers.values() {
            bar.finish_and_clear();
        }
    });
    let pulled = runtime.image_pull(reference, Some(tx)).await;
    let _ = show.await;
    let image = pulled?;
    println!("{} {}", image.name, image.digest);
    Ok(())
}

/// Reads the password from stdin, checks it against the registry and stores it.
fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}
