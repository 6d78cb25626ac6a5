//! `secret create|ls|inspect|rm` and the same for `config`: cluster secrets and configs, which
//! Compose files name as `external`, and a look at the apps' own ones.
//!
//! A value is read from `-f FILE` or standard input (`-`), sent once, and never shown again:
//! the server answers with the name, size and a digest prefix only.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hivemind_types::secret::FileKind;

use crate::cli::GlobalArgs;
use crate::config::client;
use crate::output::{age, print_list};

#[derive(Args)]
pub(crate) struct FileArgs {
    #[command(subcommand)]
    pub(crate) command: FileCommand,
}

#[derive(Subcommand)]
pub(crate) enum FileCommand {
    /// Create a cluster one from a file (`-f FILE`) or standard input (`-`).
    Create {
        name: String,
        /// `-` reads the value from standard input.
        #[arg(value_name = "-")]
        stdin: Option<String>,
        /// The file holding the value (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// List the cluster's and those of the namespace's apps.
    Ls,
    /// Show one (never its value): size, digest prefix, age, the services that use it.
    Inspect {
        name: String,
        /// One of this app's own rather than a cluster one.
        #[arg(long)]
        app: Option<String>,
    },
    /// Remove one; refused while a service uses it.
    Rm {
        name: String,
        #[arg(long)]
        app: Option<String>,
    },
}

/// The value to create, from `-f FILE`, `-f -` or `-`.
fn read_value(
    kind: FileKind,
    stdin: Option<&str>,
    file: Option<&PathBuf>,
) -> anyhow::Result<Vec<u8>> {
    let from_stdin = || -> anyhow::Result<Vec<u8>> {
        let mut value = Vec::new();
        std::io::stdin()
            .read_to_end(&mut value)
            .context("cannot read standard input")?;
        Ok(value)
    };
    match (stdin, file) {
        (Some("-"), None) => from_stdin(),
        (None, Some(path)) if path.as_os_str() == "-" => from_stdin(),
        (None, Some(path)) => std::fs::read(path).with_context(|| {
            format!("cannot read {}: check the path given to -f", path.display())
        }),
        (Some(other), _) if other != "-" => bail!(
            "{other:?} is not `-`: give the value with -f FILE, or `-` to read standard input"
        ),
        (Some(_), Some(_)) => bail!("give the value once: -f FILE or `-`, not both"),
        _ => bail!(
            "no value: give it with -f FILE, or `-` to read standard input (`printf %s VALUE | hivemind {} create NAME -`)",
            kind.as_str()
        ),
    }
}

pub(crate) async fn run(global: &GlobalArgs, kind: FileKind, args: FileArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    match args.command {
        FileCommand::Create { name, stdin, file } => {
            let value = read_value(kind, stdin.as_deref(), file.as_ref())?;
            let created = client.create_file(kind, &name, &value).await?;
            println!(
                "{} {} created ({} bytes, digest {})",
                kind.as_str(),
                created.name,
                created.size,
                created.digest
            );
        }
        FileCommand::Ls => {
            let files = client.files(kind).await?;
            let rows = files
                .iter()
                .map(|f| {
                    vec![
                        f.name.clone(),
                        f.app.clone().unwrap_or_else(|| "(cluster)".to_string()),
                        f.size.to_string(),
                        f.digest.clone(),
                        f.users.len().to_string(),
                        age(f.created_at),
                    ]
                })
                .collect();
            print_list(
                global.output,
                &files,
                &["NAME", "APP", "SIZE", "DIGEST", "USERS", "AGE"],
                rows,
            )?;
        }
        FileCommand::Inspect { name, app } => {
            let f = client.file(kind, &name, app.as_deref()).await?;
            let users = if f.users.is_empty() {
                "-".to_string()
            } else {
                f.users.join(", ")
            };
            let row = vec![
                f.name.clone(),
                f.app.clone().unwrap_or_else(|| "(cluster)".to_string()),
                f.size.to_string(),
                f.digest.clone(),
                age(f.created_at),
                users,
            ];
            print_list(
                global.output,
                &f,
                &["NAME", "APP", "SIZE", "DIGEST", "AGE", "USED BY"],
                vec![row],
            )?;
        }
        FileCommand::Rm { name, app } => {
            let removed = client.delete_file(kind, &name, app.as_deref()).await?;
            println!("{} {} removed", kind.as_str(), removed.name);
        }
    }
    Ok(())
}

/// The values of a Compose file's `secrets` or `configs` that the CLI reads: `file:` relative
/// to the project directory `dir` (or absolute, or `~/...`), `environment:` from `env` (the
/// `.env` file and the process environment). Inline `content` and `external` ones are not sent.
pub(crate) fn compose_values(
    kind: FileKind,
    dir: &std::path::Path,
    env: &std::collections::BTreeMap<String, String>,
    defs: &std::collections::BTreeMap<String, hivemind_types::compose::FileDef>,
) -> anyhow::Result<hivemind_client::wire::FileValues> {
    use base64::Engine as _;
    use hivemind_types::compose::FileSource;
    let section = match kind {
        FileKind::Secret => "secrets",
        FileKind::Config => "configs",
    };
    let mut out = std::collections::BTreeMap::new();
    for (key, def) in defs {
        let value = match &def.source {
            FileSource::File(path) => {
                let path = match path.strip_prefix("~/") {
                    Some(rest) => std::env::var_os("HOME")
                        .map(|home| PathBuf::from(home).join(rest))
                        .unwrap_or_else(|| dir.join(path)),
                    None => dir.join(path),
                };
                std::fs::read(&path).with_context(|| {
                    format!(
                        "{section}.{key}: cannot read {}: the path of `file:` is relative to the Compose file",
                        path.display()
                    )
                })?
            }
            FileSource::Environment(var) => match env.get(var) {
                Some(value) => value.clone().into_bytes(),
                None => bail!(
                    "{section}.{key}: the variable {var} is not set: export it, or set it in the project's .env"
                ),
            },
            FileSource::Content(_) | FileSource::External => continue,
        };
        out.insert(
            key.clone(),
            base64::engine::general_purpose::STANDARD.encode(value),
        );
    }
    Ok(hivemind_client::wire::FileValues(out))
}
