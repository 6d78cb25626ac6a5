//! Where the CLI finds the server and its token: flags/env first, then `~/.hivemind/config`
//! (`server = URL` and `token = T` lines), then the local data dir's `admin.token`, which is how
//! `hivemind up` on the same machine needs no setup at all.

use std::path::Path;

use anyhow::Context;
use hivemind_client::Client;

use crate::cli::GlobalArgs;

pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

pub(crate) fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    let file = home_config();
    let server = global
        .server
        .clone()
        .or_else(|| file_value(&file, "server"))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = match global.token.clone().or_else(|| file_value(&file, "token")) {
        Some(t) => t,
        None => read_admin_token(&global.data_dir).with_context(|| {
            format!(
                "no API token: pass --token or HIVEMIND_TOKEN, or run as a user that can read {}",
                global.data_dir.join("admin.token").display()
            )
        })?,
    };
    Ok(Client::new(server, token).with_namespace(global.namespace.clone()))
}

fn read_admin_token(data_dir: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(data_dir.join("admin.token"))?
        .trim()
        .to_string())
}

fn home_config() -> String {
    std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".hivemind/config"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

fn file_value(file: &str, key: &str) -> Option<String> {
    file.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_lines() {
        let file = "# comment\nserver = \"http://10.0.0.1:7070\"\ntoken=abc\n";
        assert_eq!(
            file_value(file, "server").as_deref(),
            Some("http://10.0.0.1:7070")
        );
        assert_eq!(file_value(file, "token").as_deref(), Some("abc"));
        assert_eq!(file_value(file, "namespace"), None);
    }
}
