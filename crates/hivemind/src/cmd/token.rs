//! `token create|ls|rm` and `node rm`: join tokens and node identities.
//!
//! A token's secret is printed once, by `create`, to standard output alone (so that
//! `T=$(hivemind token create --role node)` captures just the token); nothing else ever shows
//! or logs it.

use hivemind_client::wire::TokenCreateRequest;
use hivemind_types::TokenRole;

use crate::cli::{GlobalArgs, NodeArgs, NodeCommand, OutputFormat, TokenArgs, TokenCommand};
use crate::config::client;
use crate::output::{age, print_list};

pub(crate) async fn token(global: &GlobalArgs, args: TokenArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    match args.command {
        TokenCommand::Create { role: _, ttl } => {
            let created = client
                .create_token(&TokenCreateRequest {
                    role: TokenRole::Node,
                    ttl_seconds: Some(ttl.as_secs()).filter(|&s| s > 0),
                })
                .await?;
            match global.output {
                OutputFormat::Table => {
                    println!("{}", created.token);
                    let expiry = match created.expires_at {
                        Some(_) => format!("expires in {}", humantime::format_duration(ttl)),
                        None => "never expires".to_string(),
                    };
                    eprintln!(
                        "join token {} ({expiry}); shown only now. Join a node with \
                         `hivemind agent --server URL --token TOKEN`; revoke with \
                         `hivemind token rm {}`",
                        created.id, created.id
                    );
                }
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&created)?),
                OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(&created)?),
            }
            Ok(())
        }
        TokenCommand::Ls => {
            let tokens = client.tokens().await?;
            let rows = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.role.as_str().to_string(),
                        t.node.clone().unwrap_or_else(|| "-".to_string()),
                        expires(t.expires_at),
                        t.issued_by.clone(),
                        age(t.created_at),
                    ]
                })
                .collect();
            print_list(
                global.output,
                &tokens,
                &["ID", "ROLE", "NODE", "EXPIRES", "ISSUED BY", "AGE"],
                rows,
            )
        }
        TokenCommand::Rm { id } => {
            let revoked = client.delete_token(&id).await?;
            println!("revoked {} token {}", revoked.role.as_str(), revoked.id);
            Ok(())
        }
    }
}

pub(crate) async fn node(global: &GlobalArgs, args: NodeArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    match args.command {
        NodeCommand::Rm { name } => {
            client.delete_node(&name).await?;
            println!("removed node {name} and revoked its credential");
            Ok(())
        }
    }
}

/// `in 23h`, `expired`, or `never`.
fn expires(at: Option<u64>) -> String {
    let Some(at) = at else {
        return "never".to_string();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    if at <= now {
        "expired".to_string()
    } else {
        format!("in {}", crate::output::span(at - now))
    }
}
