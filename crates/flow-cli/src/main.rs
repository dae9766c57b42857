//! `docker-flow`: parses the invocation, runs the command it names, exits with its code.
//! Everything else lives in the `flow_cli` library and the adapter crates.

use std::process::ExitCode;

use clap::Parser;
use flow_cli::config::{self, Command};
use flow_cli::exit::Exit;

fn main() -> ExitCode {
    let cli = flow_cli::args::Cli::parse_from(flow_cli::args::config_word_first(
        std::env::args_os().collect(),
    ));
    if let Err(invalid) = flow_cli::diagnostics::init() {
        eprintln!("docker-flow: warning: {invalid}");
    }
    let command =
        match config::Context::from_process().and_then(|context| config::load(cli, &context)) {
            Ok(command) => command,
            Err(error) => {
                eprintln!("docker-flow: {error}");
                return Exit::BadInput.into();
            }
        };
    match command {
        Command::Completions(shell) => {
            flow_cli::manual::completions(shell, &mut std::io::stdout());
            return Exit::Success.into();
        }
        Command::Manual => {
            return match flow_cli::manual::man(&mut std::io::stdout()) {
                Ok(()) => Exit::Success.into(),
                Err(error) => {
                    eprintln!("docker-flow: cannot write the man page: {error}");
                    Exit::NothingChanged.into()
                }
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("docker-flow: cannot start the async runtime: {error}");
            return Exit::NothingChanged.into();
        }
    };
    let exit = runtime.block_on(async {
        match command {
            Command::Release(config) => flow_cli::release::run(*config).await,
            Command::ProxyServe(config) => flow_cli::serve::proxy(config).await,
            Command::Registrator(config) => flow_cli::serve::registrator(config).await,
            Command::Status(config) => flow_cli::status::run(*config).await,
            Command::ComposeConfig(request) => flow_cli::compose_config::run(&request),
            Command::Completions(_) | Command::Manual => Exit::Success,
        }
    });
    exit.into()
}
