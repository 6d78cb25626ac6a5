//! `exec`: a command run in a replica, through the server and the replica's node agent.

use std::io::Write;

use anyhow::Context;
use futures::StreamExt;
use hivemind_client::exec::ExecFrame;

use crate::cli::{ExecArgs, GlobalArgs};

pub(crate) async fn exec(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<()> {
    let client = crate::config::client(global)?;
    let mut frames = client
        .exec(&args.replica, args.command.clone())
        .await
        .with_context(|| {
            format!(
                "cannot run {:?} in {}",
                args.command.join(" "),
                args.replica
            )
        })?
        .boxed();
    while let Some(frame) = frames.next().await {
        match frame? {
            ExecFrame::Stdout(s) => {
                let mut o = std::io::stdout().lock();
                o.write_all(s.as_bytes())?;
                o.flush()?;
            }
            ExecFrame::Stderr(s) => {
                let mut e = std::io::stderr().lock();
                e.write_all(s.as_bytes())?;
                e.flush()?;
            }
            ExecFrame::Exit(code) => {
                std::io::stdout().flush()?;
                std::process::exit(code);
            }
            ExecFrame::Error(message) => anyhow::bail!(message),
        }
    }
    anyhow::bail!("the exec stream ended without an exit status (the server or agent went away)")
}
