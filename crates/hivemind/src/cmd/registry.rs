//! `registry login|logout`: credentials in Docker's config.json, where this node's pulls (and
//! `docker`, `skopeo`) find them.

use std::io::Read;

use anyhow::Context;
use hivemind_runtime::pull::{
    credentials_remove, credentials_store, docker_config_path, registry_login_check, Credentials,
};
use hivemind_runtime::RegistryConfig;

use crate::cli::{LoginArgs, RegistryArgs, RegistryCommand};

pub(crate) async fn registry(args: RegistryArgs) -> anyhow::Result<()> {
    match args.command {
        RegistryCommand::Login(login_args) => login(&login_args).await,
        RegistryCommand::Logout { registry } => {
            let path = config_path(RegistryConfig::from_env())?;
            if credentials_remove(&path, &registry)? {
                println!(
                    "removed the credentials for {registry} from {}",
                    path.display()
                );
            } else {
                println!("no credentials for {registry} in {}", path.display());
            }
            Ok(())
        }
    }
}

/// Reads the password from stdin, checks the credentials against the registry, stores them.
pub(crate) async fn login(args: &LoginArgs) -> anyhow::Result<()> {
    let (registry, username) = (&args.registry, &args.username);
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("no password on standard input: echo \"$PASSWORD\" | hivemind registry login {registry} -u {username} --password-stdin");
    }
    let credentials = Credentials {
        username: username.to_string(),
        password,
    };
    let config = RegistryConfig::from_env();
    registry_login_check(registry, &credentials, &config).await?;
    let path = config_path(config)?;
    credentials_store(&path, registry, &credentials)?;
    println!(
        "login succeeded: credentials for {registry} saved in {}",
        path.display()
    );
    Ok(())
}

fn config_path(config: RegistryConfig) -> anyhow::Result<std::path::PathBuf> {
    config
        .docker_config
        .or_else(docker_config_path)
        .context("neither DOCKER_CONFIG nor HOME is set: set one to say where config.json goes")
}
