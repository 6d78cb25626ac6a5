//! `hivemind`: the one binary. Parses flags, wires the crates into processes (`up`, `server`,
//! `agent`) and prints what the API returns. The only crate that uses `anyhow`.

mod cli;
mod cmd;
mod config;
mod output;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::LogDriver(args) = &cli.command {
        // Run by containerd's shim for every task: plain blocking I/O, no async runtime.
        return std::process::ExitCode::from(hivemind_logs::driver::run(&args.settings));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Up(args) => cmd::up::up(&global, args).await,
        Command::Server(args) => cmd::up::server(&global, args).await,
        Command::Agent(args) => cmd::up::agent(&global, args).await,
        Command::Down(args) => cmd::down::down(&global, args).await,
        Command::Deploy(args) => cmd::deploy::deploy(&global, args).await,
        Command::Apps => cmd::query::apps(&global).await,
        Command::Rm(args) => cmd::deploy::rm(&global, args).await,
        Command::Services(args) => cmd::query::services(&global, args).await,
        Command::Ps(args) => cmd::query::ps(&global, args).await,
        Command::Scale(args) => cmd::deploy::scale(&global, args).await,
        Command::Stop(args) => cmd::lifecycle::run_state(&global, args, true).await,
        Command::Start(args) => cmd::lifecycle::run_state(&global, args, false).await,
        Command::Nodes => cmd::query::nodes(&global).await,
        Command::Node(args) => cmd::token::node(&global, args).await,
        Command::Token(args) => cmd::token::token(&global, args).await,
        Command::Volume(args) => cmd::volume::volume(&global, args).await,
        Command::Secret(args) => {
            cmd::secret::run(&global, hivemind_types::secret::FileKind::Secret, args).await
        }
        Command::Config(args) => {
            cmd::secret::run(&global, hivemind_types::secret::FileKind::Config, args).await
        }
        Command::Image(args) => cmd::image::image(&global, args).await,
        Command::Registry(args) => cmd::registry::registry(args).await,
        Command::Logs(args) => cmd::logs::logs(&global, args).await,
        Command::Exec(args) => cmd::exec::exec(&global, args).await,
        Command::Events(args) => cmd::events::events(&global, args).await,
        // Handled in `main`, before the async runtime starts.
        Command::LogDriver(args) => {
            hivemind_logs::driver::run(&args.settings);
            Ok(())
        }
        Command::Completion { shell } => {
            cli::print_completions(shell);
            Ok(())
        }
    }
}
